//! Draining under load (docs/draining.md): a real llama.cpp deployment under steady plain and
//! streamed load, scaled ten times, rolled five times, deleted from, moved off a worker in
//! maintenance and, on PostgreSQL, served through two servers of which the leader is stopped
//! cleanly, loses no request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::drain::{count_state, edit_model, settled, stream_complete, wait_until_async};
use crate::models::wait_models_instances;
use crate::support::{DbKind, TestServer};
use crate::workers::{import_backend, llama, worker_options};

both_dbs!(no_request_is_lost_under_load);

/// Steady plain and streamed chats at a fixed concurrency through the gateway; counts what failed.
struct Load {
    ok: AtomicUsize,
    streams: AtomicUsize,
    /// Each failure, with when it happened (since `started`).
    failed: std::sync::Mutex<Vec<String>>,
    started: std::time::Instant,
    /// Requests sent to the next server because one refused the connection.
    passed_over: AtomicUsize,
}

impl Default for Load {
    fn default() -> Load {
        Load {
            ok: 0.into(),
            streams: 0.into(),
            failed: Default::default(),
            started: std::time::Instant::now(),
            passed_over: 0.into(),
        }
    }
}

async fn keep_chatting(
    bases: Vec<String>,
    key: String,
    model: String,
    load: Arc<Load>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    streamed: bool,
) {
    let http = reqwest::Client::new();
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "Count to three."}],
                          "max_tokens": 8, "stream": streamed});
        // Servers in turn, as a load balancer sends them; one that refuses the connection (it
        // stopped) is passed over for the next, as a load balancer does (nginx's
        // `proxy_next_upstream error`).
        turn += 1;
        let mut sent = Err(format!("no server in {bases:?}"));
        for k in 0..bases.len() {
            let base = &bases[(turn + k) % bases.len()];
            match http.post(format!("{base}/v1/chat/completions")).bearer_auth(&key).json(&body).send().await {
                Err(e) if e.is_connect() => {
                    load.passed_over.fetch_add(1, Ordering::Relaxed);
                    sent = Err(format!("no answer from {base}: {e}"));
                }
                Err(e) => {
                    sent = Err(format!("no answer from {base}: {e}"));
                    break;
                }
                Ok(res) => {
                    sent = Ok(res);
                    break;
                }
            }
        }
        let outcome = match sent {
            Err(e) => Err(e),
            Ok(res) => {
                let status = res.status();
                let text = res.text().await.unwrap_or_default();
                if status != StatusCode::OK {
                    Err(format!("{status}: {text}"))
                } else if streamed && !stream_complete(&text).1 {
                    Err(format!("stream incomplete: {text}"))
                } else if !streamed
                    && serde_json::from_str::<Value>(&text).map_or(true, |v| v["choices"][0]["message"].is_null())
                {
                    Err(format!("not a completion: {text}"))
                } else {
                    Ok(())
                }
            }
        };
        match outcome {
            Ok(()) if streamed => {
                load.streams.fetch_add(1, Ordering::Relaxed);
            }
            Ok(()) => {
                load.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let at = load.started.elapsed().as_millis();
                load.failed.lock().unwrap_or_else(|e| e.into_inner()).push(format!("at {at} ms: {e}"));
            }
        }
    }
}

