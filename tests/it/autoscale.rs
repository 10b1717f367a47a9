//! Autoscaling (docs/autoscaling.md): the fields are validated naming the field and GPUStack 2.3's
//! `scaling_schedule` deploys unchanged; a schedule window sets replicas (the leader's step on a
//! clock the test chooses, and the live loop on the real one); a real llama.cpp deployment with
//! `min_replicas: 0` scales to zero after its delay, 20 concurrent requests while it sleeps are
//! all answered, load scales it up and quiet back down to zero, with no request lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ferrostack::api::ModelSpec;
use ferrostack::control::autoscaler::Autoscaler;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::support::{DbKind, TestServer, database_url};
use crate::workers::{import_backend, llama, llama_yaml, start_worker, worker_options};

both_dbs!(
    fields_are_validated_and_gpustack_schedules_deploy,
    a_schedule_window_sets_replicas,
    sleeps_wakes_and_scales,
    held_requests_show_as_queued
);

fn local(name: &str) -> Value {
    json!({"name": name, "source": "local_path", "local_path": "/", "replicas": 0})
}

async fn fields_are_validated_and_gpustack_schedules_deploy(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    // (autoscaling or scaling_schedule, the field the 400 names)
    let bad = [
        (json!({"autoscaling": {"min_replicas": 3, "max_replicas": 2}}), "autoscaling.min_replicas"),
        (json!({"autoscaling": {"max_replicas": 0}}), "autoscaling.max_replicas"),
        (json!({"autoscaling": {"max_replicas": 5000}}), "autoscaling.max_replicas"),
        (json!({"autoscaling": {"max_replicas": 2, "target_requests": 0}}), "autoscaling.target_requests"),
        (
            json!({"scaling_schedule": {"enabled": true, "rules": [{"start_cron": "0 8 * * *", "duration_seconds": 60,
                "replicas": 1}]}}),
            "scaling_schedule.baseline_replicas",
        ),
        (
            json!({"scaling_schedule": {"enabled": true, "baseline_replicas": 0, "rules": [
                {"start_cron": "0 25 * * *", "duration_seconds": 60, "replicas": 1}]}}),
            "scaling_schedule.rules[0].start_cron",
        ),
        (
            json!({"scaling_schedule": {"enabled": true, "baseline_replicas": 0, "rules": [
                {"start_cron": "0 8 * * *", "duration_seconds": 40000000, "replicas": 1}]}}),
            "scaling_schedule.rules[0].duration_seconds",
        ),
    ];
    for (extra, field) in bad {
        let mut body = local("bad");
        body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        let (status, err) = s.post("/v2/models", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extra}: {err}");
        assert!(err["message"].as_str().unwrap_or_default().starts_with(field), "{extra}: {err}");
    }
    // GPUStack 2.3's ModelCreate with a schedule (its compatibility sample): kept as sent. A
    // disabled schedule sets nothing.
    let schedule = json!({"enabled": false, "paused": false, "baseline_replicas": 0, "rules": [
        {"start_cron": "0 8 * * *", "duration_seconds": 3600, "replicas": 1, "name": "day"}]});
    let mut body = local("gpustack-shaped");
    body["scaling_schedule"] = schedule.clone();
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let (_, m) = s.get(&format!("/v2/models/{}", m["id"])).await;
    assert_eq!(m["scaling_schedule"], schedule);
    assert_eq!(m["autoscaling"], Value::Null, "absent: off");
    assert!(m.get("queued").is_none(), "not autoscaled: no queued count: {m}");

    // With autoscaling a user's replicas is clamped into the bounds.
    let mut body = local("clamped");
    body["replicas"] = json!(9);
    body["autoscaling"] = json!({"min_replicas": 0, "max_replicas": 2});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["replicas"], 2, "{m}");
    assert_eq!(
        m["autoscaling"],
        json!({"min_replicas": 0, "max_replicas": 2, "target_requests": 4, "scale_down_delay_seconds": 300})
    );
    // …and it is listed by /v1/models although nothing runs: asleep.
    let key = s.api_key(json!({"name": "lister", "scope": ["inference"]})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let models: Value = reqwest::Client::new()
            .get(s.url("/v1/models"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("models")
            .json()
            .await
            .expect("json");
        let listed = models["data"].as_array().cloned().unwrap_or_default();
        // The gateway's snapshot follows commits a moment later.
        if listed.iter().any(|m| m["id"] == "clamped") {
            break listed;
        }
        assert!(tokio::time::Instant::now() < deadline, "an autoscaled model is not listed: {models}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let clamped = listed.iter().find(|m| m["id"] == "clamped").expect("listed");
    assert_eq!(clamped["meta"]["sleeping"], true, "{clamped}");
    assert!(listed.iter().all(|m| m["id"] != "gpustack-shaped"), "a model not autoscaled and not running is not");
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
}

async fn replicas_of(db: &ferrostack::db::Db, id: i64) -> (u32, String) {
    let m = db.get::<ModelSpec>(id).await.expect("model");
    (m.spec.replicas, m.spec.scaling_message.unwrap_or_default())
}

async fn a_schedule_window_sets_replicas(kind: DbKind) {
    // The leader's step on a database of its own, at instants the test chooses.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ferrostack::db::Db::open(&database_url(kind, dir.path()).await).await.expect("db");
    let mut spec: ModelSpec = serde_json::from_value(local("scheduled")).expect("spec");
    spec.scaling_schedule = Some(
        serde_json::from_value(json!({"enabled": true, "baseline_replicas": 1, "rules": [
            {"name": "workday", "start_cron": "0 8 * * 1-5", "duration_seconds": 36000, "replicas": 3},
            {"name": "lunch", "start_cron": "0 12 * * 1-5", "duration_seconds": 3600, "replicas": 5}]}))
        .expect("schedule"),
    );
    let id = db.insert(&spec, &ferrostack::db::model_columns(&spec)).await.expect("insert").id;
    let mut scaler = Autoscaler::default();
    // 2026-12-07 is a Monday, 2026-12-05 a Saturday.
    let steps = [
        ("2026-12-07T07:59:00Z", 1, "no window open → baseline"),
        ("2026-12-07T08:00:00Z", 3, "\"workday\""),
        ("2026-12-07T12:00:00Z", 5, "\"lunch\""),
        ("2026-12-07T13:00:00Z", 3, "\"workday\""),
        ("2026-12-07T18:00:00Z", 1, "baseline"),
        ("2026-12-05T09:00:00Z", 1, "baseline"),
    ];
    for (now, want, says) in steps {
        scaler.step(&db, None, at(now), Instant::now()).await.expect("step");
        let (replicas, message) = replicas_of(&db, id).await;
        assert_eq!(replicas, want, "at {now}: {message}");
        assert!(message.contains(says), "at {now}: {message}");
    }
    // Paused: the schedule sets nothing.
    let mut m = db.get::<ModelSpec>(id).await.expect("model");
    if let Some(s) = m.spec.scaling_schedule.as_mut() {
        s.paused = true;
    }
    db.update(id, m.version, &m.spec, &ferrostack::db::model_columns(&m.spec)).await.expect("pause");
    scaler.step(&db, None, at("2026-12-07T12:30:00Z"), Instant::now()).await.expect("step");
    assert_eq!(replicas_of(&db, id).await.0, 1, "a paused schedule moved replicas");
    // With autoscaling an open window is the floor: idle, it holds the window's replicas.
    let mut m = db.get::<ModelSpec>(id).await.expect("model");
    if let Some(s) = m.spec.scaling_schedule.as_mut() {
        s.paused = false;
    }
    m.spec.autoscaling = Some(serde_json::from_value(json!({"min_replicas": 0, "max_replicas": 6})).expect("a"));
    db.update(id, m.version, &m.spec, &ferrostack::db::model_columns(&m.spec)).await.expect("autoscale");
    scaler.step(&db, None, at("2026-12-07T12:30:00Z"), Instant::now()).await.expect("step");
    let (replicas, message) = replicas_of(&db, id).await;
    assert_eq!(replicas, 5, "{message}");
    assert!(message.contains("\"lunch\""), "{message}");
    db.close().await;

    // The live loop on the real clock: a window that is always open (every minute, for an hour).
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let mut body = local("always");
    body["scaling_schedule"] = json!({"enabled": true, "baseline_replicas": 0, "rules": [
        {"name": "always", "start_cron": "* * * * *", "duration_seconds": 3600, "replicas": 2}]});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let m = wait_model(&s, m["id"].as_i64().expect("id"), "scaled by its schedule", |m| m["replicas"] == 2).await;
    assert!(m["scaling_message"].as_str().unwrap_or_default().contains("\"always\""), "{m}");
}

/// Polls a deployment until `pred` holds, or panics after 120 s (a hang, not a timing assertion).
async fn wait_model(s: &TestServer, id: i64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, m) = s.get(&format!("/v2/models/{id}")).await;
        if pred(&m) {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {what}: {m:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls a deployment's `queued` (absent: 0) until `pred` holds, or panics after 60 s.
async fn wait_queued(s: &TestServer, id: i64, what: &str, pred: impl Fn(u64) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, m) = s.get(&format!("/v2/models/{id}")).await;
        if pred(m["queued"].as_u64().unwrap_or(0)) {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {what}: {m:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Without an engine: a request for a sleeping deployment is held (no worker ever runs it), the
/// deployment and the list show it as `queued`, and a client that gives up frees its place.
async fn held_requests_show_as_queued(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let mut body = local("held");
    body["autoscaling"] = json!({"min_replicas": 0, "max_replicas": 1});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let m = wait_queued(&s, id, "answered with queued 0", |n| n == 0).await;
    assert_eq!(m["queued"], 0, "autoscaled: counted, none held: {m}");
    let key = s.api_key(json!({"name": "held", "scope": ["inference"]})).await;
    let http = reqwest::Client::new();
    // The gateway's snapshot follows commits a moment later: until it routes the model a
    // request is refused at once, so ask until one is held.
    let url = s.url("/v1/chat/completions");
    let held = tokio::spawn(async move {
        let body = json!({"model": "held", "messages": [{"role": "user", "content": "hi"}]});
        loop {
            let _ = http.post(&url).bearer_auth(&key).json(&body).send().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    wait_queued(&s, id, "a held request counted", |n| n == 1).await;
    let (_, list) = s.get("/v2/models").await;
    let listed = list["items"].as_array().and_then(|l| l.iter().find(|m| m["id"] == id).cloned());
    assert_eq!(listed.map(|m| m["queued"].clone()), Some(json!(1)), "{list}");
    held.abort();
    wait_queued(&s, id, "the given-up request's place freed", |n| n == 0).await;
}

/// One chat, plain or streamed: `Ok` when answered whole.
async fn chat(http: &reqwest::Client, base: &str, key: &str, streamed: bool) -> Result<(), String> {
    let body = json!({"model": "sleepy", "messages": [{"role": "user", "content": "Count to three."}],
                      "max_tokens": 8, "stream": streamed});
    let res = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    if status != StatusCode::OK {
        return Err(format!("{status}: {text}"));
    }
    let whole = if streamed {
        text.contains("\"finish_reason\":\"")
            && text.trim_end().ends_with("data: [DONE]")
            && !text.contains("\"error\"")
    } else {
        serde_json::from_str::<Value>(&text).is_ok_and(|v| v["choices"][0]["message"].is_object())
    };
    if whole { Ok(()) } else { Err(format!("not a whole answer: {text}")) }
}

/// Edits the deployment as a user does: what it read, changed by `change`, PUT back.
async fn edit(s: &TestServer, id: i64, change: impl FnOnce(&mut Value)) {
    let (_, mut spec) = s.get(&format!("/v2/models/{id}")).await;
    for k in ["id", "version", "created_at", "updated_at"] {
        spec.as_object_mut().expect("object").remove(k);
    }
    change(&mut spec);
    let (status, edited) = s.put(&format!("/v2/models/{id}"), spec).await;
    assert_eq!(status, StatusCode::OK, "{edited}");
}

async fn instances(s: &TestServer, id: i64) -> usize {
    let (_, list) = s.get(&format!("/v2/model-instances?model_id={id}")).await;
    list["items"].as_array().map_or(0, Vec::len)
}

async fn sleeps_wakes_and_scales(kind: DbKind) {
    let Some((server, gguf)) = llama() else { return };
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    // HTTP threads for 20 clients at once: llama-server's default on 2 cores is a few, and
    // its HTTP server closes connections it has no thread for under load.
    import_backend(&s, &llama_yaml(&server, "127.0.0.1", "-c 2048 -t 2 -np 2 --threads-http 24")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("scaler", (49100, 49139))).await;
    let body = json!({"name": "sleepy", "source": "local_path", "local_path": gguf, "backend": "llama-cpp-custom",
                      "replicas": 1, "drain_timeout": 30,
                      "autoscaling": {"min_replicas": 1, "max_replicas": 2, "target_requests": 20,
                                      "scale_down_delay_seconds": 2}});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");

    // Running first (min 1), then allowed to sleep: idle for its delay, it scales to zero, and its
    // instance goes (drained: nothing in flight).
    crate::models::wait_models_instances(&s, id, "running", |i| i.len() == 1 && i[0]["state"] == "running").await;
    edit(&s, id, |m| m["autoscaling"]["min_replicas"] = json!(0)).await;
    let m = wait_model(&s, id, "scaled to zero", |m| m["replicas"] == 0).await;
    assert!(m["scaling_message"].as_str().unwrap_or_default().starts_with("scale to zero"), "{m}");
    crate::models::wait_models_instances(&s, id, "no instance", |i| i.is_empty()).await;

    // 20 concurrent requests while asleep, plain and streamed: all answered.
    let key = s.api_key(json!({"name": "wake", "scope": ["inference"]})).await;
    let http = reqwest::Client::new();
    let burst: Vec<_> = (0..20)
        .map(|n| {
            let (http, base, key) = (http.clone(), s.base.clone(), key.clone());
            tokio::spawn(async move { chat(&http, &base, &key, n % 2 == 1).await })
        })
        .collect();
    // Held while it wakes: the deployment counts them.
    wait_queued(&s, id, "held requests counted", |n| n > 0).await;
    let mut failed = Vec::new();
    for b in burst {
        if let Err(e) = b.await.expect("client") {
            failed.push(e);
        }
    }
    assert!(failed.is_empty(), "{} of 20 requests to a sleeping model failed: {failed:#?}", failed.len());
    let (_, m) = s.get(&format!("/v2/models/{id}")).await;
    assert_eq!(m["queued"].as_u64().unwrap_or(0), 0, "all answered, none held: {m}");
    let m = wait_model(&s, id, "awake", |m| m["ready_replicas"].as_u64() >= Some(1)).await;
    assert!(m["replicas"].as_u64() >= Some(1), "{m}");

    // A load ramp: with a target of 1 request per replica (an edit of the live deployment; 20
    // woke one replica, sparing 2 cores two engine starts at once), four clients back to back
    // want 4 replicas: it scales to its max, 2.
    edit(&s, id, |m| m["autoscaling"]["target_requests"] = json!(1)).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, errors) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::<String>::new())));
    let most = Arc::new(AtomicU32::new(0));
    let clients: Vec<_> = (0..4)
        .map(|n| {
            let (http, base, key) = (http.clone(), s.base.clone(), key.clone());
            let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match chat(&http, &base, &key, n % 2 == 1).await {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                            0
                        }
                    };
                }
            })
        })
        .collect();
    let m = wait_model(&s, id, "scaled up under load", |m| {
        most.fetch_max(m["replicas"].as_u64().unwrap_or(0) as u32, Ordering::Relaxed);
        m["replicas"] == 2 && m["ready_replicas"] == 2
    })
    .await;
    let why = m["scaling_message"].as_str().unwrap_or_default();
    assert!(why.starts_with("scale up") || why.starts_with("waking"), "{m}");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let errors = errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(errors.is_empty(), "{} requests failed under load: {errors:#?}", errors.len());
    assert!(ok.load(Ordering::Relaxed) > 0);
    assert!(most.load(Ordering::Relaxed) <= 2, "replicas went above max_replicas");

    // Quiet again: back down to zero, through draining.
    wait_model(&s, id, "scaled back to zero", |m| m["replicas"] == 0).await;
    crate::models::wait_models_instances(&s, id, "no instance", |i| i.is_empty()).await;
    assert_eq!(instances(&s, id).await, 0);
    let metrics = reqwest::get(s.url("/metrics")).await.expect("metrics").text().await.unwrap_or_default();
    assert!(metrics.contains("ferrostack_autoscaler_desired_replicas{model=\"sleepy\"} 0"), "{metrics}");
    worker.shutdown().await;
}

/// Two servers on one PostgreSQL count demand together: a request held by the follower (which
/// does not run the autoscaler) wakes a sleeping deployment through the shares the leader reads,
/// and is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_s_held_request_wakes_the_deployment() {
    let Some((server, gguf)) = llama() else { return };
    if !crate::support::postgres_available() {
        return;
    }
    let leader = TestServer::start(DbKind::Postgres).await;
    let follower = leader.another_on_the_same_database().await;
    let healthz = |s: &TestServer| {
        let http = s.http.clone();
        let url = s.url("/healthz");
        async move { http.get(url).send().await.expect("healthz").json::<Value>().await.expect("json") }
    };
    assert_eq!(healthz(&leader).await["leading"], true, "the first server to start leads");
    assert_eq!(healthz(&follower).await["leading"], false);
    leader.login_admin().await;
    import_backend(&leader, &llama_yaml(&server, "127.0.0.1", "-c 2048 -t 2 -np 2")).await;
    let wdir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&leader, wdir.path(), &worker_options("shared", (49140, 49179))).await;
    let body = json!({"name": "sleepy", "source": "local_path", "local_path": gguf, "backend": "llama-cpp-custom",
                      "replicas": 0, "autoscaling": {"min_replicas": 0, "max_replicas": 1, "target_requests": 4,
                                                     "scale_down_delay_seconds": 2}});
    let (status, m) = leader.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let key = leader.api_key(json!({"name": "shared", "scope": ["inference"]})).await;
    // The follower's gateway knows the route (its snapshot follows the change log).
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let res = http.get(follower.url("/v1/models")).bearer_auth(&key).send().await.expect("models");
        let models: Value = res.json().await.expect("json");
        if models["data"].as_array().is_some_and(|d| d.iter().any(|m| m["id"] == "sleepy")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the follower never listed the model: {models}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two requests through the follower, plain and streamed: held there, counted by the leader.
    let (plain, streamed) =
        tokio::join!(chat(&http, &follower.base, &key, false), chat(&http, &follower.base, &key, true));
    assert_eq!((plain, streamed), (Ok(()), Ok(())));
    let (_, m) = leader.get(&format!("/v2/models/{id}")).await;
    let why = m["scaling_message"].as_str().unwrap_or_default();
    assert!(why.starts_with("waking") || why.starts_with("scale to zero"), "{m}");
    // And back to sleep once quiet.
    wait_model(&leader, id, "asleep again", |m| m["replicas"] == 0).await;
    worker.shutdown().await;
}

mod queue {
    //! The wake queue at the gateway layer: bounded, timed, and released by the first snapshot
    //! with a ready instance (plain and streamed).

    use std::collections::HashMap;
    use std::time::Duration;

    use axum::body::{Body, Bytes};
    use axum::http::{Method, Request, header};
    use ferrostack::gateway::{Caller, Endpoint, Gateway, GatewayError, Route, Snapshot};
    use serde_json::json;

    fn route(instances: Vec<Endpoint>) -> Route {
        let instances: Vec<(i64, String)> = instances.into_iter().map(|e| (e.instance_id, e.addr)).collect();
        crate::support::one_target_route(
            7,
            "m",
            ferrostack::gateway::snapshot::LoadBalancing::LeastOutstanding,
            &instances,
        )
    }

    /// The route with no instance, its deployment 3 autoscaled.
    fn asleep() -> Snapshot {
        Snapshot::new(vec![route(vec![])]).with_wakeable(HashMap::from([(7, vec![3])]))
    }

    async fn chat(gw: Gateway, stream: bool) -> Result<(u16, String), GatewayError> {
        let (parts, ()) = Request::builder()
            .method(Method::POST)
            .uri("/v1/chat/completions")
            .header(header::CONTENT_TYPE, "application/json")
            .body(())
            .expect("request")
            .into_parts();
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream});
        let res = gw.openai(&Caller::default(), parts, Bytes::from(body.to_string())).await?;
        let status = res.status().as_u16();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.expect("body");
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// An engine that answers every chat with `ok`, streamed when asked.
    async fn engine() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
            let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
            let sent: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if sent["stream"] == true {
                let frames = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
                axum::response::Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .body(Body::from(frames))
                    .expect("response")
            } else {
                let answer = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]});
                axum::response::IntoResponse::into_response(axum::Json(answer))
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_until_ready_bounded_and_timed() {
        let (gw, _usage) = Gateway::new().expect("gateway");
        gw.set_wake_limits(2, Duration::from_secs(60));
        gw.publish(asleep());
        // Two held (plain and streamed), a third refused at once: the queue holds two.
        let held: Vec<_> = [false, true].into_iter().map(|s| tokio::spawn(chat(gw.clone(), s))).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !gw.render_metrics().contains("ferrostack_wake_queued{model_id=\"3\"} 2") {
            assert!(tokio::time::Instant::now() < deadline, "never held: {}", gw.render_metrics());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(gw.demand(3, &[]), 2, "held requests are the deployment's demand");
        match chat(gw.clone(), false).await {
            Err(GatewayError::WakeQueueFull { retry_after, .. }) => assert!(retry_after > 0),
            other => panic!("a third request was not refused: {other:?}"),
        }
        assert!(held.iter().all(|h| !h.is_finished()), "a held request ended while asleep");
        // An instance is ready: both are sent, whole.
        let addr = engine().await;
        let ready = route(vec![Endpoint { instance_id: 1, addr: addr.to_string(), auth: None }]);
        gw.publish(Snapshot::new(vec![ready]).with_wakeable(HashMap::from([(7, vec![3])])));
        for (h, stream) in held.into_iter().zip([false, true]) {
            let (status, body) = h.await.expect("task").expect("answered");
            assert_eq!(status, 200, "{body}");
            assert!(body.contains("\"ok\""), "{body}");
            assert_eq!(body.contains("[DONE]"), stream, "{body}");
        }
        assert_eq!(gw.demand(3, &[1]), 0, "nothing held or in flight any more");

        // Asleep again with a short wait limit: a held request times out with 503's error.
        let (gw, _usage) = Gateway::new().expect("gateway");
        gw.set_wake_limits(4, Duration::from_millis(200));
        gw.publish(asleep());
        match chat(gw.clone(), true).await {
            Err(GatewayError::WakeTimeout { retry_after, .. }) => assert!(retry_after > 0),
            other => panic!("not timed out: {other:?}"),
        }
        // A route that is not autoscaled does not wait.
        gw.publish(Snapshot::new(vec![route(vec![])]));
        assert!(matches!(chat(gw.clone(), false).await, Err(GatewayError::NoInstance(_))));
    }
}
