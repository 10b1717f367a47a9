//! Parking (`autoscaling.park_seconds`): on the way to zero the last replica is parked, not
//! stopped; a stand-in engine speaking vLLM's sleep-mode endpoints (`POST /sleep?level=1`,
//! `POST /wake_up`) is put to sleep, and the next request wakes the same instance and engine in
//! place and is answered; an engine without a sleep mode is parked awake; the park time running
//! out stops the engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::response::IntoResponse;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::models::wait_models_instances;
use crate::support::{DbKind, TestServer};
use crate::workers::{SLEEPER_YAML, import_backend, start_worker, wait_instance, worker_options};

both_dbs!(a_parked_replica_sleeps_and_the_next_request_wakes_it_in_place);

/// A stand-in for vLLM with `--enable-sleep-mode` and `VLLM_SERVER_DEV_MODE=1`: `/sleep` and
/// `/wake_up` (counted), chats answered only while awake (503 while asleep, as no engine would
/// answer then). `sleep_mode` false: `/sleep` is 404, as on an engine without it.
#[derive(Default)]
struct StandIn {
    asleep: AtomicBool,
    sleeps: AtomicUsize,
    wakes: AtomicUsize,
    chats_while_asleep: AtomicUsize,
    sleep_mode: AtomicBool,
}

fn serve(listener: tokio::net::TcpListener, engine: Arc<StandIn>) {
    let (e1, e2, e3) = (engine.clone(), engine.clone(), engine);
    let app = axum::Router::new()
        .route(
            "/sleep",
            axum::routing::post(move |q: axum::extract::Query<std::collections::HashMap<String, String>>| {
                let e = e1.clone();
                async move {
                    if !e.sleep_mode.load(Ordering::Relaxed) {
                        return StatusCode::NOT_FOUND;
                    }
                    assert_eq!(q.get("level").map(String::as_str), Some("1"), "sleep level");
                    e.sleeps.fetch_add(1, Ordering::Relaxed);
                    e.asleep.store(true, Ordering::Relaxed);
                    StatusCode::OK
                }
            }),
        )
        .route(
            "/wake_up",
            axum::routing::post(move || {
                let e = e2.clone();
                async move {
                    e.wakes.fetch_add(1, Ordering::Relaxed);
                    e.asleep.store(false, Ordering::Relaxed);
                    StatusCode::OK
                }
            }),
        )
        .fallback(move || {
            let e = e3.clone();
            async move {
                if e.asleep.load(Ordering::Relaxed) {
                    e.chats_while_asleep.fetch_add(1, Ordering::Relaxed);
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                axum::Json(json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "awake"},
                                  "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}))
                .into_response()
            }
        });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

async fn put_autoscaling(s: &TestServer, id: i64, autoscaling: Value) {
    let (_, mut m) = s.get(&format!("/v2/models/{id}")).await;
    for k in ["id", "version", "created_at", "updated_at"] {
        m.as_object_mut().expect("object").remove(k);
    }
    m["autoscaling"] = autoscaling;
    let (status, body) = s.put(&format!("/v2/models/{id}"), m).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn alive(pid: i64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

async fn a_parked_replica_sleeps_and_the_next_request_wakes_it_in_place(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("parker", (46880, 46889))).await;
    // Refused where parking cannot apply: a replica parks only on the way to zero.
    let bad = json!({"name": "nope", "source": "local_path", "local_path": "/", "backend": "sleeper-custom",
                     "autoscaling": {"min_replicas": 1, "max_replicas": 1, "park_seconds": 60}});
    let (status, err) = s.post("/v2/models", bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(err.to_string().contains("autoscaling.park_seconds"), "names the field: {err}");

    let autoscaling = |park: u32| {
        json!({"min_replicas": 0, "max_replicas": 1, "target_requests": 1, "scale_down_delay_seconds": 1,
               "park_seconds": park})
    };
    let body = json!({"name": "parky", "source": "local_path", "local_path": "/", "backend": "sleeper-custom",
                      "replicas": 1, "autoscaling": autoscaling(300)});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["autoscaling"]["park_seconds"], 300, "{m}");
    let id = m["id"].as_i64().expect("id");
    let items = wait_models_instances(&s, id, "1 running", |i| i.len() == 1 && i[0]["state"] == "running").await;
    let (iid, pid) = (items[0]["id"].as_i64().expect("id"), items[0]["pid"].as_i64().expect("pid"));
    let engine = Arc::new(StandIn::default());
    engine.sleep_mode.store(true, Ordering::Relaxed);
    let port = items[0]["port"].as_u64().expect("port") as u16;
    serve(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the instance's port"), engine.clone());

    // Idle past the scale-down delay: to zero, so the replica parks and its engine goes to sleep.
    let parked =
        wait_instance(&s, iid, "parked and asleep", |i| i["state"] == "parked" && i["asleep_since"].is_string()).await;
    assert!(parked["state_message"].as_str().is_some_and(|m| m.contains("asleep")), "{parked:#}");
    assert_eq!(engine.sleeps.load(Ordering::Relaxed), 1);
    let (_, m) = s.get(&format!("/v2/models/{id}")).await;
    assert_eq!((m["replicas"].as_u64(), m["ready_replicas"].as_u64()), (Some(0), Some(0)), "{m:#}");

    // A request wakes the same instance and engine, and is answered by it awake.
    let key = s.api_key(json!({"name": "park", "scope": ["inference"]})).await;
    let chat = json!({"model": "parky", "messages": [{"role": "user", "content": "hi"}]});
    let res = reqwest::Client::new().post(s.url("/v1/chat/completions")).bearer_auth(&key).json(&chat).send().await;
    let res = res.expect("chat");
    let status = res.status();
    let answer: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], "awake", "{answer}");
    assert_eq!((engine.wakes.load(Ordering::Relaxed), engine.chats_while_asleep.load(Ordering::Relaxed)), (1, 0));
    let items = wait_models_instances(&s, id, "awake", |i| i.len() == 1 && i[0]["state"] == "running").await;
    assert_eq!((items[0]["id"].as_i64(), items[0]["pid"].as_i64()), (Some(iid), Some(pid)), "woken in place");
    assert!(items[0]["asleep_since"].is_null(), "{items:#?}");

    // An engine without a sleep mode is parked awake; its park time running out stops it.
    engine.sleep_mode.store(false, Ordering::Relaxed);
    put_autoscaling(&s, id, autoscaling(2)).await;
    wait_instance(&s, iid, "parked (awake)", |i| i["state"] == "parked").await;
    wait_models_instances(&s, id, "stopped when its park time ran out", |i| i.is_empty()).await;
    assert_eq!(engine.sleeps.load(Ordering::Relaxed), 1, "no second sleep");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while alive(pid) {
        assert!(tokio::time::Instant::now() < deadline, "the engine outlived its park time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await;
}
