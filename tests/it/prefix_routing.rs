//! Prefix-aware balancing (`load_balancing: prefix_aware`): against in-process fake upstreams, a
//! repeated prefix lands on one replica on every server, distinct prefixes spread, and a hot
//! prefix held open spills within the load bound; through the server with 3 real llama.cpp
//! replicas, the field is validated and kept, a repeated prefix lands on one replica and hits its
//! prompt cache, and distinct prefixes spread within the bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::response::IntoResponse;
use ferrostack::gateway::prefix;
use ferrostack::gateway::snapshot::LoadBalancing;
use ferrostack::gateway::{Caller, Gateway, Route, Snapshot};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::support::{DbKind, TestServer};
use crate::workers::{import_backend, llama, llama_yaml, start_worker, worker_options};

both_dbs!(three_llama_replicas_keep_a_prefix_on_one);

/// A fake upstream counting requests; each waits until `open` is true before answering.
struct Fake {
    addr: std::net::SocketAddr,
    hits: Arc<AtomicUsize>,
}

async fn fake(open: tokio::sync::watch::Receiver<bool>) -> Fake {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move |_req: Request| {
        let (counter, mut open) = (counter.clone(), open.clone());
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = open.wait_for(|o| *o).await;
            axum::Json(json!({"usage": {"prompt_tokens": 3, "completion_tokens": 1}})).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Fake { addr, hits }
}

fn route(policy: LoadBalancing, fakes: &[(i64, &Fake)]) -> Route {
    let instances: Vec<(i64, String)> = fakes.iter().map(|(id, f)| (*id, f.addr.to_string())).collect();
    crate::support::one_target_route(1, "fake", policy, &instances)
}

fn chat_body(system: &str, question: &str) -> axum::body::Bytes {
    let body = json!({"model": "fake", "messages": [{"role": "system", "content": system},
                                                    {"role": "user", "content": question}]});
    axum::body::Bytes::from(body.to_string())
}

async fn send(gw: &Gateway, body: axum::body::Bytes) -> StatusCode {
    let req = axum::http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(())
        .expect("request");
    let (parts, ()) = req.into_parts();
    match gw.openai(&Caller::default(), parts, body).await {
        Ok(res) => {
            let status = res.status();
            let _ = axum::body::to_bytes(res.into_body(), 1 << 20).await;
            status
        }
        Err(e) => panic!("gateway: {e}"),
    }
}

fn hits(fakes: &[Fake]) -> Vec<usize> {
    fakes.iter().map(|f| f.hits.load(Ordering::SeqCst)).collect()
}

/// A long system prompt of tenant `t` (about 5 KB: more than the 4 KiB the key covers).
fn document(t: usize) -> String {
    (0..700).map(|i| format!("t{t}w{} ", (i * 7 + t) % 101)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_sticks_on_every_server_spreads_and_spills_within_the_bound() {
    let (open_tx, open) = tokio::sync::watch::channel(true);
    let fakes = vec![fake(open.clone()).await, fake(open.clone()).await, fake(open).await];
    let ids = [11, 12, 13];
    let with_ids: Vec<(i64, &Fake)> = ids.iter().copied().zip(fakes.iter()).collect();
    // Two servers: two gateways with their own counters, one shared snapshot.
    let (one, _u1) = Gateway::new().expect("gateway");
    let (two, _u2) = Gateway::new().expect("gateway");
    for gw in [&one, &two] {
        gw.publish(Snapshot::new(vec![route(LoadBalancing::PrefixAware, &with_ids)]));
    }

    // A repeated prefix, different questions, through either server: one replica takes them all.
    let doc = document(1);
    for i in 0..12 {
        let gw = if i % 2 == 0 { &one } else { &two };
        assert_eq!(send(gw, chat_body(&doc, &format!("question {i}?"))).await, StatusCode::OK);
    }
    let after_one = hits(&fakes);
    assert_eq!(after_one.iter().filter(|h| **h == 12).count(), 1, "one replica takes the prefix: {after_one:?}");
    let home = after_one.iter().position(|h| *h == 12).expect("home");

    // Distinct prefixes spread over every replica.
    for t in 100..160 {
        assert_eq!(send(&one, chat_body(&document(t), "q")).await, StatusCode::OK);
    }
    let spread: Vec<usize> = hits(&fakes).iter().zip(&after_one).map(|(a, b)| a - b).collect();
    assert!(spread.iter().all(|n| (10..=30).contains(n)), "60 prefixes over 3 replicas: {spread:?}");

    // A hot prefix held open: 9 requests in flight at once, none on a replica over the bound.
    open_tx.send_replace(false);
    let before = hits(&fakes);
    let mut held = Vec::new();
    for i in 0..9 {
        let (gw, body) = (one.clone(), chat_body(&doc, &format!("hot {i}")));
        held.push(tokio::spawn(async move { send(&gw, body).await }));
        // Each arrives before the next is sent, so each decision sees the ones before it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while hits(&fakes).iter().sum::<usize>() < before.iter().sum::<usize>() + i + 1 {
            assert!(tokio::time::Instant::now() < deadline, "request {i} never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let in_flight: Vec<usize> = ids.iter().map(|id| one.outstanding(*id)).collect();
    assert_eq!(in_flight.iter().sum::<usize>(), 9);
    assert!(in_flight.iter().all(|n| *n <= prefix::bound(8, 3)), "over the bound: {in_flight:?}");
    assert!(
        in_flight[home] >= in_flight.iter().copied().max().unwrap_or(0),
        "the home replica is fullest: {in_flight:?}"
    );
    assert!(in_flight.iter().filter(|n| **n > 0).count() >= 2, "the hot prefix spilled: {in_flight:?}");
    open_tx.send_replace(true);
    for h in held {
        assert_eq!(h.await.expect("request"), StatusCode::OK);
    }

    // The same traffic on a least-outstanding route moves between replicas.
    let (lo, _u3) = Gateway::new().expect("gateway");
    lo.publish(Snapshot::new(vec![route(LoadBalancing::LeastOutstanding, &with_ids)]));
    let before = hits(&fakes);
    for i in 0..6 {
        assert_eq!(send(&lo, chat_body(&doc, &format!("again {i}"))).await, StatusCode::OK);
    }
    let moved = hits(&fakes).iter().zip(&before).filter(|(a, b)| a > b).count();
    assert!(moved > 1, "least-outstanding spreads one prefix: {:?} → {:?}", before, hits(&fakes));
}

/// `llamacpp:tokens_predicted_total` of each instance (requests, with `max_tokens: 1`).
async fn predicted(http: &reqwest::Client, ports: &[u64]) -> Vec<u64> {
    let mut out = Vec::new();
    for port in ports {
        let text = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix("llamacpp:tokens_predicted_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no tokens_predicted_total in {text}"));
        out.push(value as u64);
    }
    out
}

async fn three_llama_replicas_keep_a_prefix_on_one(kind: DbKind) {
    let Some((server, gguf)) = llama() else { return };
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    import_backend(&s, &llama_yaml(&server, "127.0.0.1", "-c 2048 -t 1 -np 2 --metrics")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = if kind == DbKind::Sqlite { (48100, 48109) } else { (48110, 48119) };
    let worker = start_worker(&s, dir.path(), &worker_options("prefix", ports)).await;
    let body = json!({"name": "smol", "source": "local_path", "local_path": gguf, "backend": "llama-cpp-custom",
                      "replicas": 3});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");

    // The route's policy: validated by name, kept when a body leaves it out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let route = loop {
        let (_, routes) = s.get("/v2/model-routes").await;
        if let Some(r) = routes["items"].as_array().and_then(|i| i.first()).filter(|r| r["ready_targets"] == 1) {
            let (_, instances) = s.get("/v2/model-instances").await;
            let running = instances["items"].as_array().into_iter().flatten().filter(|i| i["state"] == "running");
            if running.count() == 3 {
                break r.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "3 replicas never ran: {routes}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(route["load_balancing"], "prefix_aware", "the default: {route}");
    let path = format!("/v2/model-routes/{}", route["id"]);
    let (status, err) = s.put(&path, json!({"name": "smol", "load_balancing": "sticky"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(err.to_string().contains("load_balancing"), "names the field: {err}");
    let (status, r) = s.put(&path, json!({"name": "smol", "load_balancing": "least_outstanding"})).await;
    assert_eq!((status, &r["load_balancing"]), (StatusCode::OK, &json!("least_outstanding")), "{r}");
    let (status, r) = s.put(&path, json!({"name": "smol", "timeout": 600})).await;
    assert_eq!((status, &r["load_balancing"]), (StatusCode::OK, &json!("least_outstanding")), "kept: {r}");
    let (status, r) = s.put(&path, json!({"name": "smol", "load_balancing": "prefix_aware"})).await;
    assert_eq!((status, &r["load_balancing"]), (StatusCode::OK, &json!("prefix_aware")), "{r}");

    let (_, instances) = s.get("/v2/model-instances").await;
    let ports: Vec<u64> =
        instances["items"].as_array().into_iter().flatten().filter_map(|i| i["port"].as_u64()).collect();
    assert_eq!(ports.len(), 3, "{instances}");
    let key = s.api_key(json!({"name": "prefix", "scope": ["inference"]})).await;
    let http = reqwest::Client::new();
    let ask = async |system: String, question: String| -> Value {
        let body = json!({"model": "smol", "max_tokens": 1, "temperature": 0,
                          "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]});
        let res = http.post(s.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.expect("chat");
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.expect("json")
    };
    // The publish that carries the new policy reaches the gateway within a snapshot.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // One prefix (~300 tokens), five questions one after another: one replica, cache hits after
    // the first.
    let start = predicted(&http, &ports).await;
    let doc: String = (0..130).map(|i| format!("fact{} ", i * 37 % 101)).collect();
    for i in 0..5 {
        let answer = ask(doc.clone(), format!("Question {i}: what is fact {i}?")).await;
        let cached = answer["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
        let prompt = answer["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
        if i > 0 {
            assert!(cached * 2 > prompt, "request {i} missed the prompt cache: {answer}");
        }
    }
    let after: Vec<u64> = predicted(&http, &ports).await.iter().zip(&start).map(|(a, b)| a - b).collect();
    assert_eq!(after.iter().filter(|n| **n > 0).count(), 1, "one replica took the prefix: {after:?}");
    assert_eq!(after.iter().sum::<u64>(), 5, "{after:?}");

    // Nine distinct short prefixes at once: spread, none over the bound for 9 in flight.
    let start = predicted(&http, &ports).await;
    let mut asks = Vec::new();
    for t in 0..9 {
        asks.push(ask(format!("You are assistant number {t} of the tenant t{t}."), "Hi".into()));
    }
    futures_util::future::join_all(asks).await;
    let spread: Vec<u64> = predicted(&http, &ports).await.iter().zip(&start).map(|(a, b)| a - b).collect();
    assert_eq!(spread.iter().sum::<u64>(), 9, "{spread:?}");
    assert!(spread.iter().all(|n| *n as usize <= prefix::bound(8, 3)), "over the bound: {spread:?}");
    worker.shutdown().await;
}

/// `ferrostack routes balance` sets a route's policy and keeps the rest of the route, `routes
/// list` shows it, and a policy that does not exist is refused naming the ones that do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_routes_and_sets_their_policy() {
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    // Deploying creates the route (no worker needed: nothing runs with 0 replicas).
    let body = json!({"name": "smol", "source": "local_path", "local_path": "/", "backend": "Custom",
                      "run_command": "sleep 300", "replicas": 0, "description": "a small model"});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let (_, routes) = s.get("/v2/model-routes").await;
    let route = routes["items"].as_array().and_then(|i| i.first()).cloned().expect("the deployment's route");
    assert_eq!((&route["name"], &route["load_balancing"]), (&json!("smol"), &json!("prefix_aware")), "{route}");
    let key = s.api_key(json!({"name": "cli"})).await;
    let ferrostack = async |args: &[&str]| {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferrostack"))
            .args(args)
            .env("FERROSTACK_SERVER_URL", &s.base)
            .env("FERROSTACK_API_KEY", &key)
            .output()
            .await
            .expect("run ferrostack");
        let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), said)
    };

    let (ok, said) = ferrostack(&["routes", "balance", "smol", "least_outstanding"]).await;
    assert!(ok && said.contains("load_balancing least_outstanding"), "{said}");
    let (_, r) = s.get(&format!("/v2/model-routes/{}", route["id"])).await;
    assert_eq!(r["load_balancing"], "least_outstanding", "{r}");
    assert_eq!((&r["description"], &r["targets"]), (&route["description"], &json!(1)), "the rest is kept: {r}");
    assert_eq!(route["description"], "a small model", "{route}");

    // By id as well as by name.
    let id = route["id"].to_string();
    let (ok, said) = ferrostack(&["routes", "balance", &id, "round_robin"]).await;
    assert!(ok && said.contains("load_balancing round_robin"), "{said}");
    let (ok, said) = ferrostack(&["routes", "balance", "smol", "prefix_aware"]).await;
    assert!(ok, "{said}");

    let (ok, said) = ferrostack(&["routes", "list"]).await;
    assert!(ok, "{said}");
    let line = said.lines().find(|l| l.split_whitespace().nth(1) == Some("smol")).unwrap_or_else(|| panic!("{said}"));
    assert_eq!(line.split_whitespace().collect::<Vec<_>>(), [id.as_str(), "smol", "0/1", "prefix_aware"], "{said}");

    let (ok, said) = ferrostack(&["routes", "balance", "smol", "sticky"]).await;
    assert!(!ok, "{said}");
    for allowed in ["prefix_aware", "least_outstanding", "round_robin"] {
        assert!(said.contains(allowed) && said.contains("sticky"), "names {allowed}: {said}");
    }
    let (ok, said) = ferrostack(&["routes", "balance", "nope", "round_robin"]).await;
    assert!(!ok && said.contains("no route named \"nope\""), "{said}");
    let (_, r) = s.get(&format!("/v2/model-routes/{}", route["id"])).await;
    assert_eq!(r["load_balancing"], "prefix_aware", "unchanged by the refused calls: {r}");
}
