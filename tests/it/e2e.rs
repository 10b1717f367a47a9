//! The end-to-end journey with the real binary, on SQLite and PostgreSQL: `ferrostack start`
//! (server + embedded worker) and a second `ferrostack worker` process → import backend YAML →
//! deploy the real SmolLM2 model → running → chat through the gateway with an API key → scale →
//! kill a backend process and watch it restart → restart the server and find everything as it
//! was → delete.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::support::{DbKind, database_url};
use crate::workers::{llama, llama_backend_yaml};

both_dbs!(first_journey);

const PASSWORD: &str = "e2e-admin-password";

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn terminate(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn spawn(args: &[&str], log: &Path) -> Proc {
    let out = std::fs::File::create(log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_ferrostack"))
        .args(args)
        .env("RUST_LOG", "info,tower_http=warn")
        .env_remove("DOCKER_HOST")
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .expect("spawn ferrostack");
    Proc(child)
}

fn start_server(data: &Path, port: u16, db_url: &str) -> Proc {
    let port = port.to_string();
    let data_dir = data.join("data");
    let data_dir = data_dir.to_str().expect("path");
    let mut args = vec![
        "start",
        "--data-dir",
        data_dir,
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--bootstrap-password",
        PASSWORD,
        "--runtime",
        "process",
        "--worker-name",
        "main",
        "--advertise-address",
        "127.0.0.1",
        "--port-range",
        "45700-45749",
        "--leave-running",
        "--heartbeat-interval",
        "1",
    ];
    args.extend(["--database-url", db_url]);
    spawn(&args, &data.join(format!("server-{}.log", chrono::Utc::now().timestamp_millis())))
}

async fn eventually<T>(what: &str, secs: u64, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn first_journey(kind: DbKind) {
    let Some((server, gguf)) = llama() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let db_url = database_url(kind, dir.path()).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut main = Some(start_server(dir.path(), port, &db_url));
    let http = reqwest::Client::builder().cookie_store(true).build().expect("client");
    eventually("the server to answer", 30, async || http.get(format!("{base}/healthz")).send().await.ok()).await;

    // Log in, and make an API key for the rest.
    let key = admin_key(&http, &base, "e2e").await;
    let api = reqwest::Client::new();
    let get = async |path: &str| -> Value {
        api.get(format!("{base}{path}")).bearer_auth(&key).send().await.expect("get").json().await.expect("json")
    };

    // A second worker process joins with the cluster token.
    let token = std::fs::read_to_string(dir.path().join("data/cluster_token")).expect("token");
    let worker_dir = dir.path().join("worker2");
    let worker_dir = worker_dir.to_str().expect("path");
    let _second = spawn(
        &[
            "worker",
            "--server-url",
            &base,
            "--token",
            token.trim(),
            "--data-dir",
            worker_dir,
            "--worker-name",
            "second",
            "--runtime",
            "process",
            "--advertise-address",
            "127.0.0.1",
            "--port-range",
            "45750-45799",
            "--heartbeat-interval",
            "1",
        ],
        &dir.path().join("worker2.log"),
    );
    eventually("two ready workers", 60, async || {
        let w = get("/v2/workers").await;
        let ready = w["items"].as_array()?.iter().filter(|w| w["state"] == "ready").count();
        (ready == 2).then_some(())
    })
    .await;

    // Import the backend as YAML and deploy two replicas.
    let res = api
        .post(format!("{base}/v2/inference-backends/from-yaml"))
        .bearer_auth(&key)
        .json(&json!({"content": llama_backend_yaml(&server)}))
        .send()
        .await
        .expect("import");
    assert_eq!(res.status(), StatusCode::OK);
    let body = json!({"name": "smol", "source": "local_path", "local_path": gguf, "backend": "llama-cpp-custom", "replicas": 2});
    let res = api.post(format!("{base}/v2/models")).bearer_auth(&key).json(&body).send().await.expect("deploy");
    assert_eq!(res.status(), StatusCode::OK);
    let model: Value = res.json().await.expect("json");
    let id = model["id"].as_i64().expect("id");
    let instances = async |want: usize| -> Vec<Value> {
        eventually(&format!("{want} running"), 120, async || {
            let list = get(&format!("/v2/model-instances?model_id={id}")).await;
            let items = list["items"].as_array()?.clone();
            (items.len() == want && items.iter().all(|i| i["state"] == "running")).then_some(items)
        })
        .await
    };
    let two = instances(2).await;
    let mut workers: Vec<&str> = two.iter().filter_map(|i| i["worker_name"].as_str()).collect();
    workers.sort();
    assert_eq!(workers, ["main", "second"], "spread puts one replica on each worker");

    // Chat through the gateway (its routing view follows the database within seconds).
    let chat = async || -> String {
        let body = json!({"model": "smol", "max_tokens": 8, "temperature": 0,
                          "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]});
        let v: Value = eventually("a chat answer through the gateway", 30, async || {
            let res =
                api.post(format!("{base}/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.ok()?;
            if res.status() != StatusCode::OK {
                eprintln!("gateway answered {}: {}", res.status(), res.text().await.unwrap_or_default());
                return None;
            }
            res.json().await.ok()
        })
        .await;
        v["choices"][0]["message"]["content"].as_str().unwrap_or("").to_lowercase()
    };
    assert!(chat().await.contains("paris"));

    // Scale to one.
    let mut spec = get(&format!("/v2/models/{id}")).await;
    for k in ["id", "version", "created_at", "updated_at"] {
        spec.as_object_mut().expect("object").remove(k);
    }
    spec["replicas"] = json!(1);
    let res = api.put(format!("{base}/v2/models/{id}")).bearer_auth(&key).json(&spec).send().await.expect("scale");
    assert_eq!(res.status(), StatusCode::OK);
    let one = instances(1).await;

    // Kill its backend process: error, then a restart after the backoff.
    let pid = one[0]["pid"].as_i64().expect("pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let restarted = eventually("the restart", 60, async || {
        let list = get(&format!("/v2/model-instances?model_id={id}")).await;
        let i = list["items"].as_array()?.first()?.clone();
        (i["state"] == "running" && i["restart_count"] == 1).then_some(i)
    })
    .await;
    assert!(chat().await.contains("paris"));

    // Restart the server (and its embedded worker): everything is as it was.
    if let Some(p) = main.take() {
        p.terminate();
    }
    let _main = start_server(dir.path(), port, &db_url);
    eventually("the server to answer again", 30, async || api.get(format!("{base}/healthz")).send().await.ok()).await;
    let after = instances(1).await;
    assert_eq!(after[0]["id"], restarted["id"]);
    assert_eq!(after[0]["pid"], restarted["pid"], "reattached, not restarted");
    assert_eq!(get("/v2/models").await["items"][0]["replicas"], 1);
    eventually("both workers ready again", 60, async || {
        let w = get("/v2/workers").await;
        (w["items"].as_array()?.iter().filter(|w| w["state"] == "ready").count() == 2).then_some(())
    })
    .await;
    assert!(chat().await.contains("paris"));

    // Delete: the instances and their processes go.
    let res = api.delete(format!("{base}/v2/models/{id}")).bearer_auth(&key).send().await.expect("delete");
    assert_eq!(res.status(), StatusCode::OK);
    eventually("the backend process to stop", 30, async || {
        let gone = !Path::new(&format!("/proc/{}", after[0]["pid"].as_i64().unwrap_or(0))).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", after[0]["pid"])).unwrap_or_default().contains(") Z");
        gone.then_some(())
    })
    .await;
}

/// Ctrl-C while a chat is being answered: `ferrostack start` stops accepting, lets the answer
/// finish, and only then stops the embedded worker's engine (which it does stop: no
/// `--leave-running`), and exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_in_flight_finishes_when_the_server_stops() {
    use futures_util::StreamExt;
    let Some((server, gguf)) = llama() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let data_dir = dir.path().join("data");
    let port_arg = port.to_string();
    #[rustfmt::skip]
    let args = [
        "start", "--data-dir", data_dir.to_str().expect("path"), "--host", "127.0.0.1", "--port", &port_arg,
        "--bootstrap-password", PASSWORD, "--runtime", "process", "--worker-name", "main",
        "--advertise-address", "127.0.0.1", "--port-range", "45800-45849", "--heartbeat-interval", "1",
    ];
    let main = spawn(&args, &dir.path().join("server.log"));
    let http = reqwest::Client::builder().cookie_store(true).build().expect("client");
    eventually("the server to answer", 30, async || http.get(format!("{base}/healthz")).send().await.ok()).await;
    let key = admin_key(&http, &base, "stop").await;
    let api = reqwest::Client::new();
    let res = api
        .post(format!("{base}/v2/inference-backends/from-yaml"))
        .bearer_auth(&key)
        .json(&json!({"content": llama_backend_yaml(&server)}))
        .send()
        .await
        .expect("import");
    assert_eq!(res.status(), StatusCode::OK);
    let body = json!({"name": "smol", "source": "local_path", "local_path": gguf, "backend": "llama-cpp-custom", "replicas": 1});
    let res = api.post(format!("{base}/v2/models")).bearer_auth(&key).json(&body).send().await.expect("deploy");
    assert_eq!(res.status(), StatusCode::OK);
    let instance: Value = eventually("the instance to run", 120, async || {
        let list: Value =
            api.get(format!("{base}/v2/model-instances")).bearer_auth(&key).send().await.ok()?.json().await.ok()?;
        list["items"].as_array()?.first().filter(|i| i["state"] == "running").cloned()
    })
    .await;
    let engine = instance["pid"].as_i64().expect("pid");

    // A streamed answer of 48 tokens (short enough to end within the drain's grace on a loaded
    // 2-core machine): once its first tokens arrive, Ctrl-C the server.
    let body = json!({"model": "smol", "max_tokens": 48, "ignore_eos": true, "temperature": 0, "stream": true,
                      "messages": [{"role": "user", "content": "Count from one to one thousand in words."}]});
    let res = eventually("the gateway to route the chat", 30, async || {
        let res = api.post(format!("{base}/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.ok()?;
        (res.status() == StatusCode::OK).then_some(res)
    })
    .await;
    let mut stream = res.bytes_stream();
    let mut text = String::new();
    while !text.contains("\"content\"") {
        let chunk = stream.next().await.expect("a first chunk").expect("read");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let pid = nix::unistd::Pid::from_raw(main.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("ctrl-c");
    let rest = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("the answer is not cut off")));
        }
    })
    .await;
    let log = || std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    assert!(rest.is_ok(), "the answer hung after ctrl-c: {text}\n{}", log());
    assert!(text.contains("\"finish_reason\":\"") && text.contains("data: [DONE]"), "cut off: {text}\n{}", log());
    let tokens = text.matches("\"content\"").count();
    assert!(tokens > 24, "only {tokens} chunks: {text}");

    // The server exits by itself, cleanly, and its engine is gone with it.
    let mut main = main;
    let status = tokio::task::spawn_blocking(move || {
        let status = main.0.wait();
        (main, status)
    });
    let (_main, status) = tokio::time::timeout(Duration::from_secs(120), status).await.expect("exits").expect("join");
    assert!(status.expect("status").success(), "{}", log());
    let stat = std::fs::read_to_string(format!("/proc/{engine}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z"), "the engine {engine} still runs: {stat}");
}

/// Logs the cookie-carrying `http` client in as admin and makes an API key named `name`.
async fn admin_key(http: &reqwest::Client, base: &str, name: &str) -> String {
    let res = http.post(format!("{base}/auth/login")).form(&[("username", "admin"), ("password", PASSWORD)]).send();
    assert_eq!(res.await.expect("login").status(), StatusCode::OK);
    let key: Value = http
        .post(format!("{base}/v2/api-keys"))
        .json(&json!({"name": name}))
        .send()
        .await
        .expect("key")
        .json()
        .await
        .expect("json");
    key["value"].as_str().expect("value").to_string()
}
