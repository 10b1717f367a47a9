//! Workers and the instance lifecycle: joining, heartbeats and grace, simulated GPUs, isolation,
//! and a real llama.cpp server through start, crash, backoff restart, worker restart and delete.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrostack::worker::agent::RunningWorker;
use ferrostack::worker::{RuntimeChoice, WorkerConfig, WorkerOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::support::{DbKind, TestServer};

both_dbs!(heartbeats_grace_reattach_and_simulated_gpus, tokens_and_isolation, status_reports_are_transitions);

/// A backend whose "server" is `sleep`: always healthy (no health path), needs no port.
pub const SLEEPER_YAML: &str = "backend_name: sleeper-custom
default_version: v1
default_run_command: \"-c 'echo serving {{model_name}} on {{port}}; exec sleep 300'\"
health_check_path:
version_configs:
  v1:
    image_name: busybox
    entrypoint: sh
    custom_framework: cpu
";

pub fn worker_options(name: &str, ports: (u16, u16)) -> WorkerOptions {
    WorkerOptions {
        worker_name: Some(name.into()),
        runtime: RuntimeChoice::Process,
        advertise_address: Some("127.0.0.1".into()),
        port_range: ports,
        heartbeat_interval: 1,
        startup_timeout: 60,
        ..Default::default()
    }
}

pub async fn start_worker(s: &TestServer, dir: &Path, opts: &WorkerOptions) -> RunningWorker {
    let token = std::fs::read_to_string(s.dir.path().join("data/cluster_token")).expect("cluster token");
    let cfg =
        WorkerConfig::new(s.base.clone(), Some(token.trim().to_string()), dir.to_path_buf(), opts).expect("options");
    ferrostack::worker::agent::start(cfg).await.expect("worker starts")
}

pub async fn import_backend(s: &TestServer, yaml: &str) {
    let (status, body) = s.post("/v2/inference-backends/from-yaml", json!({ "content": yaml })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Polls an instance until `pred` holds, or panics with its last state.
pub async fn wait_instance(s: &TestServer, id: i64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, i) = s.get(&format!("/v2/model-instances/{id}")).await;
        if pred(&i) {
            return i;
        }
        assert!(tokio::time::Instant::now() < deadline, "instance never became {what}: {i:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_worker(s: &TestServer, id: i64, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, w) = s.get(&format!("/v2/workers/{id}")).await;
        if w["state"] == state {
            return w;
        }
        assert!(tokio::time::Instant::now() < deadline, "worker never became {state}: {w:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn place(s: &TestServer, body: Value) -> i64 {
    let (status, i) = s.post("/v2/model-instances", body).await;
    assert_eq!(status, StatusCode::OK, "{i}");
    i["id"].as_i64().expect("id")
}

fn alive(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z")
}

async fn heartbeats_grace_reattach_and_simulated_gpus(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = worker_options("w1", (45000, 45099));
    opts.simulate_gpus = Some("2xH100-80GB".into());
    opts.leave_running = true;
    let worker = start_worker(&s, dir.path(), &opts).await;
    let wid = worker.worker_id;
    let w = wait_worker(&s, wid, "ready").await;
    // GPUStack's spelling, so GPUStack deployments' worker selectors match.
    assert_eq!(w["labels"]["os"], "linux");
    assert_eq!(w["labels"]["arch"], ferrostack_arch());

    let (_, gpus) = s.get("/v2/gpu-devices").await;
    let ids: Vec<&str> = gpus["items"].as_array().expect("items").iter().filter_map(|g| g["id"].as_str()).collect();
    assert_eq!(ids, ["w1:cuda:0", "w1:cuda:1"]);
    assert!(gpus["items"].as_array().expect("items").iter().all(|g| g["simulated"] == true));

    let id = place(
        &s,
        json!({"name": "nap", "model_name": "nap", "model_path": "/", "backend": "sleeper-custom", "worker_id": wid}),
    )
    .await;
    let running = wait_instance(&s, id, "running", |i| i["state"] == "running").await;
    let pid = running["pid"].as_i64().expect("pid");
    assert!(running["command"].to_string().contains("serving nap on"), "{running}");

    // The worker goes silent (its process "dies", leaving the instance running).
    worker.shutdown().await;
    wait_worker(&s, wid, "not_ready").await;
    wait_instance(&s, id, "unreachable", |i| i["state"] == "unreachable").await;
    assert!(alive(pid), "the workload outlived its worker");

    // It comes back: ready again, the instance reattached, not restarted.
    let worker = start_worker(&s, dir.path(), &opts).await;
    assert_eq!(worker.worker_id, wid, "rejoined as the same worker");
    wait_worker(&s, wid, "ready").await;
    let back = wait_instance(&s, id, "running again", |i| i["state"] == "running").await;
    assert_eq!(back["pid"], pid, "reattached, not restarted");
    assert_eq!(back["restart_count"], 0);
    let (_, list) = s.get(&format!("/v2/model-instances?worker_id={wid}")).await;
    assert_eq!(list["pagination"]["total"], 1, "not duplicated");

    // Deleting the instance stops its process.
    assert_eq!(s.delete(&format!("/v2/model-instances/{id}")).await.0, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while alive(pid) {
        assert!(tokio::time::Instant::now() < deadline, "process {pid} still runs after delete");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.shutdown().await;
}

async fn tokens_and_isolation(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let plain = reqwest::Client::new();
    let register = json!({"name": "intruder", "hostname": "h", "ip": "127.0.0.1", "worker_version": "0"});
    for bad in ["nonsense-token", "fs_abc_def", "fsw_1_nope"] {
        let res = plain.post(s.url("/v2/workers")).bearer_auth(bad).json(&register).send().await.expect("post");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }
    import_backend(&s, SLEEPER_YAML).await;
    let (da, db) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let a = start_worker(&s, da.path(), &worker_options("wa", (45100, 45149))).await;
    let b = start_worker(&s, db.path(), &worker_options("wb", (45150, 45199))).await;
    let on_a = place(
        &s,
        json!({"name": "on-a", "model_name": "x", "model_path": "/", "backend": "sleeper-custom", "worker_id": a.worker_id}),
    )
    .await;
    wait_instance(&s, on_a, "running", |i| i["state"] == "running").await;

    // Worker b's credential cannot touch a's instance, nor the user API.
    let cred: Value =
        serde_json::from_str(&std::fs::read_to_string(db.path().join("worker.json")).expect("identity")).expect("json");
    let cred = cred["credential"].as_str().expect("credential");
    let (_, inst) = s.get(&format!("/v2/model-instances/{on_a}")).await;
    let report = json!({"state": "error", "restart_count": 0, "version": inst["version"]});
    let res = plain
        .put(s.url(&format!("/v2/model-instances/{on_a}/status")))
        .bearer_auth(cred)
        .json(&report)
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = plain.get(s.url("/v2/users")).bearer_auth(cred).send().await.expect("get");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Its watch only shows its own instances.
    let res = plain.get(s.url("/v2/model-instances")).bearer_auth(cred).send().await.expect("get");
    let (_, list) = crate::support::read(res).await;
    assert_eq!(list["pagination"]["total"], 0, "{list}");
    // A user cannot report instance status either.
    let (status, _) = s.put(&format!("/v2/model-instances/{on_a}/status"), report).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A bad manual placement names the field.
    let (status, body) = s
        .post(
            "/v2/model-instances",
            json!({"name": "x", "model_name": "x", "model_path": "/", "backend": "b", "worker_id": 999}),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("worker_id")), "{body}");
    a.shutdown().await;
    b.shutdown().await;
}

/// A worker's status report is one transition of its instance: it sets what that transition sets
/// and keeps the rest. An earlier worker's body (every field, nulls included) still reads as the
/// transition its state names; a stale report is refused; a bad one names its field.
async fn status_reports_are_transitions(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let token = std::fs::read_to_string(s.dir.path().join("data/cluster_token")).expect("token");
    let plain = reqwest::Client::new();
    let register = json!({"name": "sim", "hostname": "sim", "ip": "127.0.0.1", "port": 1, "worker_version": "test"});
    let res = plain.post(s.url("/v2/workers")).bearer_auth(token.trim()).json(&register).send().await.expect("post");
    let (status, worker) = crate::support::read(res).await;
    assert_eq!(status, StatusCode::OK, "{worker}");
    let cred = worker["credential"].as_str().expect("credential").to_string();
    let id = place(
        &s,
        json!({"name": "i", "model_name": "x", "model_path": "/", "backend": "custom", "worker_id": worker["id"]}),
    )
    .await;
    let path = format!("/v2/model-instances/{id}/status");
    let put = async |body: Value| {
        let res = plain.put(s.url(&path)).bearer_auth(&cred).json(&body).send().await.expect("put");
        crate::support::read(res).await
    };
    let version = async || s.get(&format!("/v2/model-instances/{id}")).await.1["version"].clone();

    let starting = json!({"state": "starting", "version": version().await, "ports": [40000, 40001], "pid": 7,
                          "container_id": null, "command": ["engine", "--port", "40000"], "resolved_path": "/m"});
    let (status, i) = put(starting).await;
    assert_eq!(status, StatusCode::OK, "{i}");
    assert_eq!(
        (&i["state"], &i["port"], &i["ports"], &i["pid"]),
        (&json!("starting"), &json!(40000), &json!([40000, 40001]), &json!(7))
    );

    // What a worker sent before transitions: an adopted workload's running report (no command).
    let legacy = json!({"state": "running", "state_message": null, "port": 40000, "ports": [40000, 40001],
                        "pid": 7, "container_id": null, "command": null, "download_progress": null,
                        "downloaded_bytes": null, "resolved_path": null, "restart_count": 0,
                        "last_restart_time": null, "next_restart_time": null, "backoff_failures": null,
                        "version": version().await});
    let (status, i) = put(legacy.clone()).await;
    assert_eq!(status, StatusCode::OK, "{i}");
    assert_eq!(
        (&i["state"], &i["command"][0], &i["resolved_path"]),
        (&json!("running"), &json!("engine"), &json!("/m"))
    );
    let (status, e) = put(legacy).await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");

    let failed = json!({"state": "error", "version": version().await, "message": "boom", "restart_count": 0,
                        "next_restart_time": "2030-01-01T00:00:00Z", "backoff_failures": 1});
    let (status, i) = put(failed).await;
    assert_eq!(status, StatusCode::OK, "{i}");
    assert_eq!(
        (&i["state"], &i["state_message"], &i["pid"], &i["ports"]),
        (&json!("error"), &json!("boom"), &Value::Null, &json!([]))
    );
    assert_eq!(
        (&i["command"][0], &i["resolved_path"], &i["backoff_failures"]),
        (&json!("engine"), &json!("/m"), &json!(1))
    );

    let (status, e) = put(json!({"state": "running", "version": version().await, "ports": [1]})).await;
    assert_eq!((status, &e["field"]), (StatusCode::BAD_REQUEST, &json!("command")), "{e}");
    let (status, e) = put(json!({"state": "parked", "version": version().await, "restart_count": 0})).await;
    assert_eq!((status, &e["field"]), (StatusCode::BAD_REQUEST, &json!("state")), "{e}");
}

/// The tiny real model and llama.cpp launcher from `scripts/setup-llm.sh`, if set up.
pub fn llama() -> Option<(PathBuf, PathBuf)> {
    match (std::env::var("LLAMA_SERVER"), std::env::var("SMOLLM2_GGUF")) {
        (Ok(server), Ok(model)) => Some((server.into(), model.into())),
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "CI is set but LLAMA_SERVER/SMOLLM2_GGUF are not (scripts/test.sh sets them)"
            );
            eprintln!("skipped: LLAMA_SERVER/SMOLLM2_GGUF not set (eval \"$(scripts/setup-llm.sh)\")");
            None
        }
    }
}

pub fn llama_backend_yaml(server: &Path) -> String {
    llama_yaml(server, "127.0.0.1", "-c 2048 -t 2 -np 2")
}

/// The real llama.cpp server as a custom backend, listening on `host` (a placeholder allowed).
pub fn llama_yaml(server: &Path, host: &str, extra: &str) -> String {
    format!(
        "backend_name: llama-cpp-custom
default_version: cpu
default_run_command: \"-m {{{{model_path}}}} --host {host} --port {{{{port}}}} --alias {{{{model_name}}}} {extra}\"
health_check_path: /v1/models
parameter_format: space
version_configs:
  cpu:
    image_name: ghcr.io/ggml-org/llama.cpp:server
    entrypoint: {}
    custom_framework: cpu
",
        server.display()
    )
}

/// A worker stopped on purpose (Ctrl-C, no --leave-running) stops its instances and says so; the
/// next start launches them at once: no restart counted, no backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_is_not_a_crash() {
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = worker_options("stopper", (46320, 46329));
    let worker = start_worker(&s, dir.path(), &opts).await;
    let body = json!({"name": "nap", "model_name": "nap", "model_path": "/", "backend": "sleeper-custom",
                      "worker_id": worker.worker_id, "restart_on_error": true});
    let id = place(&s, body).await;
    let first = wait_instance(&s, id, "running", |i| i["state"] == "running").await;
    let pid = first["pid"].as_i64().expect("pid");
    worker.shutdown().await;
    let stopped = wait_instance(&s, id, "stopped with its worker", |i| i["state"] == "scheduled").await;
    assert!(stopped["state_message"].as_str().unwrap_or("").contains("stopped with its worker"), "{stopped:#}");
    assert!(!alive(pid), "the workload was stopped");
    let started = tokio::time::Instant::now();
    let worker = start_worker(&s, dir.path(), &opts).await;
    let again = wait_instance(&s, id, "running again", |i| i["state"] == "running").await;
    assert!(started.elapsed() < Duration::from_secs(8), "started at once, not after a backoff");
    assert_eq!(again["restart_count"], 0, "{again:#}");
    assert!(again["next_restart_time"].is_null(), "{again:#}");
    worker.shutdown().await;
}

/// Two workers on one host given the same `--port-range` never hand out the same port: each port is
/// held host-wide from the moment it is handed out. The sleeper never binds its port, so a bind test
/// alone would give both instances the range's first port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_host_with_one_port_range_both_run() {
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    let (dir_a, dir_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let a = start_worker(&s, dir_a.path(), &worker_options("left", (46520, 46529))).await;
    let b = start_worker(&s, dir_b.path(), &worker_options("right", (46520, 46529))).await;
    let mut ids = Vec::new();
    for (n, w) in [(1, &a), (2, &b)] {
        let body = json!({"name": format!("nap-{n}"), "model_name": "nap", "model_path": "/",
                          "backend": "sleeper-custom", "worker_id": w.worker_id});
        ids.push(place(&s, body).await);
    }
    let mut ports = Vec::new();
    for id in ids {
        let i = wait_instance(&s, id, "running", |i| i["state"] == "running").await;
        assert_eq!(i["restart_count"], 0, "{i:#}");
        ports.push(i["port"].as_u64().expect("port"));
    }
    assert_ne!(ports[0], ports[1], "both workers handed out port {}", ports[0]);
    a.shutdown().await;
    b.shutdown().await;
}

/// The worker's API listens on the address it advertises, not on every interface: a worker that
/// advertises 127.0.0.1 answers there and nowhere else on this machine (127.0.0.2 is this machine
/// too, and so is every other address it has); `--bind-address 0.0.0.0` opens it everywhere again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_api_listens_only_where_it_is_advertised() {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    async fn answers(ip: IpAddr, port: u16) -> bool {
        let connect = tokio::net::TcpStream::connect(SocketAddr::new(ip, port));
        matches!(tokio::time::timeout(Duration::from_secs(2), connect).await, Ok(Ok(_)))
    }
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let elsewhere: Vec<IpAddr> = std::iter::once(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .chain(
            ferrostack::worker::net::interfaces()
                .into_iter()
                .map(|i| i.ip)
                .filter(|ip| ip.is_ipv4() && *ip != loopback),
        )
        .collect();

    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("bound", (46330, 46339))).await;
    let port = worker.api_addr.port();
    assert_eq!(worker.api_addr.ip(), loopback, "listens on the advertised address");
    let (_, w) = s.get(&format!("/v2/workers/{}", worker.worker_id)).await;
    assert_eq!((w["ip"].as_str(), w["port"].as_u64()), (Some("127.0.0.1"), Some(u64::from(port))), "{w:#}");
    assert!(answers(loopback, port).await, "the advertised address answers");
    for ip in &elsewhere {
        assert!(!answers(*ip, port).await, "the worker API answers on {ip}:{port}, not only where it is advertised");
    }
    worker.shutdown().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = worker_options("everywhere", (46340, 46349));
    opts.bind_address = Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let worker = start_worker(&s, dir.path(), &opts).await;
    let port = worker.api_addr.port();
    assert!(worker.api_addr.ip().is_unspecified(), "{}", worker.api_addr);
    for ip in std::iter::once(&loopback).chain(&elsewhere) {
        assert!(answers(*ip, port).await, "--bind-address 0.0.0.0: {ip}:{port} does not answer");
    }
    worker.shutdown().await;
}

