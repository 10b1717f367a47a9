//! Static stability (issue 22): serving survives faults of the control plane. On PostgreSQL:
//! servers started together on an empty database both start; a lease renewal that waited for the
//! row lock is not written expired; sessions carry limits below the lease and a request never
//! waits for change numbering held by another session; a server whose database stalls says so
//! (`/readyz`, the API answers 503 with `Retry-After` within 2 s) and recovers. On
//! network-namespace hosts with real llama.cpp and the defaults (heartbeat 5 s, grace 30 s): the
//! leading server, which the worker talks to, is cut from the database for 60 s, then the new
//! leader, which the worker moved to, is stopped (SIGSTOP) for 40 s; chats through the other
//! server never fail, nor through the cut one (it serves what it knows), a replica added during
//! the cut starts, the worker never leaves `ready`, the lease changes hands within 10 s.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrostack::db::{Db, Val};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

use crate::ha::{self, Server};
use crate::hosts::{self, Hosts};
use crate::repository::cluster;
use crate::support::{DbKind, TestServer, database_url, postgres_available};
use crate::workers::{import_backend, llama, llama_yaml};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_started_together_on_an_empty_database_both_start() {
    if !postgres_available() {
        return;
    }
    for round in 0..3 {
        let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
        let url = database_url(DbKind::Postgres, dirs[0].path()).await;
        for d in &dirs {
            // Servers that share a database share the server secret.
            std::fs::create_dir_all(d.path().join("data")).expect("data dir");
            std::fs::write(d.path().join("data/server_secret"), "static-stability-shared-secret-0123456789\n")
                .expect("secret");
        }
        let mut dirs = dirs.into_iter();
        let (d0, d1) = (dirs.next().expect("dir"), dirs.next().expect("dir"));
        // Both at the same instant; each panics ("server starts") if its bootstrap fails.
        let (mut a, mut b) = tokio::join!(TestServer::start_with(d0, url.clone()), TestServer::start_with(d1, url));
        a.login_admin().await;
        b.login_admin().await;
        let (_, users) = b.get("/v2/users").await;
        assert_eq!(users["items"].as_array().map(Vec::len), Some(1), "round {round}: one admin: {users}");
        let (_, clusters) = a.get("/v2/clusters").await;
        assert_eq!(clusters["items"].as_array().map(Vec::len), Some(1), "round {round}: one cluster: {clusters}");
        a.stop().await;
        b.stop().await;
    }
}

