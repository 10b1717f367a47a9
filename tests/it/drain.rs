//! Draining (docs/draining.md): every stop of a serving instance lets the requests in flight on it
//! finish. A held stream outlives a scale-down (and the drain timeout stops an instance that stays
//! busy); the gateway resends a request whose connection was lost before any answer byte, never
//! one whose answer began; a worker's clean stop and a deployment's delete drain too. The load
//! test is in `drain_load.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, header};
use axum::response::IntoResponse;
use ferrostack::gateway::{Caller, Gateway, Route, Snapshot};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::models::wait_models_instances;
use crate::support::{DbKind, TestServer};
use crate::workers::{SLEEPER_YAML, import_backend, start_worker, worker_options};

both_dbs!(
    a_held_stream_outlives_a_scale_down_and_the_timeout_ends_a_drain,
    maintenance_with_drain_moves_instances_away,
    an_engine_still_running_requests_holds_its_drain,
    a_worker_stopping_cleanly_moves_and_drains_its_instances,
    a_lone_worker_stopping_cleanly_empties_without_waiting_for_room
);

/// A stub engine on `listener`: streams a chunk every 100 ms until `release` turns true, then
/// ends the stream properly; plain requests are answered at once. Counts the requests it got.
fn stub_engine(listener: tokio::net::TcpListener, release: tokio::sync::watch::Receiver<bool>) -> Arc<AtomicUsize> {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (counter, release) = (counter.clone(), release.clone());
        async move {
            if req.method() != Method::POST {
                return StatusCode::NOT_FOUND.into_response();
            }
            counter.fetch_add(1, Ordering::Relaxed);
            let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
            let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if sent["stream"] != true {
                let answer = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                    "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}});
                return axum::Json(answer).into_response();
            }
            let chunks = futures_util::stream::unfold((0u32, release, false), |(n, mut release, done)| async move {
                if done {
                    return None;
                }
                if *release.borrow() {
                    let end = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                                     "usage": {"prompt_tokens": 1, "completion_tokens": n}});
                    let frame = Bytes::from(format!("data: {end}\n\ndata: [DONE]\n\n"));
                    return Some((Ok::<_, std::io::Error>(frame), (n, release, true)));
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), release.changed()).await;
                let chunk = json!({"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": null}]});
                Some((Ok(Bytes::from(format!("data: {chunk}\n\n"))), (n + 1, release, false)))
            });
            ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(chunks)).into_response()
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    hits
}

/// Streams a chat through the server; returns (content chunks, ended with `[DONE]` after a
/// finish_reason).
/// Two held streams through the server at `base`, the second sent once the first reached an
/// engine (`hits` counts what the stubs got), so the second goes to the other, idle instance: two
/// requests chosen at the same instant can both see both instances idle and take the same one.
async fn two_held_streams(
    base: &str,
    key: &str,
    hits: impl Fn() -> usize,
) -> Vec<tokio::task::JoinHandle<(usize, bool)>> {
    let before = hits();
    let first = tokio::spawn(stream_chat(base.to_owned(), key.to_owned()));
    wait_until("the first stream reaching an engine", || hits() > before).await;
    vec![first, tokio::spawn(stream_chat(base.to_owned(), key.to_owned()))]
}

async fn stream_chat(base: String, key: String) -> (usize, bool) {
    // Each its own prompt: under the default `prefix_aware` a new prompt goes to the least busy
    // instance, so two held streams land one on each (as with least-outstanding).
    static SENT: AtomicUsize = AtomicUsize::new(0);
    let n = SENT.fetch_add(1, Ordering::Relaxed);
    let body = json!({"model": "held", "messages": [{"role": "user", "content": format!("hi {n}")}], "stream": true});
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap_or_default();
    stream_complete(&text)
}

/// Content chunks of an SSE chat stream, and whether it ended properly (a finish_reason, then
/// `[DONE]`, and no error event).
pub(crate) fn stream_complete(text: &str) -> (usize, bool) {
    let events: Vec<&str> = text.split("\n\n").filter_map(|e| e.trim().strip_prefix("data: ")).collect();
    let chunks = events.iter().filter(|e| e.contains("\"content\"")).count();
    let finished = events.iter().any(|e| {
        serde_json::from_str::<Value>(e)
            .is_ok_and(|v| v["choices"].as_array().is_some_and(|c| c.iter().any(|c| c["finish_reason"].is_string())))
    });
    let errored = events.iter().any(|e| e.contains("\"error\""));
    (chunks, finished && !errored && events.last() == Some(&"[DONE]"))
}

