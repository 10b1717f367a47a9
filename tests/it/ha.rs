//! Two servers on hosts of their own (network namespaces), one PostgreSQL reached over the bridge,
//! two workers with real llama.cpp that know both servers (`--server-url a,b`). A deployment is
//! scaled up and down 20 times while the leading server is killed (SIGKILL) at random moments
//! and restarted. Checked throughout: never more than `replicas + 1` instances, workers never
//! not_ready (their heartbeats reach the surviving server within the 10 s grace), the other server
//! leads within 10 s, chats sent to the surviving server succeed, a client that round-robins over
//! both loses at most what was in flight on a killed server or a scaled-away instance; at the end exactly `replicas` instances
//! run and none was restarted. Once, on PostgreSQL (SQLite serves one server).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::hosts::{self, Hosts};
use crate::support::{ADMIN_PASSWORD, DbKind, TestServer, database_url, postgres_available};
use crate::workers::{import_backend, llama, llama_yaml};

const SCALINGS: usize = 20;
pub const PORT: u16 = 8080;

/// Forwards connections on `listen`:0 to `upstream` (PostgreSQL on the root host's loopback);
/// returns the port.
pub async fn proxy(listen: &str, upstream: String) -> u16 {
    let listener = tokio::net::TcpListener::bind((listen, 0)).await.expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    port
}

/// A `ferrostack server` process on a namespace host.
pub struct Server {
    pub host: usize,
    pub data: PathBuf,
    pub url: String,
    pub base: String,
    pub pid: u32,
    pub starts: usize,
    /// `--worker-grace`, seconds.
    pub grace: u32,
}

impl Server {
    pub fn start(&mut self, hosts: &mut Hosts, logs: &Path) {
        let addr = hosts.addr(self.host);
        let port = PORT.to_string();
        let grace = self.grace.to_string();
        let data = self.data.to_str().expect("path").to_owned();
        let args = [
            "server",
            "--database-url",
            &self.url,
            "--data-dir",
            &data,
            "--host",
            &addr,
            "--port",
            &port,
            "--bootstrap-password",
            ADMIN_PASSWORD,
            "--worker-grace",
            &grace,
        ];
        let log = logs.join(format!("server{}-{}.log", self.host, self.starts));
        self.starts += 1;
        self.pid =
            hosts.spawn(self.host, Path::new(env!("CARGO_BIN_EXE_ferrostack")), &args, &[("RUST_LOG", "info")], &log);
    }

    pub fn kill(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9");
    }
}

pub async fn healthz(http: &reqwest::Client, base: &str) -> Option<Value> {
    let res = http.get(format!("{base}/healthz")).timeout(Duration::from_secs(2)).send().await.ok()?;
    res.json().await.ok()
}

pub async fn wait_up(http: &reqwest::Client, base: &str) {
    let start = Instant::now();
    while healthz(http, base).await.is_none() {
        assert!(start.elapsed() < Duration::from_secs(60), "{base} never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An API client logged in to one server process.
pub async fn api(base: &str) -> TestServer {
    let s = TestServer {
        base: base.to_owned(),
        http: reqwest::Client::builder().cookie_store(true).timeout(Duration::from_secs(30)).build().expect("client"),
        running: None,
        dir: tempfile::tempdir().expect("tempdir"),
        database_url: String::new(),
    };
    s.login_admin().await;
    s
}

/// A management read through whichever server answers first (None when neither does).
pub async fn read_any(http: &reqwest::Client, bases: &[String], key: &str, path: &str) -> Option<Value> {
    for base in bases {
        let req = http.get(format!("{base}{path}")).bearer_auth(key).timeout(Duration::from_secs(2));
        let Ok(res) = req.send().await else { continue };
        if res.status().is_success()
            && let Ok(body) = res.json::<Value>().await
        {
            return Some(body);
        }
    }
    None
}

/// The model's instances as a live server sees them (None when neither answers).
async fn instances(http: &reqwest::Client, bases: &[String], key: &str, model: i64) -> Option<Vec<Value>> {
    let list = read_any(http, bases, key, &format!("/v2/model-instances?model_id={model}&page=-1")).await?;
    list["items"].as_array().cloned()
}

/// The last lines of every server and worker log, for a failure message.
pub fn tails(dir: &Path) -> String {
    let mut out = String::new();
    for path in log_files(dir) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- {}\n{}\n", path.display(), lines[lines.len().saturating_sub(15)..].join("\n")));
    }
    out
}

/// The `.log` files in `dir`, by name.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    names.retain(|p| p.extension().is_some_and(|e| e == "log"));
    names.sort();
    names
}

/// The last 40 WARN and ERROR lines of each log in `dir`: what went wrong earlier than [`tails`] reaches.
pub fn warnings(dir: &Path) -> String {
    let mut out = String::new();
    for path in log_files(dir) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
        out.push_str(&format!(
            "--- {} (warnings)\n{}\n",
            path.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        ));
    }
    out
}