/// A test connection to the same database.
async fn side_connection(url: &str) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url).await.expect("side connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_numbering_never_wait_long_on_another_session() {
    if !postgres_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let url = database_url(DbKind::Postgres, dir.path()).await;
    let db = Db::open(&url).await.expect("open");
    // Every session is limited below the control lease (6 s).
    for (name, value) in
        [("statement_timeout", "5s"), ("lock_timeout", "2s"), ("idle_in_transaction_session_timeout", "3s")]
    {
        assert_eq!(db.session_setting(name).await.expect("setting"), value, "{name}");
    }

    // Row 5: a renewal that waited for the lease row's lock is written with a full TTL from when
    // it got the lock, not from when its statement began.
    let ttl = 3000;
    assert_eq!(db.acquire_lease("held", "a", ttl).await.expect("take"), Some(1));
    let mut side = side_connection(&url).await;
    sqlx::query("BEGIN").execute(&mut side).await.expect("begin");
    sqlx::query("SELECT * FROM leases WHERE name = 'held' FOR UPDATE").execute(&mut side).await.expect("lock");
    let renewal = {
        let db = db.clone();
        tokio::spawn(async move { db.acquire_lease("held", "a", ttl).await })
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sqlx::query("COMMIT").execute(&mut side).await.expect("commit");
    assert_eq!(renewal.await.expect("join").expect("renew"), Some(1), "renewed, same token");
    let holder = db.lease_holder("held").await.expect("holder").expect("held");
    assert!(holder.expires_in_ms > 2400, "the renewal was written as of before its wait: {holder:?}");

    // Rows 2/3: another session holding the change sequencer (a server stalled inside it) does
    // not hold writes: the write answers, its change is numbered once the sequencer is free.
    sqlx::query("BEGIN").execute(&mut side).await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(5067467983334295365)::TEXT").execute(&mut side).await.expect("lock");
    let spec = cluster("while-numbering-is-held");
    let extra = [("token_digest", Val::Text("d".into()))];
    let write = db.insert(&spec, &extra);
    let written = tokio::time::timeout(Duration::from_secs(10), write).await;
    let written = written.expect("a write waited for change numbering").expect("insert");
    sqlx::query("COMMIT").execute(&mut side).await.expect("release");
    db.sequence_changes().await.expect("sequence");
    let changes = db.changes_since("clusters", 0, 100, None).await.expect("changes");
    assert!(
        changes.iter().any(|c| c.data.contains("while-numbering-is-held")),
        "the change of {} was numbered after the sequencer was free",
        written.id
    );
}

/// Forwards connections on loopback to `upstream`; while `frozen` is set, nothing moves in either
/// direction (a partition: no reset, no answer).
async fn freezable_proxy(upstream: String, frozen: Arc<AtomicBool>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let (upstream, frozen) = (upstream.clone(), frozen.clone());
            tokio::spawn(async move {
                if frozen.load(Ordering::Relaxed) {
                    // A connection attempt during the cut is accepted and never answered.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else { return };
                let (mut ri, mut wi) = inbound.into_split();
                let (mut ro, mut wo) = outbound.into_split();
                let pipe = async |r: &mut tokio::net::tcp::OwnedReadHalf, w: &mut tokio::net::tcp::OwnedWriteHalf| {
                    let mut buf = vec![0u8; 16384];
                    loop {
                        while frozen.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        let n = match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        while frozen.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        if w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::join!(pipe(&mut ri, &mut wo), pipe(&mut ro, &mut wi));
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_database_stalls_says_so_at_once_and_recovers() {
    if !postgres_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let direct = database_url(DbKind::Postgres, dir.path()).await;
    let (head, tail) = direct.split_once('@').expect("user@host");
    let (upstream, database) = tail.split_once('/').expect("host/db");
    let frozen = Arc::new(AtomicBool::new(false));
    let port = freezable_proxy(upstream.to_owned(), frozen.clone()).await;
    let s = TestServer::start_with(dir, format!("{head}@127.0.0.1:{port}/{database}")).await;
    s.login_admin().await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    assert_eq!(http.get(s.url("/readyz")).send().await.expect("readyz").status(), StatusCode::OK);
    let key = s.api_key(json!({"name": "seen"})).await;
    let unseen = s.api_key(json!({"name": "unseen"})).await;
    let models =
        async |key: &str| http.get(s.url("/v1/models")).bearer_auth(key).send().await.expect("models").status();
    assert_eq!(models(&key).await, StatusCode::OK, "the key is seen before the outage");

    frozen.store(true, Ordering::Relaxed);
    let cut = Instant::now();
    loop {
        let res = http.get(s.url("/readyz")).send().await.expect("readyz answers");
        if res.status() == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(cut.elapsed() < Duration::from_secs(15), "/readyz still 200 without a database");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let readyz_after = cut.elapsed();
    // The API answers at once, 503 with Retry-After: a worker moves on, a client retries.
    let asked = Instant::now();
    let res = s.http.get(s.url("/v2/workers")).send().await.expect("an answer");
    let answered_in = asked.elapsed();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"), "{:?}", res.headers());
    assert!(answered_in < Duration::from_secs(10), "the API took {answered_in:?} to refuse");
    let probes = http.get(s.url("/healthz")).send().await.expect("healthz");
    assert_eq!(probes.status(), StatusCode::OK, "liveness is not readiness");
    // Stale-while-unavailable: a key seen lately still reaches the gateway; one never seen is
    // refused at once with 503 (it cannot be checked), not after a wait.
    assert_eq!(models(&key).await, StatusCode::OK, "a key seen before the outage keeps serving");
    assert_eq!(models(&unseen).await, StatusCode::SERVICE_UNAVAILABLE, "an unseen key cannot be checked");

    frozen.store(false, Ordering::Relaxed);
    let healed = Instant::now();
    loop {
        let res = http.get(s.url("/readyz")).send().await.expect("readyz answers");
        if res.status() == StatusCode::OK {
            break;
        }
        assert!(healed.elapsed() < Duration::from_secs(30), "/readyz never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_again = healed.elapsed();
    let start = Instant::now();
    loop {
        let (status, body) = s.get("/v2/workers").await;
        if status == StatusCode::OK {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the API never recovered: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "database stalled: /readyz 503 after {readyz_after:?}, an API call refused in {answered_in:?}; healed: ready after {ready_again:?}"
    );
}

/// Sends `signal` to a server process.
fn signal(server: &Server, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.pid).expect("pid"));
    nix::sys::signal::kill(pid, signal).expect("signal");
}

/// Chats through `base` one after another until `stop`; (answered, failures).
fn chat_load(
    http: reqwest::Client,
    base: String,
    key: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u32, Vec<String>)> {
    tokio::spawn(async move {
        let (mut ok, mut failed) = (0, Vec::new());
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let body = json!({"model": "smol", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]});
            let sent = http.post(format!("{base}/v1/chat/completions")).bearer_auth(&key).json(&body).send().await;
            match sent {
                Ok(res) if res.status() == StatusCode::OK => ok += 1,
                Ok(res) => failed.push(format!(
                    "at {:.1} s: {}: {}",
                    started.elapsed().as_secs_f64(),
                    res.status(),
                    res.text().await.unwrap_or_default()
                )),
                Err(e) => failed.push(format!("at {:.1} s: {e}", started.elapsed().as_secs_f64())),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        (ok, failed)
    })
}

/// Watches, through `base`, that every worker stays `ready`: (the states it saw otherwise, every
/// change of an instance's state with its message and when, to read when a chat failed).
fn watch_workers(
    http: reqwest::Client,
    base: String,
    key: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<String>, Vec<String>)> {
    tokio::spawn(async move {
        let (mut seen, mut changes) = (Vec::new(), Vec::new());
        let mut last: std::collections::HashMap<i64, String> = Default::default();
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let at = started.elapsed().as_secs_f64();
            if let Some(list) = ha::read_any(&http, std::slice::from_ref(&base), &key, "/v2/workers").await {
                for w in list["items"].as_array().into_iter().flatten().filter(|w| w["state"] != "ready") {
                    seen.push(format!("at {at:.1} s: {} {} ({})", w["name"], w["state"], w["state_message"]));
                }
            }
            if let Some(list) = ha::read_any(&http, std::slice::from_ref(&base), &key, "/v2/model-instances").await {
                for i in list["items"].as_array().into_iter().flatten() {
                    let now = format!("{} ({})", i["state"], i["state_message"]);
                    let id = i["id"].as_i64().unwrap_or_default();
                    if last.get(&id) != Some(&now) {
                        changes.push(format!("at {at:.1} s: instance {id} {now}"));
                        last.insert(id, now);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (seen, changes)
    })
}

/// How long until `base` says it leads (panics past 20 s).
async fn takeover(http: &reqwest::Client, base: &str, since: Instant) -> Duration {
    while ha::healthz(http, base).await.is_none_or(|h| h["leading"] != true) {
        assert!(since.elapsed() < Duration::from_secs(20), "{base} did not take over within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    since.elapsed()
}

/// `curl` from host `from` to `url`: (status, seconds).
fn curl(hosts: &Hosts, from: usize, url: &str) -> (u16, f64) {
    let out = hosts.run(
        from,
        "curl",
        &["-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", "--max-time", "10", url],
    );
    let mut parts = out.split_whitespace();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let secs = parts.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    (status, secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_goes_on_when_a_server_is_cut_from_the_database_or_stopped() {
    let Some((llama_server, gguf)) = llama() else { return };
    if !hosts::available() || !postgres_available() {
        return;
    }
    // Hosts 0 and 1: servers; host 2: a worker with real llama.cpp.
    let mut hosts = Hosts::new(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    // The grace a user gets by default.
    let servers = ha::two_servers(&mut hosts, dir.path(), &http, 30).await;
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    assert_eq!(ha::healthz(&http, &bases[0]).await.expect("healthz")["leading"], true, "the first server leads");

    let admin = ha::api(&bases[1]).await;
    import_backend(&admin, &llama_yaml(&llama_server, "{{worker_ip}}", "-c 512 -t 1 -np 1")).await;
    let key = admin.api_key(json!({"name": "chats"})).await;
    let reader = admin.api_key(json!({"name": "reader", "scope": ["management"]})).await;
    let token = std::fs::read_to_string(servers[0].data.join("cluster_token")).expect("cluster token");
    let worker_data = dir.path().join("worker2");
    // The worker talks to server 0 first; heartbeat 5 s (the default).
    let args = [
        "worker",
        "--server-url",
        &bases.join(","),
        "--token",
        token.trim(),
        "--data-dir",
        worker_data.to_str().expect("path"),
        "--worker-name",
        "w2",
        "--runtime",
        "process",
        "--port-range",
        "47800-47849",
        "--startup-timeout",
        "180",
    ];
    hosts.spawn(
        2,
        Path::new(env!("CARGO_BIN_EXE_ferrostack")),
        &args,
        &[("RUST_LOG", "info")],
        &logs.join("worker2.log"),
    );
    let spec = json!({"name": "smol", "source": "local_path", "local_path": gguf, "backend": "llama-cpp-custom", "replicas": 1});
    let start = Instant::now();
    let model_id = loop {
        let (_, list) = admin.get("/v2/workers").await;
        if list["items"].as_array().is_some_and(|w| w.iter().any(|w| w["state"] == "ready")) {
            let (status, model) = admin.post("/v2/models", spec.clone()).await;
            assert_eq!(status, StatusCode::OK, "{model}");
            break model["id"].as_i64().expect("id");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the worker never got ready: {list}\n{}", ha::tails(logs));
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // The deployment's instances once `n` run, oldest first.
    let running = async |base: &str, n: usize| {
        let start = Instant::now();
        loop {
            let path = format!("/v2/model-instances?model_id={model_id}&page=-1");
            if let Some(list) = ha::read_any(&http, &[base.to_owned()], &reader, &path).await
                && let Some(items) = list["items"].as_array()
                && items.len() == n
                && items.iter().all(|i| i["state"] == "running")
            {
                let mut items = items.clone();
                items.sort_by_key(|i| i["id"].as_i64());
                return items;
            }
            assert!(start.elapsed() < Duration::from_secs(180), "never {n} running\n{}", ha::tails(logs));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let first = running(&bases[1], 1).await.remove(0);

    // (a) Server 0 (the leader, the worker's server) is cut from the database for 60 s; its
    // workers and clients still reach it. Chats go through server 1, and through server 0 too
    // (stale-while-unavailable: it knows the key and the route).
    // The test's own namespace is what the cut separates from server 0: its chats come from the
    // worker's host. Server 0 has seen the key before the cut.
    let chat_body = r#"{"model": "smol", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}"#;
    // Both servers route to it before the load and the cut: a gateway's snapshot may trail the
    // API read by the change-log poll (seconds on a busy machine; CI failed on the first chat).
    let routed = Instant::now();
    for base in &bases {
        while ha::chat(&http, base, &key).await != StatusCode::OK {
            assert!(routed.elapsed() < Duration::from_secs(60), "{base} never routed a chat before the cut");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = chat_load(http.clone(), bases[1].clone(), key.clone(), stop.clone());
    let script = format!(
        "end=$(( $(date +%s) + 55 )); while [ $(date +%s) -lt $end ]; do \
         curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 20 -H 'Authorization: Bearer {key}' \
         -H 'Content-Type: application/json' -d '{chat_body}' {}/v1/chat/completions; sleep 0.25; done",
        bases[0]
    );
    let cut_log = logs.join("chats-through-the-cut-server.out");
    hosts.spawn(2, Path::new("sh"), &["-c", &script], &[], &cut_log);
    let states = watch_workers(http.clone(), bases[1].clone(), reader.clone(), stop.clone());
    hosts.cut_from_root(0, true);
    let cut = Instant::now();
    let readyz = format!("{}/readyz", bases[0]);
    let readyz_503 = loop {
        let (status, _) = curl(&hosts, 2, &readyz);
        if status == 503 {
            break cut.elapsed();
        }
        assert!(cut.elapsed() < Duration::from_secs(10), "server 0's /readyz answered {status} without a database");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (api_status, api_secs) = curl(&hosts, 2, &format!("{}/v2/workers", bases[0]));
    assert_eq!(api_status, 503, "server 0's API without a database");
    let takeover_cut = takeover(&http, &bases[1], cut).await;
    // A replica added during the cut starts: the worker follows the healthy server's watch.
    let (_, current) = admin.get(&format!("/v2/models/{model_id}")).await;
    let mut scaled = current.clone();
    scaled["replicas"] = json!(2);
    let (status, answer) = admin.put(&format!("/v2/models/{model_id}"), scaled).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    running(&bases[1], 2).await;
    let second_running = cut.elapsed();
    assert!(second_running < Duration::from_secs(60), "the replica added during the cut ran only after it");
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(cut.elapsed())).await;
    hosts.cut_from_root(0, false);
    let healed = Instant::now();
    while curl(&hosts, 2, &readyz).0 != 200 {
        assert!(healed.elapsed() < Duration::from_secs(30), "server 0 never ready again\n{}", ha::tails(logs));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready_again = healed.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (answered_a, failed_a) = load.await.expect("load");
    let codes = std::fs::read_to_string(&cut_log).unwrap_or_default();
    let answered_cut = codes.lines().filter(|c| *c == "200").count();
    let failed_cut: Vec<&str> = codes.lines().filter(|c| *c != "200").collect();
    let (not_ready_a, changes_a) = states.await.expect("states");
    assert!(
        failed_a.is_empty(),
        "chats through the healthy server failed during the cut: {failed_a:?}\nworkers not ready: {not_ready_a:?}\n\
         instances: {changes_a:#?}\n{}{}",
        ha::warnings(logs),
        ha::tails(logs)
    );
    assert!(not_ready_a.is_empty(), "workers left ready during the cut: {not_ready_a:?}\n{}", ha::tails(logs));
    assert!(answered_a > 20, "only {answered_a} chats answered");
    // Through the cut server itself: what it knew keeps serving.
    assert!(failed_cut.is_empty(), "chats through the cut server failed: {failed_cut:?}");
    assert!(answered_cut > 20, "only {answered_cut} chats answered through the cut server: {codes}");
    assert!(takeover_cut < Duration::from_secs(10), "takeover after the cut took {takeover_cut:?}");

    // (b) Server 1 (now the leader and the worker's server) is stopped for 40 s. Chats go
    // through server 0.
    let stop = Arc::new(AtomicBool::new(false));
    let load = chat_load(http.clone(), bases[0].clone(), key.clone(), stop.clone());
    let states = watch_workers(http.clone(), bases[0].clone(), reader.clone(), stop.clone());
    signal(&servers[1], nix::sys::signal::Signal::SIGSTOP);
    let stopped = Instant::now();
    let takeover_stop = takeover(&http, &bases[0], stopped).await;
    tokio::time::sleep(Duration::from_secs(40).saturating_sub(stopped.elapsed())).await;
    signal(&servers[1], nix::sys::signal::Signal::SIGCONT);
    ha::wait_up(&http, &bases[1]).await;
    stop.store(true, Ordering::Relaxed);
    let (answered_b, failed_b) = load.await.expect("load");
    let (not_ready_b, changes_b) = states.await.expect("states");
    assert!(
        failed_b.is_empty(),
        "chats through the running server failed while the other was stopped: {failed_b:?}\n\
         workers not ready: {not_ready_b:?}\ninstances: {changes_b:#?}\n{}{}",
        ha::warnings(logs),
        ha::tails(logs)
    );
    assert!(
        not_ready_b.is_empty(),
        "workers left ready while a server was stopped: {not_ready_b:?}\n{}",
        ha::tails(logs)
    );
    assert!(answered_b > 20, "only {answered_b} chats answered");
    assert!(takeover_stop < Duration::from_secs(10), "takeover after SIGSTOP took {takeover_stop:?}");

    // The engine never restarted, nothing was duplicated.
    let last = running(&bases[0], 2).await.remove(0);
    assert_eq!(last["id"], first["id"]);
    assert_eq!(last["pid"], first["pid"], "the engine kept running: {last:#}");
    assert_eq!(last["restart_count"], 0);
    let moved =
        std::fs::read_to_string(logs.join("worker2.log")).unwrap_or_default().matches("moving to the next").count();
    eprintln!(
        "cut from the database 60 s: /readyz 503 after {readyz_503:?}, API 503 in {api_secs:.3} s, takeover {takeover_cut:?}, \
         a replica added during the cut running {second_running:?} after the cut, ready again {ready_again:?} after the heal; {answered_a} chats through the other server, {} failed, \
         {answered_cut} through the cut server, {} failed ({failed_cut:?}); \
         stopped 40 s: takeover {takeover_stop:?}, {answered_b} chats through the other server, {} failed; \
         the worker moved {moved} times",
        failed_a.len(),
        failed_cut.len(),
        failed_b.len()
    );
}

/// A backend whose engine is Python's HTTP server: it answers any GET.
const ANSWERING_YAML: &str = "backend_name: answering-custom
default_version: v1
default_run_command: \"-m http.server {{port}} --bind {{worker_ip}}\"
health_check_path: /
version_configs:
  v1:
    image_name: python
    entrypoint: python3
    custom_framework: cpu
";

/// Silence alone does not cut serving: when a worker stops heartbeating, its running instance
/// whose engine still answers stays running (and routed); one whose engine does not answer
/// becomes unreachable, and so does the first once its engine stops answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_keeps_the_instances_whose_engines_answer() {
    use crate::workers::{SLEEPER_YAML, place, start_worker, wait_instance, worker_options};
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    import_backend(&s, ANSWERING_YAML).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = worker_options("quiet", (47850, 47869));
    opts.leave_running = true;
    let worker = start_worker(&s, dir.path(), &opts).await;
    let wid = worker.worker_id;
    let answering = place(
        &s,
        json!({"name": "answers", "model_name": "a", "model_path": "/", "backend": "answering-custom", "worker_id": wid}),
    )
    .await;
    let silent = place(
        &s,
        json!({"name": "mute", "model_name": "m", "model_path": "/", "backend": "sleeper-custom", "worker_id": wid}),
    )
    .await;
    let running = wait_instance(&s, answering, "running", |i| i["state"] == "running").await;
    let mute = wait_instance(&s, silent, "running", |i| i["state"] == "running").await;
    let pid = running["pid"].as_i64().expect("pid");

    // The agent stops (its engines keep running); the grace here is 3 s.
    worker.shutdown().await;
    let why = wait_instance(&s, silent, "unreachable", |i| i["state"] == "unreachable").await;
    assert!(why["state_message"].as_str().is_some_and(|m| m.contains("not heartbeating")), "{why:#}");
    let (_, w) = s.get(&format!("/v2/workers/{wid}")).await;
    assert_ne!(w["state"], "ready", "{w:#}");
    // Past a re-check of the silent worker's engines (every 5 s), the answering one still runs.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (_, still) = s.get(&format!("/v2/model-instances/{answering}")).await;
    assert_eq!(still["state"], "running", "an instance whose engine answers was taken out: {still:#}");

    // Its engine stops answering: the next re-check takes it out.
    let engine = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
    nix::sys::signal::kill(engine, nix::sys::signal::Signal::SIGKILL).expect("kill the engine");
    let gone = wait_instance(&s, answering, "unreachable", |i| i["state"] == "unreachable").await;
    assert!(gone["state_message"].as_str().is_some_and(|m| m.contains("does not answer")), "{gone:#}");
    if let Some(sleeper) = mute["pid"].as_i64().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(sleeper), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Rows 2 and 3: a server stalled (its database link frozen) inside a fenced write, and then
/// inside the change sequencer, holds nothing past its lease: the database ends its idle
/// transaction, another server takes the lease within 10 s of the last renewal, and the other
/// server's writes answer and are numbered while the stalled one stays frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stalled_inside_a_fenced_write_or_the_sequencer_holds_nothing_past_its_lease() {
    use ferrostack::api::ClusterSpec;
    use ferrostack::db::DbError;
    use ferrostack::db::lease::{CONTROL, Fence};
    if !postgres_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let direct = database_url(DbKind::Postgres, dir.path()).await;
    let (head, tail) = direct.split_once('@').expect("user@host");
    let (upstream, database) = tail.split_once('/').expect("host/db");
    let frozen = Arc::new(AtomicBool::new(false));
    let port = freezable_proxy(upstream.to_owned(), frozen.clone()).await;
    let b = Db::open(&direct).await.expect("open b");
    let a = Db::open(&format!("{head}@127.0.0.1:{port}/{database}")).await.expect("open a");
    let extra = [("token_digest", Val::Text("d".into()))];
    let target = b.insert(&cluster("contended"), &extra).await.expect("insert");
    let mut side = side_connection(&direct).await;

    // (c1) a leads and is inside a fenced write (waiting for a row the test holds) when its link
    // freezes; the test lets the write through, whose answer never reaches a.
    let ttl = 6000;
    let token = a.acquire_lease(CONTROL, "a", ttl).await.expect("a takes").expect("a leads");
    let renewed = Instant::now();
    let fenced = a.fenced(Fence { lease: CONTROL, holder: "a".into(), token });
    sqlx::query("BEGIN").execute(&mut side).await.expect("begin");
    sqlx::query(&format!("SELECT * FROM clusters WHERE id = {} FOR UPDATE", target.id))
        .execute(&mut side)
        .await
        .expect("hold the row");
    let stalled = tokio::spawn(async move {
        fenced
            .modify::<ClusterSpec, DbError, _>(target.id, None, |c| {
                c.description = Some("by a stalled leader".into());
                Ok(vec![])
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    frozen.store(true, Ordering::Relaxed);
    sqlx::query("COMMIT").execute(&mut side).await.expect("release the row");
    let takeover = loop {
        if let Ok(Some(_)) = b.acquire_lease(CONTROL, "b", ttl).await {
            break renewed.elapsed();
        }
        assert!(renewed.elapsed() < Duration::from_secs(20), "b never took the lease from the stalled leader");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(takeover < Duration::from_secs(10), "takeover {takeover:?} after the stalled leader's last renewal");
    let stored = b.get::<ClusterSpec>(target.id).await.expect("get");
    assert_ne!(stored.spec.description.as_deref(), Some("by a stalled leader"), "the stalled write was not committed");

    // (c2) a is inside the sequencer (it waited for the lock the test held) when its link is
    // frozen: b's writes still answer, and are numbered once the database ends a's transaction.
    frozen.store(false, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(10), stalled).await;
    sqlx::query("BEGIN").execute(&mut side).await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(5067467983334295365)::TEXT").execute(&mut side).await.expect("lock");
    let sequencing = {
        let a = a.clone();
        tokio::spawn(async move { a.sequence_changes().await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    frozen.store(true, Ordering::Relaxed);
    sqlx::query("COMMIT").execute(&mut side).await.expect("release");
    let frozen_at = Instant::now();
    let spec = cluster("while-a-is-stalled-in-the-sequencer");
    let written = tokio::time::timeout(Duration::from_secs(10), b.insert(&spec, &extra)).await;
    written.expect("b's write waited for the stalled sequencer").expect("insert");
    let numbered = loop {
        let _ = b.sequence_changes().await;
        let changes = b.changes_since("clusters", 0, 1000, None).await.expect("changes");
        if changes.iter().any(|c| c.data.contains("while-a-is-stalled-in-the-sequencer")) {
            break frozen_at.elapsed();
        }
        assert!(frozen_at.elapsed() < Duration::from_secs(20), "numbering stayed stuck behind the stalled sequencer");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    frozen.store(false, Ordering::Relaxed);
    sequencing.abort();
    eprintln!(
        "stalled inside a fenced write: takeover {takeover:?} after the last renewal; inside the sequencer: numbering again after {numbered:?}"
    );
}