/// The deployment's spec as a PUT takes it, edited by `edit`.
pub(crate) async fn edit_model(s: &TestServer, id: i64, query: &str, edit: impl FnOnce(&mut Value)) {
    let (_, mut spec) = s.get(&format!("/v2/models/{id}")).await;
    for k in ["id", "version", "created_at", "updated_at"] {
        spec.as_object_mut().expect("object").remove(k);
    }
    edit(&mut spec);
    let (status, body) = s.put(&format!("/v2/models/{id}{query}"), spec).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

pub(crate) fn count_state(items: &[Value], state: &str) -> usize {
    items.iter().filter(|i| i["state"] == state).count()
}

async fn a_held_stream_outlives_a_scale_down_and_the_timeout_ends_a_drain(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("drainer", (46700, 46739))).await;
    let body = json!({"name": "held", "source": "local_path", "local_path": "/", "backend": "sleeper-custom",
                      "replicas": 2});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["drain_timeout"], 600, "the default drain timeout: {m}");
    let id = m["id"].as_i64().expect("id");
    let items = wait_models_instances(&s, id, "2 running", |i| i.len() == 2 && count_state(i, "running") == 2).await;
    // The sleeper never listens on its port: a stub engine of the test's does, where the gateway dials.
    let (release, released) = tokio::sync::watch::channel(false);
    let mut hits = std::collections::BTreeMap::new();
    for i in &items {
        let port = i["port"].as_u64().expect("port") as u16;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the instance's port");
        let hit = stub_engine(listener, released.clone());
        hits.insert(i["id"].as_i64().expect("id"), (hit, i["pid"].as_i64().expect("pid")));
    }
    let key = s.api_key(json!({"name": "drain", "scope": ["inference"]})).await;
    let streams = two_held_streams(&s.base, &key, || hits.values().map(|(h, _)| h.load(Ordering::Relaxed)).sum()).await;
    wait_until("both stubs streaming", || hits.values().all(|(h, _)| h.load(Ordering::Relaxed) == 1)).await;

    // Scale down: the newer instance goes, draining while its stream runs.
    edit_model(&s, id, "", |m| m["replicas"] = json!(1)).await;
    let (kept_id, gone_id) = (*hits.keys().min().expect("ids"), *hits.keys().max().expect("ids"));
    let (kept_pid, gone_pid) = (hits[&kept_id].1, hits[&gone_id].1);
    let draining = crate::workers::wait_instance(&s, gone_id, "draining", |i| i["state"] == "draining").await;
    assert_eq!(draining["in_flight"], 1, "{draining:#}");
    assert!(draining["drain_started_at"].is_string(), "{draining:#}");
    // New requests go to the instance that stays only.
    let http = reqwest::Client::new();
    for _ in 0..4 {
        let body = json!({"model": "held", "messages": [{"role": "user", "content": "hi"}]});
        let res = http.post(s.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.expect("chat");
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(hits[&gone_id].0.load(Ordering::Relaxed), 1, "a draining instance got a new request");
    assert_eq!(hits[&kept_id].0.load(Ordering::Relaxed), 5);
    let metrics = reqwest::get(s.url("/metrics")).await.expect("metrics").text().await.unwrap_or_default();
    assert!(metrics.contains(&format!("ferrostack_instance_in_flight{{instance_id=\"{gone_id}\"}} 1")), "{metrics}");
    // The stream holds it: still draining after passes of the controller (several per second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, still) = s.get(&format!("/v2/model-instances/{gone_id}")).await;
    assert_eq!((status, still["state"].as_str()), (StatusCode::OK, Some("draining")), "{still:#}");
    assert!(alive(gone_pid), "the draining instance's engine was stopped");

    // The streams end: both complete; then the drained instance and its engine go.
    release.send_replace(true);
    for stream in streams {
        let (chunks, complete) = stream.await.expect("stream task");
        assert!(complete && chunks >= 1, "a stream did not complete ({chunks} chunks)");
    }
    wait_models_instances(&s, id, "the drained instance gone", |i| i.len() == 1 && i[0]["id"] == kept_id).await;
    wait_until("its engine stopped", || !alive(gone_pid)).await;

    // A drain that outlasts the deployment's timeout ends there: held again, scaled to zero with a
    // 1 s timeout, the instance goes while its stream still runs.
    release.send_replace(false);
    edit_model(&s, id, "", |m| m["drain_timeout"] = json!(1)).await;
    let held = tokio::spawn(stream_chat(s.base.clone(), key.clone()));
    wait_until("the stub streaming", || hits[&kept_id].0.load(Ordering::Relaxed) == 6).await;
    edit_model(&s, id, "", |m| m["replicas"] = json!(0)).await;
    wait_models_instances(&s, id, "stopped at the drain timeout", |i| i.is_empty()).await;
    assert!(!held.is_finished(), "the stream ended before the instance was stopped");
    wait_until("its engine stopped", || !alive(kept_pid)).await;
    release.send_replace(true);
    let _ = held.await;

    // Deleting the deployment drains its instance too: a held stream completes, then it goes.
    release.send_replace(false);
    edit_model(&s, id, "", |m| {
        m["drain_timeout"] = json!(600);
        m["replicas"] = json!(1);
    })
    .await;
    let items = wait_models_instances(&s, id, "1 running", |i| i.len() == 1 && count_state(i, "running") == 1).await;
    let (last_id, last_pid) = (items[0]["id"].as_i64().expect("id"), items[0]["pid"].as_i64().expect("pid"));
    let port = items[0]["port"].as_u64().expect("port") as u16;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the instance's port");
    let hit = stub_engine(listener, released.clone());
    let held = tokio::spawn(stream_chat(s.base.clone(), key.clone()));
    wait_until("the stub streaming", || hit.load(Ordering::Relaxed) == 1).await;
    assert_eq!(s.delete(&format!("/v2/models/{id}")).await.0, StatusCode::OK);
    let draining = crate::workers::wait_instance(&s, last_id, "draining after its deployment's delete", |i| {
        i["state"] == "draining"
    })
    .await;
    assert_eq!((draining["in_flight"].as_u64(), draining["drain_timeout"].as_u64()), (Some(1), Some(600)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(alive(last_pid) && !held.is_finished(), "the deleted deployment's engine stopped under a stream");
    release.send_replace(true);
    let (chunks, complete) = held.await.expect("stream task");
    assert!(complete && chunks >= 1, "the stream did not complete ({chunks} chunks)");
    wait_until("the deleted deployment's engine stopped", || !alive(last_pid)).await;
    let (status, _) = s.get(&format!("/v2/model-instances/{last_id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the drained instance of a deleted deployment stays");
    worker.shutdown().await;
}

fn alive(pid: i64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z")
}

/// Polls `cond` every 50 ms; panics after 60 s (a hang, not a timing assertion).
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a [`faulty`] upstream treats a request.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Reads it and closes the connection without a byte of answer.
    Drop,
    /// Sends the headers and one chunk of a stream, then closes.
    AnswerThenDie,
    /// Drops the first request, answers the others.
    DropFirst,
}

/// An upstream speaking raw HTTP/1.1 with a [`Fault`]. Counts the requests it read.
async fn faulty(fault: Fault) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if fault == Fault::DropFirst && n > 0 {
                    let body = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                    return;
                }
                if fault == Fault::AnswerThenDie {
                    let head =
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                    let chunk = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n";
                    let frame = format!("{head}{:x}\r\n{chunk}\r\n", chunk.len());
                    let _ = conn.write_all(frame.as_bytes()).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // Dropped: closed under the request.
            });
        }
    });
    (addr, hits)
}