/// The load test's two databases take turns: up to 4 engines each on 2 cores is enough.
static ONE_LOAD_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn no_request_is_lost_under_load(kind: DbKind) {
    let Some((server, gguf)) = llama() else { return };
    let _turn = ONE_LOAD_AT_A_TIME.lock().await;
    let mut s = TestServer::start(kind).await;
    s.login_admin().await;
    // On PostgreSQL, an HA pair: clients spread over both servers, as behind a load balancer, and
    // the workers know both.
    let other = match kind {
        DbKind::Postgres => Some(s.another_on_the_same_database().await),
        DbKind::Sqlite => None,
    };
    let bases: Vec<String> = std::iter::once(s.base.clone()).chain(other.iter().map(|o| o.base.clone())).collect();
    // One thread per engine: several engines share the cores (llama.cpp's threads spin).
    import_backend(&s, &crate::workers::llama_yaml(&server, "127.0.0.1", "-c 2048 -t 1 -np 2")).await;
    let token = std::fs::read_to_string(s.dir.path().join("data/cluster_token")).expect("cluster token");
    let (da, db) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let mut workers = Vec::new();
    for (dir, name, ports) in [(&da, "loaded-a", (46740, 46764)), (&db, "loaded-b", (46765, 46789))] {
        let cfg = ferrostack::worker::WorkerConfig::new(
            bases.join(","),
            Some(token.trim().to_string()),
            dir.path().to_path_buf(),
            &worker_options(name, ports),
        )
        .expect("options");
        workers.push(ferrostack::worker::agent::start(cfg).await.expect("worker starts"));
    }
    let body = json!({"name": "smol", "source": "local_path", "local_path": gguf, "backend": "llama-cpp-custom",
                      "replicas": 3});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    settled(&s, id, 3, None).await;
    let key = s.api_key(json!({"name": "load", "scope": ["inference"]})).await;
    // The load starts once every gateway routes (a snapshot may trail the API by a commit).
    let http = reqwest::Client::new();
    for base in &bases {
        wait_until_async("the gateway routing to smol", || async {
            let body = json!({"model": "smol", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1});
            let res = http.post(format!("{base}/v1/chat/completions")).bearer_auth(&key).json(&body).send().await;
            res.is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await;
    }
    let load = Arc::new(Load::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Two plain and two streamed clients, back to back.
    let clients: Vec<_> = [false, false, true, true]
        .into_iter()
        .map(|streamed| {
            let (bases, key, load, stop) = (bases.clone(), key.clone(), load.clone(), stop.clone());
            tokio::spawn(keep_chatting(bases, key, "smol".into(), load, stop, streamed))
        })
        .collect();

    // Scaled down and up ten times.
    for replicas in [1, 3, 2, 3, 1, 2, 1, 3, 1, 2] {
        edit_model(&s, id, "", |m| m["replicas"] = json!(replicas)).await;
        settled(&s, id, replicas, None).await;
    }
    // Rolled five times to a new spec: one at a time, the new one serving before an old one drains.
    for seed in 1..=5 {
        edit_model(&s, id, "?rolling=true", |m| m["backend_parameters"] = json!(["--seed", seed.to_string()])).await;
        let (_, m) = s.get(&format!("/v2/models/{id}")).await;
        let hash = m["spec_digest"].as_str().expect("spec_digest").to_string();
        settled(&s, id, 2, Some(&hash)).await;
    }
    // An instance deleted: it drains, a new one replaces it.
    let (_, list) = s.get(&format!("/v2/model-instances?model_id={id}")).await;
    let victim = list["items"][0]["id"].as_i64().expect("id");
    assert_eq!(s.delete(&format!("/v2/model-instances/{victim}")).await.0, StatusCode::OK);
    let items = wait_models_instances(&s, id, "the deleted one replaced", |i| {
        i.len() == 2 && count_state(i, "running") == 2 && i.iter().all(|x| x["id"] != victim)
    })
    .await;
    // A worker that has instances put into maintenance with drain: they move to the other one.
    let busy = items[0]["worker_id"].as_i64().expect("worker_id");
    let spare = workers.iter().map(|w| w.worker_id).find(|w| *w != busy).expect("the other worker");
    let maintenance = |on: bool| json!({"maintenance": {"enabled": on, "drain": on}});
    assert_eq!(s.put(&format!("/v2/workers/{busy}"), maintenance(true)).await.0, StatusCode::OK);
    wait_models_instances(&s, id, "moved off the worker in maintenance", |i| {
        i.len() == 2 && count_state(i, "running") == 2 && i.iter().all(|x| x["worker_id"] == spare)
    })
    .await;
    assert_eq!(s.put(&format!("/v2/workers/{busy}"), maintenance(false)).await.0, StatusCode::OK);

    // The server that leads stopped cleanly: the other takes over, in front and behind.
    if let Some(other) = &other {
        s.stop().await;
        other.login_admin().await;
        edit_model(other, id, "", |m| m["replicas"] = json!(3)).await;
        settled(other, id, 3, None).await;
        edit_model(other, id, "", |m| m["replicas"] = json!(2)).await;
        settled(other, id, 2, None).await;
    }

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let failed = load.failed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (ok, streams) = (load.ok.load(Ordering::Relaxed), load.streams.load(Ordering::Relaxed));
    let passed_over = load.passed_over.load(Ordering::Relaxed);
    eprintln!(
        "drain load ({kind:?}): {ok} plain and {streams} streamed chats answered, {} failed, {passed_over} sent on to the next server",
        failed.len()
    );
    assert!(failed.is_empty(), "{} of {} requests failed: {failed:#?}", failed.len(), ok + streams + failed.len());
    assert!(ok > 0 && streams > 0, "no load ran: {ok} plain, {streams} streamed");
    if other.is_some() {
        assert!(passed_over > 0, "no client met the stopped server: the server stop was not under load");
    }
    for w in workers {
        w.shutdown().await;
    }
}
