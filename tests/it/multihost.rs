//! A cluster of hosts with their own addresses (network namespaces, `hosts.rs`): the server on the
//! bridge's host, real `ferrostack worker` processes on two others, the real llama.cpp server with
//! the seed's own template shape (`--host {{worker_ip}} --port {{port}}`). Spread puts one replica
//! on each host; the gateway reaches both where they listen; logs stream from a remote worker; a
//! cut link makes the worker and its instance unreachable and the gateway serves from the other
//! host; a restored link brings the same instance back without a restart. On SQLite and PostgreSQL.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::hosts::{self, Hosts};
use crate::models::wait_models_instances;
use crate::support::{DbKind, TestServer};
use crate::workers::{import_backend, llama, llama_yaml};

both_dbs!(two_hosts_serve_lose_a_link_and_get_it_back);

/// Starts `ferrostack worker` on host `i` (process runtime, 1 s heartbeats), with extra flags and
/// environment.
pub fn spawn_worker(hosts: &mut Hosts, i: usize, s: &TestServer, dir: &Path, extra: &[&str], env: &[(&str, &str)]) {
    let token = std::fs::read_to_string(s.dir.path().join("data/cluster_token")).expect("cluster token");
    let data = dir.join(format!("worker{i}"));
    let name = format!("host{i}");
    let mut args = vec![
        "worker",
        "--server-url",
        &s.base,
        "--token",
        token.trim(),
        "--data-dir",
        data.to_str().expect("path"),
        "--worker-name",
        &name,
        "--runtime",
        "process",
        "--port-range",
        "46200-46249",
        "--heartbeat-interval",
        "1",
    ];
    args.extend(extra);
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "info"));
    let log = dir.join(format!("worker{i}.log"));
    hosts.spawn(i, Path::new(env!("CARGO_BIN_EXE_ferrostack")), &args, &env, &log);
}