async fn healthy() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_release, released) = tokio::sync::watch::channel(true);
    (addr, stub_engine(listener, released))
}

fn route(endpoints: &[(i64, std::net::SocketAddr)]) -> Route {
    let instances: Vec<(i64, String)> = endpoints.iter().map(|(id, a)| (*id, a.to_string())).collect();
    crate::support::one_target_route(1, "m", ferrostack::gateway::snapshot::LoadBalancing::LeastOutstanding, &instances)
}

/// One chat through the gateway layer: (status, whether the answer is whole: read to its end with
/// no error event in it), or the gateway's error.
async fn gateway_chat(gw: &Gateway, stream: bool) -> Result<(u16, bool), String> {
    let (parts, ()) = Request::builder()
        .method(Method::POST)
        .uri("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(())
        .expect("request")
        .into_parts();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream});
    let res = gw.openai(&Caller::default(), parts, Bytes::from(body.to_string())).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.map_err(|e| e.to_string())?;
    Ok((status, !String::from_utf8_lossy(&body).contains("\"error\"")))
}

/// The retry rule through the gateway layer: a request whose connection was closed before any
/// answer byte goes to another instance (the client never sees the failure); one whose answer
/// began is never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_resent_only_before_its_answer_began() {
    let (gw, _usage) = Gateway::new().expect("gateway");
    let (dropper, dropped) = faulty(Fault::Drop).await;
    let (good, good_hits) = healthy().await;
    gw.publish(Snapshot::new(vec![route(&[(1, dropper), (2, good)])]));
    for n in 0..6 {
        assert_eq!(gateway_chat(&gw, false).await, Ok((200, true)), "request {n}");
    }
    assert!(dropped.load(Ordering::Relaxed) >= 1, "the dropping instance was never tried");
    assert_eq!(good_hits.load(Ordering::Relaxed), 6);

    let (breaker, broke) = faulty(Fault::AnswerThenDie).await;
    let (good, good_hits) = healthy().await;
    let (gw, _usage) = Gateway::new().expect("gateway");
    gw.publish(Snapshot::new(vec![route(&[(3, breaker), (4, good)])]));
    let mut cut = 0;
    for _ in 0..4 {
        match gateway_chat(&gw, true).await {
            Ok((200, true)) => {}
            Ok((200, false)) => cut += 1,
            other => panic!("{other:?}"),
        }
    }
    let (b, g) = (broke.load(Ordering::Relaxed), good_hits.load(Ordering::Relaxed));
    assert!(b >= 1 && cut == b, "{b} answers began and broke, {cut} reached the client cut");
    assert_eq!(b + g, 4, "a request whose answer began was sent again");

    // A lone instance whose connection closes before the answer (a pooled connection its engine
    // closed as it was reused) is asked once more on a fresh one.
    let (flaky, tries) = faulty(Fault::DropFirst).await;
    let (lone, _usage) = Gateway::new().expect("gateway");
    lone.publish(Snapshot::new(vec![route(&[(5, flaky)])]));
    assert_eq!(gateway_chat(&lone, false).await, Ok((200, true)));
    assert_eq!(tries.load(Ordering::Relaxed), 2);

    // A draining instance is withdrawn at once: with only it left, a request finds no instance.
    gw.publish(Snapshot::new(vec![route(&[(4, good)])]).with_draining([4]));
    assert!(gateway_chat(&gw, false).await.is_err_and(|e| e.contains("no running instance")));
    assert_eq!(good_hits.load(Ordering::Relaxed), g);
}