/// The suite's llama.cpp is as strict as the real llama-server (tools/llama-server parses argv with
/// llama.cpp's own flag list): a deployment with a flag it does not know fails with the engine's
/// own message instead of running with the typo ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_llama_flag_fails_the_deployment_with_the_engines_message() {
    let Some((server, model)) = llama() else { return };
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    import_backend(&s, &llama_backend_yaml(&server)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("strict", (46500, 46509))).await;
    let body = json!({"name": "typo", "source": "local_path", "local_path": model, "backend": "llama-cpp-custom",
                      "backend_parameters": ["--no-such-flag"], "replicas": 1});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let failed = loop {
        let (_, list) = s.get(&format!("/v2/model-instances?model_id={}", m["id"])).await;
        if let Some(i) = list["items"].as_array().and_then(|a| a.first()).filter(|i| i["state"] != "scheduled") {
            if i["state"] == "error" {
                break i.clone();
            }
            assert_ne!(i["state"], "running", "a deployment with --no-such-flag runs: {i:#}");
        }
        assert!(tokio::time::Instant::now() < deadline, "never failed: {list:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let message = failed["state_message"].as_str().unwrap_or("");
    assert!(message.contains("error: invalid argument: --no-such-flag"), "{failed:#}");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_llama_runs_crashes_restarts_and_survives_worker_restarts() {
    let Some((server, model)) = llama() else { return };
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    import_backend(&s, &llama_backend_yaml(&server)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = worker_options("llama-worker", (45200, 45299));
    let worker = start_worker(&s, dir.path(), &opts).await;
    let id = place(
        &s,
        json!({"name": "smol", "model_name": "smollm2", "model_path": model, "backend": "llama-cpp-custom",
               "worker_id": worker.worker_id, "restart_on_error": true}),
    )
    .await;
    let i = wait_instance(&s, id, "running", |i| i["state"] == "running").await;
    let port = i["port"].as_u64().expect("port");
    let chat = json!({"model": "smollm2", "max_tokens": 8, "temperature": 0,
                      "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]});
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&chat)
        .send()
        .await
        .expect("chat");
    let answer: Value = res.json().await.expect("json");
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap_or("").to_lowercase();
    assert!(text.contains("paris"), "{answer}");

    // Logs stream through the server: the tail now, and a follow that sees new lines.
    let (status, tail) = s.get(&format!("/v2/model-instances/{id}/logs?tail=50")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(tail.as_str().unwrap_or("").contains("loading model"), "{tail}");
    let mut follow =
        s.http.get(s.url(&format!("/v2/model-instances/{id}/logs?tail=0&follow=true"))).send().await.expect("follow");
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&chat)
        .send()
        .await
        .expect("chat");
    let chunk = tokio::time::timeout(Duration::from_secs(10), follow.chunk()).await.expect("a followed line arrives");
    assert!(!chunk.expect("chunk").unwrap_or_default().is_empty());
    drop(follow);

    // kill -9: error with the log, a restart scheduled after the backoff.
    let pid = i["pid"].as_i64().expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let failed = wait_instance(&s, id, "error", |i| i["state"] == "error").await;
    assert!(failed["state_message"].as_str().unwrap_or("").contains("signal 9"), "{failed}");
    assert_eq!(failed["restart_count"], 0);
    let next = failed["next_restart_time"].as_str().expect("next restart time").to_string();

    // Restart the worker mid-backoff: the count and the schedule survive.
    worker.shutdown().await;
    let worker = start_worker(&s, dir.path(), &opts).await;
    let (_, same) = s.get(&format!("/v2/model-instances/{id}")).await;
    assert_eq!(same["next_restart_time"], next.as_str());
    let restarted = wait_instance(&s, id, "restarted and running", |i| i["state"] == "running").await;
    assert_eq!(restarted["restart_count"], 1);
    let started_at =
        chrono::DateTime::parse_from_rfc3339(restarted["last_restart_time"].as_str().expect("time")).expect("t");
    let due = chrono::DateTime::parse_from_rfc3339(&next).expect("t");
    assert!(started_at >= due, "restarted at {started_at}, before the backoff ended at {due}");

    assert_eq!(s.delete(&format!("/v2/model-instances/{id}")).await.0, StatusCode::OK);
    let new_pid = restarted["pid"].as_i64().expect("pid");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while alive(new_pid) {
        assert!(tokio::time::Instant::now() < deadline, "llama still runs after delete");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_runtime_runs_the_llama_image_through_the_docker_api() {
    let required = std::env::var("FERROSTACK_REQUIRE_CONTAINERS").is_ok();
    let (Ok(host), Ok(image)) = (std::env::var("DOCKER_HOST"), std::env::var("FERROSTACK_LLAMA_IMAGE")) else {
        assert!(!required, "FERROSTACK_REQUIRE_CONTAINERS is set but DOCKER_HOST/FERROSTACK_LLAMA_IMAGE are not");
        eprintln!("skipped: no container engine (scripts/setup-podman.sh --llama-image sets one up)");
        return;
    };
    let Some((_, model)) = llama() else { return };
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    let yaml = format!(
        "backend_name: llama-image-custom
default_version: cpu
default_run_command: \"-m {{{{model_path}}}} --host 127.0.0.1 --port {{{{port}}}} --alias {{{{model_name}}}} -c 2048 -t 2\"
health_check_path: /v1/models
version_configs:
  cpu:
    image_name: {image}
    custom_framework: cpu
"
    );
    import_backend(&s, &yaml).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = worker_options("container-worker", (45500, 45549));
    opts.runtime = RuntimeChoice::Container;
    opts.docker_host = Some(host);
    let worker = start_worker(&s, dir.path(), &opts).await;
    let (_, w) = s.get(&format!("/v2/workers/{}", worker.worker_id)).await;
    assert_eq!(w["runtime"], "container");
    let id = place(
        &s,
        json!({"name": "boxed", "model_name": "smollm2", "model_path": model, "backend": "llama-image-custom",
               "worker_id": worker.worker_id}),
    )
    .await;
    let running = wait_instance(&s, id, "running in a container", |i| i["state"] == "running").await;
    assert!(running["container_id"].as_str().is_some_and(|c| !c.is_empty()), "{running}");
    let port = running["port"].as_u64().expect("port");
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&json!({"model": "smollm2", "max_tokens": 8, "temperature": 0,
                      "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]}))
        .send()
        .await
        .expect("chat");
    let answer: Value = res.json().await.expect("json");
    assert!(
        answer["choices"][0]["message"]["content"].as_str().unwrap_or("").to_lowercase().contains("paris"),
        "{answer}"
    );
    assert_eq!(s.delete(&format!("/v2/model-instances/{id}")).await.0, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://127.0.0.1:{port}/health")).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the container still serves after delete");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    worker.shutdown().await;
}

/// This machine's architecture as Go (and GPUStack's labels) name it.
fn ferrostack_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
