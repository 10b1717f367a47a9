//! Row 4 of issue 22 for real: the test's own PostgreSQL cluster (`scripts/pg-cluster.sh`) is
//! stopped for 15 s under a server with a real llama.cpp instance while a client chats through the
//! gateway with a key it has seen: no chat fails, `/readyz` and the API answer 503 with
//! `Retry-After` at once; once PostgreSQL is back the server is ready, writes land, the same
//! instance still runs (same pid, no restart) and every chat's usage is written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{TestServer, read};
use crate::workers::{import_backend, llama, llama_backend_yaml, start_worker, worker_options};

/// How long PostgreSQL stays stopped.
const OUTAGE: Duration = Duration::from_secs(15);

/// A throwaway cluster made by `scripts/pg-cluster.sh`, removed when dropped.
struct Cluster {
    dir: PathBuf,
    url: String,
}

impl Cluster {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-cluster.sh")
    }

    /// Runs `pg-cluster.sh <cmd> <dir>`; its stdout.
    async fn run(cmd: &str, dir: &Path) -> String {
        let out = tokio::process::Command::new(Self::script()).arg(cmd).arg(dir).output().await.expect("pg-cluster.sh");
        assert!(out.status.success(), "pg-cluster.sh {cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    async fn start() -> Cluster {
        // Under /tmp itself: the `postgres` user must reach it (a tempdir is root's, mode 700).
        let dir = std::env::temp_dir().join(format!("ferrostack-pg-restart-{}", uuid::Uuid::new_v4().simple()));
        let url = Self::run("start", &dir).await;
        Cluster { dir, url }
    }

    async fn pause(&self) {
        Self::run("pause", &self.dir).await;
    }

    async fn resume(&self) {
        assert_eq!(Self::run("resume", &self.dir).await, self.url, "resumed on the same port");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::script()).arg("stop").arg(&self.dir).output();
    }
}

/// Whether PostgreSQL's binaries are here; under CI the script installs them (or fails the test).
fn postgres_binaries() -> bool {
    let bin = std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    if Path::new(&bin).join("pg_ctl").exists() || std::env::var("CI").is_ok() {
        return true;
    }
    eprintln!("skipped: no PostgreSQL binaries in {bin} (apt-get install postgresql-15, or set PG_BIN)");
    false
}

/// Chats sent one after another until `stop`, counted.
#[derive(Default)]
struct Load {
    ok: AtomicU32,
    /// When each failed (for the report: before, during or after the outage) and how.
    failed: Mutex<Vec<(Instant, String)>>,
    /// When each chat was sent and how long it took.
    took: Mutex<Vec<(Instant, Duration)>>,
}

