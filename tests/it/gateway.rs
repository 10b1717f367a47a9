//! The gateway: balancing, failover and slow streams against in-process fake upstreams (the
//! gateway layer with a hand-made snapshot); OpenAI-shaped errors, limits, routes, usage and
//! metrics through the server; and the official `openai` client against real llama.cpp.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use ferrostack::gateway::{Caller, Gateway, Route, Snapshot};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::support::{DbKind, TestServer};
use crate::workers::{import_backend, llama, llama_backend_yaml, start_worker, worker_options};

both_dbs!(errors_limits_routes_usage_and_metrics, the_usage_writer_writes_what_is_left_when_finished);

/// A fake upstream: answers every request with its name, counting them; `delay` before headers.
struct Upstream {
    addr: std::net::SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn upstream(name: &'static str) -> Upstream {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            let path = req.uri().path().to_string();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
            let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            axum::Json(json!({"replica": name, "path": path, "model": sent["model"],
                               "usage": {"prompt_tokens": 3, "completion_tokens": 2}}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Upstream { addr, hits, stop: Some(stop), task }
}

fn route(endpoints: &[(i64, std::net::SocketAddr)]) -> Route {
    let instances: Vec<(i64, String)> = endpoints.iter().map(|(id, a)| (*id, a.to_string())).collect();
    crate::support::one_target_route(
        1,
        "fake",
        ferrostack::gateway::snapshot::LoadBalancing::LeastOutstanding,
        &instances,
    )
}

/// The gateway layer alone, served on a port: no auth, errors as plain status codes.
async fn serve_gateway(gw: Gateway) -> String {
    let app = axum::Router::new().fallback(move |req: Request| {
        let gw = gw.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
            match gw.openai(&Caller::default(), parts, body).await {
                Ok(res) => res,
                Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn chat(http: &reqwest::Client, base: &str) -> (StatusCode, String) {
    let res = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "fake", "messages": []}))
        .send()
        .await
        .expect("request reaches the gateway");
    let status = res.status();
    (status, res.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_evenly_and_a_killed_one_costs_no_request() {
    let a = upstream("a").await;
    let mut b = upstream("b").await;
    let (gw, _usage) = Gateway::new().expect("gateway");
    gw.publish(Snapshot::new(vec![route(&[(1, a.addr), (2, b.addr)])]));
    let base = serve_gateway(gw.clone()).await;
    let http = reqwest::Client::new();

    // 200 requests, 8 at a time: each replica gets 45-55 %.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, base) = (http.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let (status, body) = chat(&http, &base).await;
                assert_eq!(status, StatusCode::OK, "{body}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let (ha, hb) = (a.hits.load(Ordering::Relaxed), b.hits.load(Ordering::Relaxed));
    assert_eq!(ha + hb, 200);
    assert!((90..=110).contains(&ha), "split {ha}/{hb}");
    assert_eq!((gw.outstanding(1), gw.outstanding(2)), (0, 0), "every request ended");

    // Kill b while 8 clients keep sending: every request still succeeds (on a).
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, base, sent) = (http.clone(), base.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..50 {
                sent.fetch_add(1, Ordering::Relaxed);
                let (status, body) = chat(&http, &base).await;
                if status != StatusCode::OK {
                    failures.push(format!("{status} {body}"));
                }
            }
            failures
        }));
    }
    while sent.load(Ordering::Relaxed) < 100 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = b.stop.take().map(|s| s.send(()));
    let _ = (&mut b.task).await;
    let b_hits_at_kill = b.hits.load(Ordering::Relaxed);
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.expect("client"));
    }
    assert!(failures.is_empty(), "{} of 400 failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert_eq!(b.hits.load(Ordering::Relaxed), b_hits_at_kill, "nothing reached the killed replica");
    assert!(b_hits_at_kill > 100, "b served its share before the kill: {b_hits_at_kill}");
}

/// An upstream that waits `first_byte` before answering, then streams three SSE events 300 ms apart.
async fn slow_upstream(first_byte: Duration) -> std::net::SocketAddr {
    let app = axum::Router::new().fallback(move || async move {
        tokio::time::sleep(first_byte).await;
        let stream = async_stream::stream! {
            for i in 0..3 {
                yield Ok::<_, std::convert::Infallible>(format!("data: {{\"choices\":[{{\"index\":{i}}}]}}\n\n"));
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            yield Ok("data: [DONE]\n\n".to_string());
        };
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(stream))
            .expect("response")
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_byte_after_two_minutes_still_streams_through() {
    let wait = Duration::from_secs(120);
    let addr = slow_upstream(wait).await;
    let (gw, _usage) = Gateway::new().expect("gateway");
    gw.publish(Snapshot::new(vec![route(&[(1, addr)])]));
    let base = serve_gateway(gw).await;
    let started = tokio::time::Instant::now();
    let mut res = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "fake", "stream": true, "stream_options": {"include_usage": true}}))
        .send()
        .await
        .expect("response headers arrive");
    assert_eq!(res.status(), StatusCode::OK);
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = res.chunk().await.expect("stream") {
        arrivals.push(started.elapsed());
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(arrivals[0] >= wait, "{arrivals:?}");
    assert!(text.contains("\"index\":2") && text.ends_with("data: [DONE]\n\n"), "{text}");
    // Events arrive as sent, not buffered to the end: the first well before the last.
    let spread = *arrivals.last().expect("chunks") - arrivals[0];
    assert!(arrivals.len() >= 3 && spread >= Duration::from_millis(500), "{arrivals:?}");
}

/// A backend that streams two tokens and then dies: the client gets OpenAI's error event and a
/// clean end instead of a cut connection, and the two tokens are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_dying_mid_stream_ends_with_an_error_event() {
    let app = axum::Router::new().fallback(|| async {
        let stream = async_stream::stream! {
            for word in ["Hel", "lo"] {
                yield Ok::<_, std::io::Error>(format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{word}\"}}}}]}}\n\n"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            yield Err(std::io::Error::other("the engine crashed"));
        };
        Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(stream)).expect("response")
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let (gw, mut usage) = Gateway::new().expect("gateway");
    gw.publish(Snapshot::new(vec![route(&[(1, addr)])]));
    let base = serve_gateway(gw).await;
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "fake", "stream": true}))
        .send()
        .await
        .expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.expect("the stream ends cleanly");
    assert!(text.contains("\"content\":\"lo\""), "{text}");
    let last = text.trim_end().rsplit("\n\n").next().expect("event");
    let error: Value = serde_json::from_str(last.trim_start_matches("data: ")).expect("an error event");
    assert_eq!(error["error"]["type"], "server_error", "{text}");
    let event = tokio::time::timeout(Duration::from_secs(5), usage.recv()).await.expect("usage").expect("event");
    assert_eq!(event.usage.map(|u| u.completion_tokens), Some(2));
}

/// A fake engine that misbehaves like one its owner controls: every answer sets a cookie named
/// like the server's session and grants CORS; `/page` is HTML with script. `/v1/chat/completions`
/// streams and adds its usage-only chunk only when asked, as vLLM does; `/completion` answers like
/// llama.cpp's native route; `/health` reports no usage. The request bodies it got are kept.
async fn engine() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<Value>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let kept = kept.clone();
        async move {
            let path = req.uri().path().to_string();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
            let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            kept.lock().expect("lock").push(sent.clone());
            let (content_type, body) = match path.as_str() {
                "/page" => ("text/html", "<script>fetch('/v2/users',{method:'POST'})</script>".to_string()),
                "/completion" => (
                    "application/json",
                    json!({"content": "x", "tokens_evaluated": 13,
                    "tokens_predicted": 3, "timings": {"prompt_n": 1, "predicted_n": 3}})
                    .to_string(),
                ),
                "/v1/chat/completions" if sent["stream"] == true => {
                    let mut events = vec![
                        json!({"choices": [{"delta": {"content": "Hi"}}]}),
                        json!({"choices": [{"delta": {}, "finish_reason": "stop"}]}),
                    ];
                    if sent["stream_options"]["include_usage"] == true {
                        events.push(json!({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2}}));
                    }
                    let text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
                    ("text/event-stream", text + "data: [DONE]\n\n")
                }
                "/v1/chat/completions" => (
                    "application/json",
                    json!({"choices": [{"message": {"content": "Hi"}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 1}})
                    .to_string(),
                ),
                _ => ("application/json", json!({"status": "ok"}).to_string()),
            };
            Response::builder()
                .header("content-type", content_type)
                .header("set-cookie", "ferrostack_session=engine; Path=/; HttpOnly")
                .header("access-control-allow-origin", "*")
                .header("clear-site-data", "\"cookies\"")
                .header("x-engine", "kept")
                .body(Body::from(body))
                .expect("response")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

/// The gateway layer served on a port: `/model/proxy/1/…` through the generic proxy, the rest
/// as `/v1`.
async fn serve_gateway_and_proxy(gw: Gateway) -> String {
    let app = axum::Router::new().fallback(move |req: Request| {
        let gw = gw.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
            let path = parts.uri.path().to_string();
            let res = match path.strip_prefix("/model/proxy/1/") {
                Some(rest) => gw.proxy_route(&Caller::default(), 1, rest, parts, body).await,
                None => gw.openai(&Caller::default(), parts, body).await,
            };
            res.unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_answers_never_set_cookies_or_run_as_the_servers_origin() {
    let (addr, _) = engine().await;
    let (gw, _usage) = Gateway::new().expect("gateway");
    gw.publish(Snapshot::new(vec![route(&[(1, addr)])]));
    let base = serve_gateway_and_proxy(gw).await;
    let http = reqwest::Client::new();
    let page = http.get(format!("{base}/model/proxy/1/page")).send();
    let chat = http.post(format!("{base}/v1/chat/completions")).json(&json!({"model": "fake"})).send();
    for res in [page.await.expect("page"), chat.await.expect("chat")] {
        let url = res.url().clone();
        assert_eq!(res.status(), StatusCode::OK, "{url}");
        let h = res.headers();
        let value = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(value("set-cookie"), None, "{url}");
        assert_eq!(value("access-control-allow-origin"), None, "{url}");
        assert_eq!(value("clear-site-data"), None, "{url}");
        assert_eq!(value("content-security-policy").as_deref(), Some("sandbox"), "{url}");
        assert_eq!(value("x-content-type-options").as_deref(), Some("nosniff"), "{url}");
        assert_eq!(value("cross-origin-resource-policy").as_deref(), Some("same-origin"), "{url}");
        assert_eq!(value("x-engine").as_deref(), Some("kept"), "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_native_routes_are_metered() {
    let (addr, seen) = engine().await;
    let (gw, mut usage) = Gateway::new().expect("gateway");
    gw.publish(Snapshot::new(vec![route(&[(1, addr)])]));
    let base = serve_gateway_and_proxy(gw).await;
    let http = reqwest::Client::new();
    // (path, body, the client sees a usage chunk, usage charged)
    let u = |prompt_tokens, completion_tokens| Some(ferrostack::gateway::Usage { prompt_tokens, completion_tokens });
    let cases = [
        ("/v1/chat/completions", json!({"model": "fake", "stream": true}), false, u(11, 2)),
        (
            "/v1/chat/completions",
            json!({"model": "fake", "stream": true, "stream_options": {"include_usage": false}}),
            false,
            u(11, 2),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "fake", "stream": true, "stream_options": {"include_usage": true}}),
            true,
            u(11, 2),
        ),
        (
            "/model/proxy/1/v1/chat/completions",
            json!({"stream": true, "stream_options": {"include_usage": false}}),
            false,
            u(11, 2),
        ),
        ("/model/proxy/1/completion", json!({"prompt": "hi"}), false, u(13, 3)),
        ("/model/proxy/1/health", json!({}), false, None),
    ];
    for (path, body, usage_chunk, charged) in cases {
        let res = http.post(format!("{base}{path}")).json(&body).send().await.expect("send");
        assert_eq!(res.status(), StatusCode::OK, "{path} {body}");
        let text = res.text().await.expect("body");
        if body["stream"] == true {
            assert_eq!(text.contains("\"usage\""), usage_chunk, "{path} {body}: {text}");
            assert!(text.contains("finish_reason") && text.ends_with("data: [DONE]\n\n"), "{text}");
            let sent = seen.lock().expect("lock").last().cloned().unwrap_or_default();
            assert_eq!(sent["stream_options"]["include_usage"], true, "the engine was asked: {sent}");
        }
        let event = tokio::time::timeout(Duration::from_secs(5), usage.recv()).await.expect("usage").expect("event");
        assert_eq!(event.usage, charged, "{path} {body}");
    }
}

/// An OpenAI-shaped error: status, `error.type`, `error.code`, and the Retry-After header.
async fn openai_error(res: reqwest::Response) -> (StatusCode, String, String, Option<String>) {
    let status = res.status();
    let retry = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body: Value = res.json().await.expect("json error");
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    (status, e["type"].as_str().unwrap_or("").into(), e["code"].as_str().unwrap_or("").into(), retry)
}

async fn errors_limits_routes_usage_and_metrics(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let open = s.api_key(json!({"name": "open", "scope": ["inference"], "rpm_limit": 2})).await;
    let narrow = s.api_key(json!({"name": "narrow", "scope": ["inference"], "allowed_model_names": ["other"]})).await;
    let manage = s.api_key(json!({"name": "manage", "scope": ["management"]})).await;
    // A route with no target: known, but nothing runs it.
    let (status, route) = s.post("/v2/model-routes", json!({"name": "idle", "description": "nothing yet"})).await;
    assert_eq!(status, StatusCode::OK, "{route}");
    let (status, bad) = s.post("/v2/model-routes", json!({"name": "9bad"})).await;
    assert_eq!((status, bad["field"].as_str()), (StatusCode::BAD_REQUEST, Some("name")), "{bad}");
    let (status, bad) = s.post("/v2/model-route-targets", json!({"route_id": route["id"], "model_id": 999})).await;
    assert_eq!((status, bad["field"].as_str()), (StatusCode::BAD_REQUEST, Some("model_id")), "{bad}");

    let http = reqwest::Client::new();
    let call = |key: &str, model: &str| {
        http.post(s.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let cases = [
        ("fs_nope_wrong", "idle", StatusCode::UNAUTHORIZED, "authentication_error", "invalid_api_key"),
        (manage.as_str(), "idle", StatusCode::FORBIDDEN, "permission_error", "permission_denied"),
        (narrow.as_str(), "idle", StatusCode::FORBIDDEN, "permission_error", "model_not_allowed"),
        (open.as_str(), "missing", StatusCode::NOT_FOUND, "not_found_error", "model_not_found"),
        (open.as_str(), "idle", StatusCode::SERVICE_UNAVAILABLE, "server_error", "no_running_instance"),
    ];
    for (key, model, want, kind, code) in cases {
        let (status, t, c, _) = openai_error(call(key, model).await.expect("send")).await;
        assert_eq!((status, t.as_str(), c.as_str()), (want, kind, code), "{key} {model}");
    }
    // rpm_limit 2: the second request above counted; the third is refused with Retry-After.
    let (_, _, _, _) = openai_error(call(&open, "idle").await.expect("send")).await;
    let (status, t, _, retry) = openai_error(call(&open, "idle").await.expect("send")).await;
    assert_eq!((status, t.as_str()), (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"));
    let retry: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");

    // /v1/models lists nothing that cannot run; the session works for the playground.
    let (status, models) = s.get("/v1/models").await;
    assert_eq!((status, models["data"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{models}");
    // The generic proxy: unknown route id → 404, route without instances → 503.
    let res = http.get(s.url("/model/proxy/9999/health")).bearer_auth(&open).send().await.expect("send");
    assert_eq!(openai_error(res).await.0, StatusCode::NOT_FOUND);
    let res = http.get(s.url("/model/proxy/health")).header("X-GPUStack-Model", "idle").bearer_auth(&narrow);
    assert_eq!(openai_error(res.send().await.expect("send")).await.0, StatusCode::FORBIDDEN);
    // The session cookie is no credential on the generic proxy (an engine's page must not ride on
    // it): 401 before any route is looked at; a key on the same client is authenticated (403, 404).
    for path in ["/model/proxy/9999/health", "/model/proxy/health"] {
        let res = s.http.get(s.url(path)).header("X-GPUStack-Model", "idle").send().await.expect("send");
        let (status, t, c, _) = openai_error(res).await;
        assert_eq!(
            (status, t.as_str(), c.as_str()),
            (StatusCode::UNAUTHORIZED, "authentication_error", "invalid_api_key")
        );
        let res = s.http.get(s.url(path)).header("X-GPUStack-Model", "idle").bearer_auth(&narrow).send().await;
        assert_ne!(res.expect("send").status(), StatusCode::UNAUTHORIZED, "{path}");
    }

    let (status, usage) = s.get("/v2/usage?start_date=2020-01-01").await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    let (status, bad) = s.get("/v2/usage?start_date=yesterday").await;
    assert_eq!((status, bad["field"].as_str()), (StatusCode::BAD_REQUEST, Some("start_date")));
    let (status, dash) = s.get("/v2/dashboard").await;
    assert_eq!((status, dash["model_routes"].as_i64()), (StatusCode::OK, Some(1)), "{dash}");
    let metrics = http.get(s.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("ferrostack_gateway_errors_total{reason=\"no_instance\",route=\"idle\"}"), "{metrics}");
    assert!(metrics.contains("ferrostack_gateway_errors_total{reason=\"rate_limited\",route=\"idle\"} 1"), "{metrics}");
    assert_eq!(s.delete(&format!("/v2/model-routes/{}", route["id"])).await.0, StatusCode::OK);
    let (_, t, c, _) = openai_error(call(&open, "idle").await.expect("send")).await;
    assert_eq!((t.as_str(), c.as_str()), ("not_found_error", "model_not_found"), "a deleted route is gone at once");
}

const OPENAI_SCRIPT: &str = r#"
import sys, time, openai
base, key, bad = sys.argv[1], sys.argv[2], sys.argv[3]
c = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
q = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
r = c.chat.completions.create(model="smol", messages=q, max_tokens=8, temperature=0)
assert "paris" in r.choices[0].message.content.lower(), r
assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage
arrivals, text = [], ""
for ch in c.chat.completions.create(model="smol", messages=q, max_tokens=40, temperature=0, stream=True,
                                    extra_body={"ignore_eos": True}):
    arrivals.append(time.monotonic())
    assert ch.choices, "the gateway's own usage chunk reached the client: %r" % ch
    text += ch.choices[0].delta.content or ""
gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
assert len(arrivals) >= 10 and sum(g > 0.001 for g in gaps) >= 5, (len(arrivals), gaps)
assert "paris" in text.lower(), text
e = c.embeddings.create(model="smol-embed", input=["hello", "world"])
assert len(e.data) == 2 and len(e.data[0].embedding) > 10, e
try:
    openai.OpenAI(base_url=base + "/v1", api_key=bad, max_retries=0).chat.completions.create(model="smol", messages=q)
    raise SystemExit("a wrong key was accepted")
except openai.AuthenticationError as err:
    assert err.status_code == 401 and err.body["code"] == "invalid_api_key", err.body
try:
    c.chat.completions.create(model="nope", messages=q)
    raise SystemExit("an unknown model was accepted")
except openai.NotFoundError as err:
    assert err.body["code"] == "model_not_found", err.body
print("ok", len(arrivals), "chunks")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_through_the_gateway_to_llama() {
    let Some((server, gguf)) = llama() else { return };
    let python = std::env::var("LLM_PYTHON").expect("LLM_PYTHON (eval \"$(scripts/setup-llm.sh)\")");
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    import_backend(&s, &llama_backend_yaml(&server)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("gw1", (45500, 45549))).await;
    for (name, params) in [("smol", json!([])), ("smol-embed", json!(["--embeddings", "--pooling=mean"]))] {
        let body = json!({"name": name, "source": "local_path", "local_path": gguf, "backend": "llama-cpp-custom",
                          "backend_parameters": params});
        let (status, m) = s.post("/v2/models", body).await;
        assert_eq!(status, StatusCode::OK, "{m}");
    }
    let key = s.api_key(json!({"name": "client", "scope": ["inference"]})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let routes = loop {
        let (_, routes) = s.get("/v2/model-routes").await;
        let items = routes["items"].as_array().cloned().unwrap_or_default();
        if items.len() == 2 && items.iter().all(|r| r["ready_targets"] == 1) {
            break items;
        }
        if tokio::time::Instant::now() >= deadline {
            let (_, models) = s.get("/v2/models").await;
            let (_, instances) = s.get("/v2/model-instances").await;
            panic!("routes never ready: {routes:#}\n{models:#}\n{instances:#}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (_, models) = reqwest_json(reqwest::Client::new().get(s.url("/v1/models")).bearer_auth(&key)).await;
    let mut ids: Vec<&str> = models["data"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["smol", "smol-embed"], "{models}");

    let out = tokio::process::Command::new(&python)
        .args(["-c", OPENAI_SCRIPT, &s.base, &key, "fs_wrong_key"])
        .output()
        .await
        .expect("run python");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.starts_with("ok"), "{text}");

    // The generic proxy reaches the backend's own /health, prefix stripped.
    let smol = routes.iter().find(|r| r["name"] == "smol").expect("route");
    let res = reqwest::Client::new()
        .get(s.url(&format!("/model/proxy/{}/health", smol["id"])))
        .bearer_auth(&key)
        .send()
        .await
        .expect("proxy");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap_or_default().contains("ok"));
    // Nothing escapes usage: a stream whose client declined usage is charged its prompt and the
    // client sees no usage-only chunk; llama.cpp's native /completion through the proxy is charged.
    let meter = s.api_key(json!({"name": "meter", "scope": ["inference"]})).await;
    let http = reqwest::Client::new();
    let body = json!({"model": "smol", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4,
                      "stream": true, "stream_options": {"include_usage": false}});
    let res = http.post(s.url("/v1/chat/completions")).bearer_auth(&meter).json(&body).send().await.expect("stream");
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.expect("text");
    let chunks: Vec<&str> =
        text.split("\n\n").filter_map(|e| e.trim().strip_prefix("data: ")).filter(|d| *d != "[DONE]").collect();
    assert!(!chunks.is_empty(), "no chunk streamed: {text}");
    for chunk in chunks {
        let chunk: Value = serde_json::from_str(chunk).expect("chunk");
        assert!(
            chunk["choices"].as_array().is_some_and(|c| !c.is_empty()),
            "a usage-only chunk reached the client: {text}"
        );
    }
    let native = http.post(s.url(&format!("/model/proxy/{}/completion", smol["id"]))).bearer_auth(&meter);
    let (status, answer) = reqwest_json(native.json(&json!({"prompt": "Hello", "n_predict": 4}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // A route with generic_proxy false closes the proxy, not the OpenAI paths.
    let (status, body) =
        s.put(&format!("/v2/model-routes/{}", smol["id"]), json!({"name": "smol", "generic_proxy": false})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = reqwest::Client::new()
            .get(s.url(&format!("/model/proxy/{}/health", smol["id"])))
            .bearer_auth(&key)
            .send()
            .await
            .expect("proxy");
        if res.status() == StatusCode::FORBIDDEN {
            assert!(res.text().await.unwrap_or_default().contains("generic_proxy"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the proxy stayed open: {}", res.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Usage lands in the daily table within a flush: 2 chat requests (one streamed), 1 embedding.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, usage) = s.get("/v2/usage").await;
        let rows = usage["items"].as_array().cloned().unwrap_or_default();
        let chat = rows
            .iter()
            .find(|r| r["route_name"] == "smol" && r["operation"] == "chat_completion" && r["api_key_name"] != "meter");
        let embed = rows.iter().find(|r| r["route_name"] == "smol-embed" && r["operation"] == "embedding");
        let metered = |operation: &str| {
            rows.iter().find(|r| r["api_key_name"] == "meter" && r["operation"] == operation).cloned()
        };
        if let (Some(chat), Some(embed), Some(stream), Some(native)) =
            (chat, embed, metered("chat_completion"), metered("proxy"))
            && chat["request_count"].as_i64() >= Some(2)
        {
            assert!(chat["completion_token_count"].as_i64() >= Some(40), "{chat}");
            assert!(embed["prompt_token_count"].as_i64() > Some(0), "{embed}");
            for row in [stream, native] {
                assert!(row["prompt_token_count"].as_i64() > Some(0), "{row}");
                assert!(row["completion_token_count"].as_i64() > Some(0), "{row}");
                assert_eq!(row["unmetered_request_count"], 0, "{row}");
            }
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "usage never recorded: {usage:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    worker.shutdown().await;
}

async fn reqwest_json(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    crate::support::read(req.send().await.expect("send")).await
}

/// Usage still in memory when the server stops is written, not lost: the writer flushes when told
/// that the last request is done (`Running::shutdown` tells it after the HTTP server has drained).
async fn the_usage_writer_writes_what_is_left_when_finished(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let (events, rx) = tokio::sync::mpsc::channel(16);
    let (finish, finished) = tokio::sync::watch::channel(false);
    let writer = ferrostack::server::routing::spawn_usage_writer(s.db().clone(), rx, finished);
    let event = |tokens: Option<u64>| ferrostack::gateway::UsageEvent {
        at: chrono::Utc::now(),
        user_id: 1,
        api_key_id: 0,
        route_id: 7,
        route_name: "late".into(),
        model_name: "late".into(),
        operation: "chat_completion",
        usage: tokens.map(|t| ferrostack::gateway::Usage { prompt_tokens: t, completion_tokens: 1 }),
    };
    events.send(event(Some(3))).await.expect("send");
    events.send(event(Some(4))).await.expect("send");
    events.send(event(None)).await.expect("send");
    // Well inside the writer's flush interval: only the final flush can have written these.
    finish.send(true).expect("finish");
    tokio::time::timeout(Duration::from_secs(10), writer).await.expect("writer ends").expect("join");
    let (_, usage) = s.get("/v2/usage?model=late").await;
    let rows = usage["items"].as_array().cloned().unwrap_or_default();
    let prompt: u64 = rows.iter().filter_map(|r| r["prompt_token_count"].as_u64()).sum();
    assert_eq!(prompt, 7, "{usage:#}");
    // A request the engine reported no usage for is counted, as unmetered.
    let sum = |field: &str| rows.iter().filter_map(|r| r[field].as_u64()).sum::<u64>();
    assert_eq!((sum("request_count"), sum("unmetered_request_count")), (3, 1), "{usage:#}");
    // Rows name their user (and key, when one was used) for the usage page.
    assert!(rows.iter().all(|r| r["user_name"] == "admin" && r["api_key_name"].is_null()), "{usage:#}");
}