/// Waits until worker `name` satisfies `pred`; returns it.
pub async fn wait_worker_named(s: &TestServer, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) = s.get("/v2/workers?perPage=100").await;
        let found = list["items"].as_array().and_then(|items| items.iter().find(|w| w["name"] == name).cloned());
        if let Some(w) = found.filter(|w| pred(w)) {
            return w;
        }
        assert!(tokio::time::Instant::now() < deadline, "worker {name} never {what}: {list:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The engine key of an instance, derived as the worker and the gateway derive it.
fn engine_key(s: &TestServer, instance: &Value) -> String {
    let secret = std::fs::read_to_string(s.dir.path().join("data/server_secret")).expect("server secret");
    let token = ferrostack::server::auth::server_token(secret.trim(), instance["worker_id"].as_i64().expect("worker"));
    ferrostack::backends::render::engine_api_key(&token, instance["id"].as_i64().expect("id"))
}

/// Sum of the prompt tokens an engine has processed (llama-server `--metrics`), read directly.
async fn prompt_tokens(s: &TestServer, http: &reqwest::Client, instance: &Value) -> f64 {
    let url = format!("http://{}:{}/metrics", instance["worker_ip"].as_str().expect("ip"), instance["port"]);
    let res = http.get(url).bearer_auth(engine_key(s, instance)).send().await.expect("metrics");
    let text = res.text().await.expect("text");
    text.lines()
        .filter(|l| l.starts_with("llamacpp:prompt_tokens_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

async fn chat(http: &reqwest::Client, s: &TestServer, key: &str) -> StatusCode {
    // Each its own prompt: the default `prefix_aware` spreads new prompts over the instances (an
    // identical one would stay on the instance whose cache holds it).
    static SENT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = json!({"model": "smol", "max_tokens": 4,
                      "messages": [{"role": "user", "content": format!("Say hi ({n}).")}]});
    let res = http.post(s.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await;
    res.map(|r| r.status()).unwrap_or(StatusCode::BAD_GATEWAY)
}

async fn two_hosts_serve_lose_a_link_and_get_it_back(kind: DbKind) {
    let Some((server, gguf)) = llama() else { return };
    if !hosts::available() {
        return;
    }
    let mut hosts = Hosts::new(2);
    let s = TestServer::start_on(kind, &hosts.root_addr()).await;
    s.login_admin().await;
    // llama.cpp as seed 000 writes its templates: the engine listens on the worker's address.
    // With `{{api_key}}` (a custom backend opts in) the engine answers only the gateway.
    import_backend(&s, &llama_yaml(&server, "{{worker_ip}}", "-c 1024 -t 1 -np 1 --metrics --api-key {{api_key}}"))
        .await;
    let key = s.api_key(json!({"name": "multihost"})).await;
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..2 {
        spawn_worker(&mut hosts, i, &s, dir.path(), &["--startup-timeout", "180"], &[]);
    }
    // Each worker advertises its own host's address, found from its default route.
    for i in 0..2 {
        let w = wait_worker_named(&s, &format!("host{i}"), "ready", |w| w["state"] == "ready").await;
        assert_eq!(w["ip"], hosts.addr(i), "{w:#}");
        assert_eq!(w["ifname"], "eth0", "{w:#}");
    }

    let spec = json!({"name": "smol", "source": "local_path", "local_path": gguf, "backend": "llama-cpp-custom",
                      "replicas": 2, "placement_strategy": "spread"});
    let (status, m) = s.post("/v2/models", spec).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let model_id = m["id"].as_i64().expect("id");
    let both_running = |items: &[Value]| items.len() == 2 && items.iter().all(|i| i["state"] == "running");
    let instances = wait_models_instances(&s, model_id, "running on both hosts", both_running).await;
    let mut ips: Vec<String> = instances.iter().map(|i| i["worker_ip"].as_str().unwrap_or("").to_owned()).collect();
    ips.sort();
    assert_eq!(ips, [hosts.addr(0), hosts.addr(1)], "spread: one replica per host");
    for i in &instances {
        let command = i["command"].to_string();
        assert!(command.contains(&format!("\"--host\",\"{}\"", i["worker_ip"].as_str().unwrap_or(""))), "{command}");
    }

    // The gateway reaches both engines where they listen, once its routing has them (it follows
    // the commit that made them running; /v1/models lists only what can run).
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = http.get(s.url("/v1/models")).bearer_auth(&key).send().await.expect("models");
        if res.text().await.unwrap_or_default().contains("\"smol\"") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the gateway never listed the running deployment");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..6 {
        assert_eq!(chat(&http, &s, &key).await, StatusCode::OK);
    }
    for i in &instances {
        assert!(prompt_tokens(&s, &http, i).await > 0.0, "instance {} on {} served nothing", i["id"], i["worker_ip"]);
        // Called directly, without the key only the gateway holds, the engine refuses; the key
        // never shows in the API.
        let url = format!("http://{}:{}/v1/chat/completions", i["worker_ip"].as_str().expect("ip"), i["port"]);
        let body = json!({"model": "smol", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1});
        let res = http.post(&url).json(&body).send().await.expect("direct");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "the engine answered without its key");
        assert!(i["command"].to_string().contains("<engine-api-key>"), "{}", i["command"]);
        let (_, shown) = s.get(&format!("/v2/model-instances/{}", i["id"])).await;
        assert!(!shown.to_string().contains(&engine_key(&s, i)), "the engine key leaked: {shown:#}");
    }

    // Logs stream from the remote worker that runs it.
    let remote = instances.iter().find(|i| i["worker_ip"] == hosts.addr(1)).expect("instance on host1").clone();
    let (status, logs) = s.get(&format!("/v2/model-instances/{}/logs?tail=200", remote["id"])).await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    assert!(!logs.as_str().unwrap_or("").trim().is_empty(), "no log text from the remote worker");

    // Cut host1's link: after the grace period the worker and its instance are unreachable and
    // the gateway sends everything to host0.
    let pid = remote["pid"].clone();
    let restarts = remote["restart_count"].clone();
    hosts.set_link(1, false);
    let w = wait_worker_named(&s, "host1", "unreachable", |w| w["state"] == "unreachable").await;
    assert!(w["state_message"].as_str().unwrap_or("").contains("does not answer"), "{w:#}");
    wait_models_instances(&s, model_id, "unreachable on host1", |items| {
        items.iter().any(|i| i["id"] == remote["id"] && i["state"] == "unreachable")
    })
    .await;
    // The gateway's routing snapshot follows the commit; then no request may fail.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut failed = 0;
    for _ in 0..8 {
        if chat(&http, &s, &key).await != StatusCode::OK {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "requests failed after the cut was detected");

    // Restore it: the worker is ready and the same instance runs again, not restarted.
    hosts.set_link(1, true);
    wait_worker_named(&s, "host1", "ready again", |w| w["state"] == "ready").await;
    let back = wait_models_instances(&s, model_id, "running again on host1", |items| {
        items.iter().any(|i| i["id"] == remote["id"] && i["state"] == "running")
    })
    .await;
    let back = back.into_iter().find(|i| i["id"] == remote["id"]).expect("same instance");
    assert_eq!(back["pid"], pid, "the engine kept running: {back:#}");
    assert_eq!(back["restart_count"], restarts, "{back:#}");

    assert_eq!(s.delete(&format!("/v2/models/{model_id}")).await.0, StatusCode::OK);
    wait_models_instances(&s, model_id, "gone", |items| items.is_empty()).await;
}

/// A replica of the built-in vLLM backend spread over two hosts, with stand-ins for `ray` and
/// `vllm` (tests/fixtures/standins) that check their rendezvous arguments: the head listens on its
/// host's address, the follower on the other host joins it over the bridge. Once (SQLite): the
/// database adds nothing here that the test above does not cover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_replica_meets_across_hosts() {
    if !hosts::available() {
        return;
    }
    let mut hosts = Hosts::new(2);
    let s = TestServer::start_on(DbKind::Sqlite, &hosts.root_addr()).await;
    s.login_admin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let standins = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/standins");
    let path = format!("{}:{}", standins.display(), std::env::var("PATH").unwrap_or_default());
    for i in 0..2 {
        spawn_worker(&mut hosts, i, &s, dir.path(), &["--simulate-gpus", "1xL4-24GB"], &[("PATH", &path)]);
    }
    for i in 0..2 {
        wait_worker_named(&s, &format!("host{i}"), "ready", |w| w["state"] == "ready").await;
    }
    // 30 GiB of weights (a sparse file): more than either 24 GB GPU, less than both.
    let model = tempfile::NamedTempFile::new().expect("file");
    model.as_file().set_len(30 << 30).expect("size");
    let spec = json!({"name": "wide", "source": "local_path", "local_path": model.path(), "backend": "vLLM",
                      "distributed_inference_across_workers": true});
    let (status, m) = s.post("/v2/models", spec).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let model_id = m["id"].as_i64().expect("id");
    let running =
        |i: &Value| i["state"] == "running" && i["distributed_servers"]["subordinate_workers"][0]["state"] == "running";
    let items = wait_models_instances(&s, model_id, "running on both hosts", |items| items.iter().any(running)).await;
    let i = items.into_iter().find(|i| running(i)).expect("running");
    let sub = &i["distributed_servers"]["subordinate_workers"][0];
    assert_ne!(i["worker_ip"], sub["worker_ip"], "{i:#}");
    let command = i["command"].to_string();
    assert!(command.contains("--pipeline-parallel-size"), "{command}");
    // The follower's own log says it reached the head across the bridge.
    let main_ip = i["worker_ip"].as_str().expect("ip");
    let rendezvous = i["ports"][1].as_u64().expect("rendezvous port");
    let joined = format!("joined {main_ip}:{rendezvous} from {}", sub["worker_ip"].as_str().expect("ip"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let logs: String = walk_logs(dir.path());
        if logs.contains(&joined) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no {joined:?} in the workers' instance logs:\n{logs}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(s.delete(&format!("/v2/models/{model_id}")).await.0, StatusCode::OK);
}

/// Every instance log under the workers' data dirs, concatenated.
fn walk_logs(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.push_str(&walk_logs(&path));
        } else if path.extension().is_some_and(|e| e == "log")
            && path.components().any(|c| c.as_os_str() == "instances")
        {
            out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    out
}