/// PostgreSQL on the root host reached over the bridge (through [`proxy`]), and two servers on it
/// on hosts 0 and 1, both up and sharing the server secret; `grace` is their worker grace.
pub async fn two_servers(hosts: &mut Hosts, dir: &Path, http: &reqwest::Client, grace: u32) -> Vec<Server> {
    let local_url = database_url(DbKind::Postgres, dir).await;
    let (head, tail) = local_url.split_once('@').expect("user@host");
    let (upstream, database) = tail.split_once('/').expect("host/db");
    let port = proxy(&hosts.root_addr(), upstream.to_owned()).await;
    let url = format!("{head}@{}:{port}/{database}", hosts.root_addr());
    let mut servers: Vec<Server> = (0..2)
        .map(|host| Server {
            host,
            data: dir.join(format!("server{host}")),
            url: url.clone(),
            base: format!("http://{}:{PORT}", hosts.addr(host)),
            pid: 0,
            starts: 0,
            grace,
        })
        .collect();
    servers[0].start(hosts, dir);
    wait_up(http, &servers[0].base).await;
    // Servers that share a database share the server secret.
    std::fs::create_dir_all(&servers[1].data).expect("data dir");
    std::fs::copy(servers[0].data.join("server_secret"), servers[1].data.join("server_secret")).expect("secret");
    servers[1].start(hosts, dir);
    wait_up(http, &servers[1].base).await;
    servers
}