/// Until the deployment has `n` running instances of spec `hash` (any if None), none draining
/// and nothing else.
pub(crate) async fn settled(s: &TestServer, id: i64, n: usize, hash: Option<&str>) -> Vec<Value> {
    wait_models_instances(s, id, &format!("{n} running"), |i| {
        i.len() == n
            && count_state(i, "running") == n
            && hash.is_none_or(|h| i.iter().all(|x| x["spec_hash"].as_str() == Some(h)))
    })
    .await
}

/// Two servers on one PostgreSQL: a stream that runs through the server that does not lead holds
/// the drain of its instance (the leader knows of it only from the other server's share), and the
/// instance goes once it has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_through_another_server_holds_the_drain() {
    if !crate::support::postgres_available() {
        return;
    }
    let leader = TestServer::start(DbKind::Postgres).await;
    let other = leader.another_on_the_same_database().await;
    leader.login_admin().await;
    import_backend(&leader, SLEEPER_YAML).await;
    let wdir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&leader, wdir.path(), &worker_options("shared", (46790, 46799))).await;
    let body = json!({"name": "held", "source": "local_path", "local_path": "/", "backend": "sleeper-custom",
                      "replicas": 2});
    let (status, m) = leader.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let items = wait_models_instances(&leader, id, "2 running", |i| count_state(i, "running") == 2).await;
    let (release, released) = tokio::sync::watch::channel(false);
    let mut hits = std::collections::BTreeMap::new();
    for i in &items {
        let port = i["port"].as_u64().expect("port") as u16;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the instance's port");
        hits.insert(i["id"].as_i64().expect("id"), stub_engine(listener, released.clone()));
    }
    let key = leader.api_key(json!({"name": "drain", "scope": ["inference"]})).await;
    // The other server routes once its snapshot has both instances: one held stream on each.
    let http = reqwest::Client::new();
    wait_until_async("the other server routing", || async {
        let res = http.get(other.url("/v1/models")).bearer_auth(&key).send().await;
        res.map(|r| r.status() == StatusCode::OK).unwrap_or(false)
    })
    .await;
    let streams = two_held_streams(&other.base, &key, || hits.values().map(|h| h.load(Ordering::Relaxed)).sum()).await;
    wait_until("both stubs streaming", || hits.values().all(|h| h.load(Ordering::Relaxed) == 1)).await;

    edit_model(&leader, id, "", |m| m["replicas"] = json!(1)).await;
    let gone_id = *hits.keys().max().expect("ids");
    crate::workers::wait_instance(&leader, gone_id, "draining, its stream counted through the other server", |i| {
        i["state"] == "draining" && i["in_flight"] == 1
    })
    .await;
    // Several share rounds later it still drains: the leader waits for the other server's stream.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, still) = leader.get(&format!("/v2/model-instances/{gone_id}")).await;
    assert_eq!((status, still["state"].as_str()), (StatusCode::OK, Some("draining")), "{still:#}");

    release.send_replace(true);
    for stream in streams {
        let (chunks, complete) = stream.await.expect("stream task");
        assert!(complete && chunks >= 1, "a stream did not complete ({chunks} chunks)");
    }
    wait_models_instances(&leader, id, "the drained instance gone", |i| i.len() == 1 && i[0]["id"] != gone_id).await;
    worker.shutdown().await;
}

