//! Distributed inference across workers, for real on two in-process workers: a model too big for
//! either worker's simulated GPU is placed on both, the main worker starts its server with a
//! rendezvous port, the subordinate starts its part with rank and address, both claims count, and
//! a part that dies fails the instance, which restarts every part.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::models::wait_models_instances;
use crate::support::{DbKind, TestServer};
use crate::workers::{import_backend, start_worker, worker_options};

both_dbs!(a_replica_spans_two_workers_and_restarts_whole);

/// Prints where it stands (from the environment the worker sets) and sleeps.
const RANKED_YAML: &str = "backend_name: ranked-custom
default_version: v1
default_run_command: \"-c 'echo rank $FERROSTACK_NODE_RANK of $FERROSTACK_NNODES meets at $FERROSTACK_DIST_INIT_ADDR; exec sleep 300'\"
health_check_path:
version_configs:
  v1:
    image_name: busybox
    entrypoint: sh
    custom_framework: cuda
";

/// The first instance of the deployment that satisfies `pred`, once one does.
async fn wait_instance_where(s: &TestServer, model_id: i64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let items = wait_models_instances(s, model_id, what, |items| items.iter().any(&pred)).await;
    items.into_iter().find(|i| pred(i)).expect("matched")
}

async fn a_replica_spans_two_workers_and_restarts_whole(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    import_backend(&s, RANKED_YAML).await;
    let (dir_a, dir_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let mut opts_a = worker_options("node-a", (46000, 46049));
    opts_a.simulate_gpus = Some("1xL4-24GB".into());
    let mut opts_b = worker_options("node-b", (46050, 46099));
    opts_b.simulate_gpus = Some("1xL4-24GB".into());
    let a = start_worker(&s, dir_a.path(), &opts_a).await;
    let b = start_worker(&s, dir_b.path(), &opts_b).await;
    // 30 GiB of weights (a sparse file): more than either 24 GB GPU, less than both.
    let model = tempfile::NamedTempFile::new().expect("file");
    model.as_file().set_len(30 << 30).expect("size");
    let spec = json!({"name": "wide", "source": "local_path", "local_path": model.path(), "backend": "ranked-custom",
                      "restart_on_error": true});

    // Without distributed inference it cannot go anywhere, and says so.
    let (status, m) = s.post("/v2/models", spec.clone()).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let pending = wait_instance_where(&s, id, "explained", |i| {
        i["state_message"].as_str().is_some_and(|m| m.contains("distributed inference is off"))
    })
    .await;
    assert_eq!(pending["state"], "pending");
    let (status, _) = s.delete(&format!("/v2/models/{id}")).await;
    assert_eq!(status, StatusCode::OK);

    let mut spec = spec;
    spec["distributed_inference_across_workers"] = json!(true);
    let (status, m) = s.post("/v2/models", spec.clone()).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let running =
        |i: &Value| i["state"] == "running" && i["distributed_servers"]["subordinate_workers"][0]["state"] == "running";
    let i = wait_instance_where(&s, id, "running on both workers", running).await;
    let main_worker = i["worker_id"].as_i64().expect("worker_id");
    let sub = &i["distributed_servers"]["subordinate_workers"][0];
    let sub_worker = sub["worker_id"].as_i64().expect("subordinate worker_id");
    let mut both = [main_worker, sub_worker];
    both.sort_unstable();
    let mut want = [a.worker_id, b.worker_id];
    want.sort_unstable();
    assert_eq!(both, want, "{i:#}");
    // Each worker's GPU carries its share of the claim.
    let main_claim = i["computed_resource_claim"]["vram"]["0"].as_u64().expect("main claim");
    let sub_claim = sub["computed_resource_claim"]["vram"]["0"].as_u64().expect("subordinate claim");
    assert!(main_claim + sub_claim > 30 << 30, "{i:#}");
    // The main server holds the HTTP and the rendezvous port; both parts know where to meet.
    let ports: Vec<u64> = i["ports"].as_array().expect("ports").iter().filter_map(Value::as_u64).collect();
    assert_eq!(ports.len(), 2, "{i:#}");
    assert_eq!(Some(ports[0]), i["port"].as_u64());
    let rendezvous = format!("127.0.0.1:{}", ports[1]);
    let main_line = format!("rank 0 of 2 meets at {rendezvous}");
    let mut logs = String::new();
    for _ in 0..100 {
        let (_, got) = s.get(&format!("/v2/model-instances/{}/logs?tail=20", i["id"])).await;
        logs = got.as_str().unwrap_or_default().to_string();
        if logs.contains(&main_line) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logs.contains(&main_line), "main log: {logs}");
    let follower_log = wait_for_file_text(if sub_worker == a.worker_id { dir_a.path() } else { dir_b.path() }).await;
    assert!(follower_log.contains(&format!("rank 1 of 2 meets at {rendezvous}")), "part log: {follower_log}");
    assert!(sub["command"].as_array().is_some_and(|c| !c.is_empty()), "{sub}");

    // Each worker writes only its own part: the main worker cannot report the subordinate's
    // part, and the subordinate cannot report the instance.
    let credential = |dir: &std::path::Path| -> String {
        let identity: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("worker.json")).expect("identity")).expect("json");
        identity["credential"].as_str().expect("credential").to_string()
    };
    let (main_dir, sub_dir) = if main_worker == a.worker_id { (&dir_a, &dir_b) } else { (&dir_b, &dir_a) };
    let plain = reqwest::Client::new();
    let attempts = [
        (credential(main_dir.path()), "subordinate-status", json!({"restart_count": 0, "state": "error"})),
        (credential(sub_dir.path()), "status", json!({"state": "error", "restart_count": 0, "version": i["version"]})),
    ];
    for (cred, what, body) in attempts {
        let url = s.url(&format!("/v2/model-instances/{}/{what}", i["id"]));
        let res = plain.put(url).bearer_auth(cred).json(&body).send().await.expect("put");
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{what}");
    }

    // The subordinate's claim counts: a 10 GiB model no longer fits on either GPU.
    let small = tempfile::NamedTempFile::new().expect("file");
    small.as_file().set_len(10 << 30).expect("size");
    let body = json!({"name": "small", "source": "local_path", "local_path": small.path(), "backend": "ranked-custom"});
    let (status, m2) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m2}");
    let small_id = m2["id"].as_i64().expect("id");
    let left = wait_instance_where(&s, small_id, "explained", |i| {
        i["state_message"].as_str().is_some_and(|m| m.contains("No suitable workers"))
    })
    .await;
    assert_eq!(left["state"], "pending", "{left:#}");
    assert_eq!(s.delete(&format!("/v2/models/{small_id}")).await.0, StatusCode::OK);

    // The part dies: the instance fails, restarts, and both parts come back.
    let pid = sub["pid"].as_i64().expect("part pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let failed = wait_instance_where(&s, id, "failed by its part", |i| i["state"] == "error").await;
    assert!(failed["state_message"].as_str().unwrap_or("").contains("subordinate worker"), "{failed:#}");
    let again = wait_instance_where(&s, id, "running again", |i| running(i) && i["restart_count"] == 1).await;
    assert_ne!(again["distributed_servers"]["subordinate_workers"][0]["pid"].as_i64(), Some(i64::from(pid)));

    // Deleting the deployment stops both parts.
    let (status, _) = s.delete(&format!("/v2/models/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let part_pid = nix::unistd::Pid::from_raw(
        again["distributed_servers"]["subordinate_workers"][0]["pid"].as_i64().expect("pid") as i32,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while nix::sys::signal::kill(part_pid, None).is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the part outlived its deployment");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A worker that leaves takes the distributed instances it holds a part of with it; the
    // controller replaces them, and the replacement says why it cannot be placed now.
    let (status, m) = s.post("/v2/models", spec).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let i = wait_instance_where(&s, id, "running on both workers again", running).await;
    let sub_worker = i["distributed_servers"]["subordinate_workers"][0]["worker_id"].as_i64().expect("sub");
    let (status, _) = s.delete(&format!("/v2/workers/{sub_worker}")).await;
    assert_eq!(status, StatusCode::OK);
    let replaced = wait_instance_where(&s, id, "replaced and explained", |r| {
        r["id"] != i["id"] && r["state_message"].as_str().is_some_and(|m| m.contains("No suitable workers"))
    })
    .await;
    assert_eq!(replaced["state"], "pending", "{replaced:#}");
    a.shutdown().await;
    b.shutdown().await;
}

/// The first non-empty instance log under a worker's data dir.
async fn wait_for_file_text(dir: &std::path::Path) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut found = String::new();
        for entry in walk(dir) {
            if entry.extension().is_some_and(|e| e == "log") {
                found.push_str(&std::fs::read_to_string(&entry).unwrap_or_default());
            }
        }
        if !found.is_empty() {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "no log under {}", dir.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