pub async fn chat(http: &reqwest::Client, base: &str, key: &str) -> StatusCode {
    let body = json!({"model": "smol", "max_tokens": 4, "messages": [{"role": "user", "content": "Say hi."}]});
    let res = http.post(format!("{base}/v1/chat/completions")).bearer_auth(key).json(&body).send().await;
    res.map(|r| r.status()).unwrap_or(StatusCode::BAD_GATEWAY)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_is_killed_while_a_deployment_scales() {
    let Some((llama_server, gguf)) = llama() else { return };
    if !hosts::available() || !postgres_available() {
        return;
    }
    let mut hosts = Hosts::new(4);
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
    let mut servers = two_servers(&mut hosts, dir.path(), &http, 10).await;
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();

    let admin = api(&bases[0]).await;
    import_backend(&admin, &llama_yaml(&llama_server, "{{worker_ip}}", "-c 512 -t 1 -np 1")).await;
    let key = admin.api_key(json!({"name": "ha"})).await;
    let reader = admin.api_key(json!({"name": "ha-reader", "scope": ["management"]})).await;
    let token = std::fs::read_to_string(servers[0].data.join("cluster_token")).expect("cluster token");
    let server_urls = bases.join(",");
    for host in 2..4 {
        let data = dir.path().join(format!("worker{host}"));
        let name = format!("host{host}");
        let args = [
            "worker",
            "--server-url",
            &server_urls,
            "--token",
            token.trim(),
            "--data-dir",
            data.to_str().expect("path"),
            "--worker-name",
            &name,
            "--runtime",
            "process",
            "--port-range",
            "46300-46349",
            "--heartbeat-interval",
            "1",
            "--startup-timeout",
            "180",
        ];
        let log = logs.join(format!("worker{host}.log"));
        hosts.spawn(host, Path::new(env!("CARGO_BIN_EXE_ferrostack")), &args, &[("RUST_LOG", "info")], &log);
    }
    let start = Instant::now();
    loop {
        let (_, list) = admin.get("/v2/workers").await;
        let ready = list["items"].as_array().map_or(0, |w| w.iter().filter(|w| w["state"] == "ready").count());
        if ready == 2 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "workers never ready: {list:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let spec = json!({"name": "smol", "source": "local_path", "local_path": gguf, "backend": "llama-cpp-custom",
                      "replicas": 1, "placement_strategy": "spread"});
    let (status, model) = admin.post("/v2/models", spec).await;
    assert_eq!(status, StatusCode::OK, "{model}");
    let model_id = model["id"].as_i64().expect("id");

    // Watch the invariants from outside, every 250 ms, through whichever server answers.
    let desired = Arc::new(Mutex::new((1u64, 1u64)));
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (http, bases, reader, desired, violations, done) =
            (http.clone(), bases.clone(), reader.clone(), desired.clone(), violations.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let allowed = desired.lock().map(|d| d.0.max(d.1) + 1).unwrap_or(u64::MAX);
                if let Some(items) = instances(&http, &bases, &reader, model_id).await
                    && items.len() as u64 > allowed
                {
                    violations.lock().expect("lock").push(format!("{} instances, at most {allowed}", items.len()));
                }
                let workers = read_any(&http, &bases, &reader, "/v2/workers").await.unwrap_or_default();
                for w in workers["items"].as_array().into_iter().flatten().filter(|w| w["state"] != "ready") {
                    violations.lock().expect("lock").push(format!("worker {} {}", w["name"], w["state"]));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    let converged = async |want: u64| {
        let start = Instant::now();
        loop {
            if let Some(items) = instances(&http, &bases, &reader, model_id).await
                && items.len() as u64 == want
                && items.iter().all(|i| i["state"] == "running")
            {
                return items;
            }
            if start.elapsed() > Duration::from_secs(120) {
                let items = instances(&http, &bases, &reader, model_id).await;
                panic!("never {want} running instances: {items:#?}\n{}", tails(logs));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let first = converged(1).await.remove(0);

    // A client that round-robins its chats over both servers, going to the other when one does
    // not accept the connection (as a worker does). It sends one at a time, so it can lose at
    // most one request per kill (in flight on the killed server) and per scale-down.
    let round_robin = {
        let (http, bases, key, done) = (http.clone(), bases.clone(), key.clone(), done.clone());
        tokio::spawn(async move {
            let (mut ok, mut lost, mut refused) = (0u32, Vec::new(), Vec::new());
            for n in 0usize.. {
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let body = json!({"model": "smol", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]});
                for k in 0..bases.len() {
                    let base = &bases[(n + k) % bases.len()];
                    let sent = http.post(format!("{base}/v1/chat/completions")).bearer_auth(&key).json(&body).send();
                    match sent.await {
                        Ok(res) if res.status() == StatusCode::OK => ok += 1,
                        Ok(res) => refused.push(format!("{base}: {}", res.status())),
                        Err(e) if e.is_connect() => continue,
                        Err(e) => lost.push(format!("{base}: {e}")),
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (ok, lost, refused)
        })
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(std::process::id().into());
    let (mut kills, mut chats, mut stopped_mid_chat, mut takeovers) = (0, 0, 0, Vec::new());
    for round in 0..SCALINGS {
        let want = if round % 2 == 0 { 2 } else { 1 };
        if let Ok(mut d) = desired.lock() {
            *d = (d.1, want);
        }
        // Scale with the version read (the controller's status writes do not move it).
        // Both are up between rounds (a killed server is restarted in its round): alternate.
        let client = api(&servers[round % 2].base).await;
        let (_, current) = client.get(&format!("/v2/models/{model_id}")).await;
        let mut body = current.clone();
        body["replicas"] = json!(want);
        let (status, answer) = client.put(&format!("/v2/models/{model_id}?version={}", current["version"]), body).await;
        assert_eq!(status, StatusCode::OK, "round {round}: {answer}");

        // Now and then, a random moment into the scaling, kill the leader.
        if kills < 6 && (round == 3 || round == 11 || rng.random_range(0..4) == 0) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..2000))).await;
            let mut leader = None;
            for (n, s) in servers.iter().enumerate() {
                if healthz(&http, &s.base).await.is_some_and(|h| h["leading"] == true) {
                    leader = Some(n);
                }
            }
            let Some(dead) = leader else { continue };
            let survivor = 1 - dead;
            servers[dead].kill();
            let killed = Instant::now();
            kills += 1;
            // Chats to the survivor succeed while it takes over. In a scale-down one may be in
            // flight on the instance being stopped: that one, once per round, is not the kill's.
            let mut in_flight_on_stopped = 0;
            for _ in 0..3 {
                match chat(&http, &servers[survivor].base, &key).await {
                    StatusCode::OK => chats += 1,
                    StatusCode::BAD_GATEWAY if want == 1 && in_flight_on_stopped == 0 => in_flight_on_stopped += 1,
                    status => panic!("round {round}: a chat to the surviving server failed: {status}"),
                }
            }
            stopped_mid_chat += in_flight_on_stopped;
            while healthz(&http, &servers[survivor].base).await.is_none_or(|h| h["leading"] != true) {
                assert!(killed.elapsed() < Duration::from_secs(10), "round {round}: no takeover within 10 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            takeovers.push(killed.elapsed());
            servers[dead].start(&mut hosts, logs);
            wait_up(&http, &servers[dead].base).await;
        }
        converged(want).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.await.expect("watcher");
    let (answered, lost, refused) = round_robin.await.expect("round-robin client");
    // What may be lost: a request in flight on a killed server, or on an instance a scale-down
    // stops (the engine goes while it answers, and a server may dial it once more before it
    // hears of the deletion).
    let scale_downs = SCALINGS / 2;
    assert!(lost.len() + refused.len() <= kills + scale_downs, "lost {lost:?}, refused {refused:?}");
    assert!(answered > 20, "the round-robin client got {answered} answers");

    let violations = violations.lock().expect("lock").clone();
    assert!(violations.is_empty(), "invariants broken: {violations:#?}");
    assert!(kills >= 2, "the leader was killed {kills} times");
    let last = converged(if SCALINGS.is_multiple_of(2) { 1 } else { 2 }).await;
    for i in &last {
        assert_eq!(i["restart_count"], 0, "an instance restarted: {i:#}");
        if i["id"] == first["id"] {
            assert_eq!(i["pid"], first["pid"], "the first instance kept its engine: {i:#}");
        }
    }
    eprintln!(
        "{SCALINGS} scalings, {kills} leaders killed, takeovers {takeovers:?}, {chats} chats to the survivor ok \
         ({stopped_mid_chat} in flight on a scaled-away instance); \
         round-robin client: {answered} answered, {} lost in flight, {} refused",
        lost.len(),
        refused.len()
    );
}