/// Polls `cond` every 100 ms; panics after 60 s (a hang, not a timing assertion).
pub(crate) async fn wait_until_async<F: std::future::Future<Output = bool>>(what: &str, cond: impl Fn() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A worker put into maintenance with `drain`: each instance on it is replaced on another worker
/// first, then drains and stops; the deployment never has fewer instances serving than it asks.
async fn maintenance_with_drain_moves_instances_away(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    let (da, db) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let a = start_worker(&s, da.path(), &worker_options("leaving", (46800, 46809))).await;
    let body = json!({"name": "moved", "source": "local_path", "local_path": "/", "backend": "sleeper-custom",
                      "replicas": 2});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let before = settled(&s, id, 2, None).await;
    let b = start_worker(&s, db.path(), &worker_options("staying", (46810, 46819))).await;
    // Through the CLI's verb.
    let key = s.api_key(json!({"name": "cli"})).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferrostack"))
        .args(["maintenance", "leaving", "on", "--drain"])
        .env("FERROSTACK_SERVER_URL", &s.base)
        .env("FERROSTACK_API_KEY", &key)
        .output()
        .await
        .expect("run ferrostack");
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("move to other workers"), "{said}");
    let (_, w) = s.get(&format!("/v2/workers/{}", a.worker_id)).await;
    assert_eq!((w["maintenance"]["enabled"].as_bool(), w["maintenance"]["drain"].as_bool()), (Some(true), Some(true)));
    let mut saw_draining = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, list) = s.get(&format!("/v2/model-instances?model_id={id}")).await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let running = count_state(&items, "running");
        saw_draining |= items.iter().any(|i| i["state"] == "draining");
        assert!(running >= 2, "fewer than 2 running while moving: {list:#}");
        if items.len() == 2 && running == 2 && items.iter().all(|i| i["worker_id"] == b.worker_id) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never moved: {list:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_draining, "the instances on the worker in maintenance did not drain");
    for i in &before {
        let pid = i["pid"].as_i64().expect("pid");
        wait_until("the engines on the worker in maintenance stopped", || !alive(pid)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// A request that reached the engine without a gateway (straight to its port) holds the drain too:
/// llama.cpp's `/slots` says a slot is processing, so the instance stays draining (and its engine
/// runs) until it says none is.
async fn an_engine_still_running_requests_holds_its_drain(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("slots", (46820, 46829))).await;
    let body = json!({"name": "slotted", "source": "local_path", "local_path": "/", "backend": "sleeper-custom",
                      "replicas": 1});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let items = wait_models_instances(&s, id, "1 running", |i| count_state(i, "running") == 1).await;
    let (iid, pid) = (items[0]["id"].as_i64().expect("id"), items[0]["pid"].as_i64().expect("pid"));
    // llama.cpp's /slots as the engine on the instance's port: one slot busy until told otherwise.
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let asked = Arc::new(AtomicUsize::new(0));
    let (b, a) = (busy.clone(), asked.clone());
    let app = axum::Router::new().route(
        "/slots",
        axum::routing::get(move || {
            let (b, a) = (b.clone(), a.clone());
            async move {
                a.fetch_add(1, Ordering::Relaxed);
                axum::Json(
                    json!([{"id": 0, "is_processing": false}, {"id": 1, "is_processing": b.load(Ordering::Relaxed)}]),
                )
            }
        }),
    );
    let port = items[0]["port"].as_u64().expect("port") as u16;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the instance's port");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    edit_model(&s, id, "", |m| m["replicas"] = json!(0)).await;
    crate::workers::wait_instance(&s, iid, "draining", |i| i["state"] == "draining").await;
    wait_until("the leader asking the engine", || asked.load(Ordering::Relaxed) >= 2).await;
    let (status, still) = s.get(&format!("/v2/model-instances/{iid}")).await;
    assert_eq!((status, still["state"].as_str()), (StatusCode::OK, Some("draining")), "{still:#}");
    assert!(alive(pid), "stopped while its engine said a slot was processing");
    busy.store(false, Ordering::Relaxed);
    wait_models_instances(&s, id, "the drained instance gone", |i| i.is_empty()).await;
    wait_until("its engine stopped", || !alive(pid)).await;
    worker.shutdown().await;
}

/// A worker's clean stop (what SIGTERM does: `RunningWorker::drain`, then `shutdown`): its instance
/// is replaced on the other worker first, then drains; a stream held on it completes; the worker
/// is in maintenance until it starts again, and its start ends that maintenance.
async fn a_worker_stopping_cleanly_moves_and_drains_its_instances(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    let (da, db) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let opts =
        ferrostack::worker::WorkerOptions { shutdown_drain_timeout: 120, ..worker_options("stopping", (46830, 46839)) };
    let a = start_worker(&s, da.path(), &opts).await;
    let body = json!({"name": "held", "source": "local_path", "local_path": "/", "backend": "sleeper-custom",
                      "replicas": 1});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let first = settled(&s, id, 1, None).await;
    let (first_id, first_pid) = (first[0]["id"].as_i64().expect("id"), first[0]["pid"].as_i64().expect("pid"));
    let b = start_worker(&s, db.path(), &worker_options("staying-up", (46840, 46849))).await;
    let (release, released) = tokio::sync::watch::channel(false);
    let port = first[0]["port"].as_u64().expect("port") as u16;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the instance's port");
    let hit = stub_engine(listener, released.clone());
    let key = s.api_key(json!({"name": "drain", "scope": ["inference"]})).await;
    let held = tokio::spawn(stream_chat(s.base.clone(), key.clone()));
    wait_until("the stub streaming", || hit.load(Ordering::Relaxed) == 1).await;

    let watch = async {
        // Moved first: a replacement runs on the other worker before the instance drains.
        let moved = wait_models_instances(&s, id, "replaced on the other worker, then draining", |i| {
            i.len() == 2
                && i.iter().any(|x| x["worker_id"] == b.worker_id && x["state"] == "running")
                && i.iter().any(|x| x["id"] == first_id && x["state"] == "draining")
        })
        .await;
        let (_, w) = s.get(&format!("/v2/workers/{}", a.worker_id)).await;
        let m = &w["maintenance"];
        assert_eq!(
            (m["enabled"].as_bool(), m["drain"].as_bool(), m["until_restart"].as_bool()),
            (Some(true), Some(true), Some(true)),
            "{w:#}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(alive(first_pid) && !held.is_finished(), "the stopping worker's engine stopped under a stream");
        release.send_replace(true);
        moved
    };
    let ((), moved) = tokio::join!(a.drain(), watch);
    let (chunks, complete) = held.await.expect("stream task");
    assert!(complete && chunks >= 1, "the stream did not complete ({chunks} chunks)");
    assert!(!alive(first_pid), "drain returned with the engine still running");
    let items = settled(&s, id, 1, None).await;
    assert_eq!(items[0]["worker_id"], b.worker_id, "{moved:#?}");
    a.shutdown().await;

    // Started again: the maintenance its stop began is over.
    let a = start_worker(&s, da.path(), &opts).await;
    let (_, w) = s.get(&format!("/v2/workers/{}", a.worker_id)).await;
    assert_eq!(w["maintenance"]["enabled"], false, "{w:#}");
    a.shutdown().await;
    b.shutdown().await;
}

/// A worker alone, stopping cleanly with three replicas that have nowhere else to go: they drain
/// one at a time, below `replicas`, and the stop ends once they have, not at its 600 s timeout
/// (found by bench/prefix-routing.sh, whose `ferrostack start` waited out the timeout).
async fn a_lone_worker_stopping_cleanly_empties_without_waiting_for_room(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let opts =
        ferrostack::worker::WorkerOptions { shutdown_drain_timeout: 600, ..worker_options("alone", (46900, 46909)) };
    let a = start_worker(&s, dir.path(), &opts).await;
    let body = json!({"name": "three", "source": "local_path", "local_path": "/", "backend": "sleeper-custom",
                      "replicas": 3});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let pids: Vec<i64> = settled(&s, id, 3, None).await.iter().map(|i| i["pid"].as_i64().expect("pid")).collect();
    // Far under the timeout: each idle drain takes about a controller pass.
    let stopped = tokio::time::timeout(Duration::from_secs(120), a.drain()).await;
    let (_, left) = s.get(&format!("/v2/model-instances?model_id={id}")).await;
    assert!(stopped.is_ok(), "the stop still waited for room that never comes: {left:#}");
    assert!(pids.iter().all(|p| !alive(*p)), "an engine outlived its worker's drain: {left:#}");
    a.shutdown().await;
}

/// A long answer (a 60 s stream, its tokens every 100 ms) outlives the scale-down that removes
/// its instance: nothing on the way (gateway, drain, worker) cuts it at 30 or 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixty_second_stream_outlives_a_scale_down() {
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("long", (46850, 46859))).await;
    let body = json!({"name": "held", "source": "local_path", "local_path": "/", "backend": "sleeper-custom",
                      "replicas": 1});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let items = settled(&s, id, 1, None).await;
    let (iid, pid) = (items[0]["id"].as_i64().expect("id"), items[0]["pid"].as_i64().expect("pid"));
    let (release, released) = tokio::sync::watch::channel(false);
    let port = items[0]["port"].as_u64().expect("port") as u16;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the instance's port");
    let hit = stub_engine(listener, released);
    let key = s.api_key(json!({"name": "long", "scope": ["inference"]})).await;
    let started = tokio::time::Instant::now();
    let held = tokio::spawn(stream_chat(s.base.clone(), key));
    wait_until("the stub streaming", || hit.load(Ordering::Relaxed) == 1).await;
    edit_model(&s, id, "", |m| m["replicas"] = json!(0)).await;
    crate::workers::wait_instance(&s, iid, "draining", |i| i["state"] == "draining").await;
    tokio::time::sleep_until(started + Duration::from_secs(60)).await;
    assert!(alive(pid) && !held.is_finished(), "the stream or its engine ended before 60 s");
    release.send_replace(true);
    let (chunks, complete) = held.await.expect("stream task");
    assert!(complete && chunks >= 300, "the 60 s stream did not complete ({chunks} chunks)");
    wait_models_instances(&s, id, "the drained instance gone", |i| i.is_empty()).await;
    wait_until("its engine stopped", || !alive(pid)).await;
    worker.shutdown().await;
}