fn chat_load(base: String, key: String, load: Arc<Load>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        while !stop.load(Ordering::Relaxed) {
            let body = json!({"model": "smol", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]});
            let asked = Instant::now();
            let sent = http.post(format!("{base}/v1/chat/completions")).bearer_auth(&key).json(&body).send().await;
            let failure = match sent {
                Ok(res) if res.status() == StatusCode::OK => None,
                Ok(res) => Some(format!("{}: {}", res.status(), res.text().await.unwrap_or_default())),
                Err(e) => Some(e.to_string()),
            };
            load.took.lock().expect("lock").push((asked, asked.elapsed()));
            match failure {
                None => _ = load.ok.fetch_add(1, Ordering::Relaxed),
                Some(f) => load.failed.lock().expect("lock").push((Instant::now(), f)),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Requests written for `key_id` so far.
async fn requests_of(s: &TestServer, key_id: i64) -> i64 {
    let (status, usage) = s.get(&format!("/v2/usage?api_key_id={key_id}")).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    usage["items"].as_array().into_iter().flatten().filter_map(|r| r["request_count"].as_i64()).sum()
}

/// Polls `what` every 100 ms until it holds; how long it took (panics past `limit`).
async fn until<F: AsyncFn() -> bool>(what: &str, limit: Duration, f: F) -> Duration {
    let since = Instant::now();
    while !f().await {
        assert!(since.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_15_s_serving_goes_on_and_everything_recovers() {
    let Some((llama_server, gguf)) = llama() else { return };
    if !postgres_binaries() {
        return;
    }
    let cluster = Cluster::start().await;
    let mut s = TestServer::start_with(tempfile::tempdir().expect("tempdir"), cluster.url.clone()).await;
    s.login_admin().await;
    import_backend(&s, &llama_backend_yaml(&llama_server)).await;
    let wdir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, wdir.path(), &worker_options("pg-restart", (47870, 47879))).await;
    let body = json!({"name": "smol", "source": "local_path", "local_path": gguf, "backend": "llama-cpp-custom"});
    let (status, model) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{model}");
    let instance = |s: &TestServer| {
        let path = format!("/v2/model-instances?model_id={}", model["id"]);
        let req = s.http.get(s.url(&path));
        async move {
            let (_, list) = read(req.send().await.expect("instances")).await;
            list["items"].as_array().cloned().unwrap_or_default()
        }
    };
    let running = async || instance(&s).await.iter().any(|i| i["state"] == "running");
    until("the instance runs", Duration::from_secs(90), running).await;
    let before = instance(&s).await;
    assert_eq!(before.len(), 1, "{before:#?}");
    let (status, created) = s.post("/v2/api-keys", json!({"name": "chatter", "scope": ["inference"]})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let (key, key_id) = (created["value"].as_str().expect("value").to_owned(), created["id"].as_i64().expect("id"));

    // The gateway routes the instance (its snapshot follows the database within moments) and
    // the key is seen: one chat answered.
    let chat = json!({"model": "smol", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]});
    let slow = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    until("a first chat (the key seen)", Duration::from_secs(30), async || {
        let res = slow.post(s.url("/v1/chat/completions")).bearer_auth(&key).json(&chat).send().await;
        res.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let chats = chat_load(s.base.clone(), key.clone(), load.clone(), stop.clone());
    until("the load's first chat", Duration::from_secs(30), async || load.ok.load(Ordering::Relaxed) > 0).await;

    cluster.pause().await;
    let paused = Instant::now();
    let ok_at_pause = load.ok.load(Ordering::Relaxed);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let readyz_503 = until("/readyz 503 without PostgreSQL", Duration::from_secs(10), async || {
        let res = http.get(s.url("/readyz")).send().await.expect("/readyz answers");
        res.status() == StatusCode::SERVICE_UNAVAILABLE && res.headers().contains_key("retry-after")
    })
    .await;
    let asked = Instant::now();
    let res = s.http.get(s.url("/v2/workers")).send().await.expect("/v2 answers");
    let v2_503 = asked.elapsed();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"), "{:?}", res.headers());
    assert!(v2_503 < Duration::from_secs(5), "the API took {v2_503:?} to refuse");
    tokio::time::sleep(OUTAGE.saturating_sub(paused.elapsed())).await;

    cluster.resume().await;
    let resumed = Instant::now();
    let ok_during = load.ok.load(Ordering::Relaxed) - ok_at_pause;
    let ready = until("/readyz 200 again", Duration::from_secs(30), async || {
        http.get(s.url("/readyz")).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    // A write lands and is read back (the gateway authenticates the new key from the database).
    let after_key = Mutex::new(String::new());
    let wrote = until("a write after the restart", Duration::from_secs(30), async || {
        let (status, created) = s.post("/v2/api-keys", json!({"name": "after", "scope": ["inference"]})).await;
        *after_key.lock().expect("lock") = created["value"].as_str().unwrap_or_default().to_owned();
        status == StatusCode::OK
    })
    .await;
    let after_key = after_key.into_inner().expect("lock");
    // A generous timeout: the engine shares two cores with the rest of the suite.
    let asked = Instant::now();
    let res = slow.post(s.url("/v1/chat/completions")).bearer_auth(&after_key).json(&chat).send().await;
    let (status, answer) = read(res.expect("a chat with the new key")).await;
    let new_key_chat = asked.elapsed();
    assert_eq!(status, StatusCode::OK, "the key written after the restart: {answer}");
    let api_back = resumed.elapsed();
    let (status, keys) = s.get("/v2/api-keys").await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    assert!(keys.to_string().contains("\"after\""), "{keys}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    chats.await.expect("load");
    let restarted = resumed.duration_since(paused).as_secs_f64();
    let offset = |at: Instant| match at.checked_duration_since(paused) {
        Some(d) => d.as_secs_f64(),
        None => -paused.duration_since(at).as_secs_f64(),
    };
    let failed: Vec<String> = load
        .failed
        .lock()
        .expect("lock")
        .iter()
        .map(|(at, f)| format!("{:.2} s after the stop (started again after {restarted:.2} s): {f}", offset(*at)))
        .collect();
    let total = load.ok.load(Ordering::Relaxed);
    assert!(failed.is_empty(), "{} of {} chats failed: {failed:#?}", failed.len(), total as usize + failed.len());
    assert!(ok_during > 0, "no chat answered while PostgreSQL was stopped");

    // The deployment and its instance are intact: same instance, same engine, never restarted.
    let after = instance(&s).await;
    assert_eq!(after.len(), 1, "{after:#?}");
    for field in ["id", "pid", "state", "worker_id"] {
        assert_eq!(after[0][field], before[0][field], "{field}: {:#}", after[0]);
    }
    assert_eq!(after[0]["restart_count"], 0, "{:#}", after[0]);
    let (status, m) = s.get(&format!("/v2/models/{}", model["id"])).await;
    assert_eq!((status, &m["replicas"]), (StatusCode::OK, &model["replicas"]), "{m}");
    let worker_ready = async || s.get(&format!("/v2/workers/{}", worker.worker_id)).await.1["state"] == "ready";
    until("the worker ready", Duration::from_secs(15), worker_ready).await;
    // Usage kept in memory meanwhile is written: every chat is counted, once.
    let total = total + 1; // and the first chat
    let slowest = |from: Instant, to: Instant| {
        let took = load.took.lock().expect("lock");
        took.iter().filter(|(at, _)| *at >= from && *at < to).map(|(_, d)| *d).max().unwrap_or_default()
    };
    let (slowest_during, slowest_after) = (slowest(paused, resumed), slowest(resumed, Instant::now()));
    let counted = async || requests_of(&s, key_id).await >= i64::from(total);
    until("the outage's usage written", Duration::from_secs(15), counted).await;
    assert_eq!(requests_of(&s, key_id).await, i64::from(total), "usage counted twice");
    eprintln!(
        "PostgreSQL stopped {OUTAGE:?}: /readyz 503 after {readyz_503:?}, a /v2 call refused in {v2_503:?}; \
         {ok_during} chats answered during the outage, {total} in all, 0 failed; after the start: /readyz 200 \
         after {ready:?}, a write answered after {wrote:?} more, a chat with the key it wrote in {new_key_chat:?} \
         ({api_back:?} after the start); the slowest chat during the outage {slowest_during:?}, after it \
         {slowest_after:?}"
    );
    worker.shutdown().await;
    s.stop().await;
}
