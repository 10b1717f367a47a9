//! The control plane's cost per worker request does not grow with the cluster: database calls
//! made for one heartbeat and one status report (and by whatever they wake) are counted, not
//! timed, with a few workers and with many, each holding the instance watch a real worker holds.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::support::{DbKind, TestServer};

/// A worker's registration body; `used` is the memory figure that moves between reports.
fn status(used: u64) -> Value {
    json!({"cpu": {"total": 8, "utilization_rate": 1.0},
           "memory": {"total": 64u64 << 30, "used": used, "utilization_rate": 3.0},
           "os": {"name": "Debian GNU/Linux", "version": "12", "kernel": "6.1", "arch": "x86_64"},
           "gpu_devices": [{"index": 0, "name": "H100", "vendor": "nvidia", "type": "cuda",
                            "memory_total": 80u64 << 30, "memory_used": 0, "memory_utilization_rate": 0.0,
                            "simulated": true}]})
}

struct SimWorker {
    id: i64,
    credential: String,
    /// The open instance watch (kept open while measuring, as a real worker keeps it).
    _watch: reqwest::Response,
}

/// Registers `count` more workers named `prefix-N`, each opening its instance watch.
async fn join(s: &TestServer, token: &str, prefix: &str, count: usize) -> Vec<SimWorker> {
    let plain = reqwest::Client::new();
    let mut workers = Vec::new();
    for i in 0..count {
        let body = json!({"name": format!("{prefix}-{i}"), "hostname": "sim", "ip": "127.0.0.1", "port": 1,
                          "worker_version": "test", "status": status(1 << 30)});
        let res = plain.post(s.url("/v2/workers")).bearer_auth(token).json(&body).send().await.expect("register");
        assert_eq!(res.status(), StatusCode::OK);
        let registered: Value = res.json().await.expect("json");
        let credential = registered["credential"].as_str().expect("credential").to_string();
        let watch =
            plain.get(s.url("/v2/model-instances?watch=true")).bearer_auth(&credential).send().await.expect("watch");
        assert_eq!(watch.status(), StatusCode::OK);
        workers.push(SimWorker { id: registered["id"].as_i64().expect("id"), credential, _watch: watch });
    }
    workers
}

/// The fewest database calls one request (and what it woke, within 300 ms) cost over a few tries:
/// the minimum leaves out the background loops' own ticks.
async fn calls_for(s: &TestServer, mut request: impl AsyncFnMut(u64) -> StatusCode) -> u64 {
    let mut fewest = u64::MAX;
    for round in 0..5 {
        let before = s.db().calls();
        let status = request(round).await;
        assert!(status.is_success(), "{status}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        fewest = fewest.min(s.db().calls() - before);
    }
    fewest
}

/// (heartbeat, steady status report, status report with a new GPU) calls for worker `w`.
async fn costs(s: &TestServer, w: &SimWorker) -> (u64, u64, u64) {
    let plain = reqwest::Client::new();
    let beat = calls_for(s, async |_| {
        let url = s.url(&format!("/v2/workers/{}/heartbeat", w.id));
        plain.post(url).bearer_auth(&w.credential).send().await.expect("heartbeat").status()
    })
    .await;
    let steady = calls_for(s, async |round| {
        let url = s.url(&format!("/v2/workers/{}/status", w.id));
        let body = json!({"status": status((1 << 30) + round * 4096)});
        plain.put(url).bearer_auth(&w.credential).json(&body).send().await.expect("status").status()
    })
    .await;
    let changed = calls_for(s, async |round| {
        // A status whose stored part changes each time: a GPU's total memory.
        let mut body = status(1 << 30);
        body["gpu_devices"][0]["memory_total"] = json!((80u64 << 30) + round + 1 + w.id as u64 * 100);
        let url = s.url(&format!("/v2/workers/{}/status", w.id));
        plain.put(url).bearer_auth(&w.credential).json(&json!({"status": body})).send().await.expect("status").status()
    })
    .await;
    (beat, steady, changed)
}

async fn worker_requests_cost_the_same_at_any_cluster_size(kind: DbKind) {
    let s = TestServer::start(kind).await;
    let token = std::fs::read_to_string(s.dir.path().join("data/cluster_token")).expect("token").trim().to_string();

    let few = join(&s, &token, "few", 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let small = costs(&s, &few[0]).await;
    let many = join(&s, &token, "many", 60).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let large = costs(&s, &many[59]).await;
    assert_eq!(small, large, "database calls (heartbeat, steady status, changed status) with 3 and with 63 workers");
    let (beat, steady, changed) = large;
    eprintln!("database calls: heartbeat {beat}, steady status {steady}, changed status {changed}");
    assert!(beat <= 2, "a heartbeat costs {beat} database calls");
    assert!(steady <= 2, "a status report that moves only utilisation costs {steady} database calls");
    // A stored change is written and wakes the loops that follow workers (controller, scheduler,
    // gateway routes), each reading what it needs once: more calls, but as many at 63 as at 3.
    assert!(changed > steady, "a changed status is written ({changed} calls, steady {steady})");
}

both_dbs!(worker_requests_cost_the_same_at_any_cluster_size);
