//! Time to first streamed byte, direct vs through the gateway (`bench/gateway.sh`): sequential
//! streaming chat requests on kept-alive connections, alternating between the two URLs, timing
//! from sending the request to the first body byte.
//! Run: `cargo run --release --example bench_ttfb -- DIRECT_URL GATEWAY_URL API_KEY [REQUESTS]`
//! (the URLs are bases like `http://127.0.0.1:9000`; the model is `stub`). Prints a markdown table.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const BODY: &str =
    r#"{"model":"stub","stream":true,"messages":[{"role":"user","content":"What is the capital of France?"}]}"#;

type Http = Client<HttpConnector, Full<Bytes>>;

/// One streaming request: time to the first body byte; the rest of the stream is read and dropped.
async fn ttfb(client: &Http, base: &str, key: Option<&str>) -> Duration {
    let mut req = Request::post(format!("{base}/v1/chat/completions")).header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let req = req.body(Full::new(Bytes::from_static(BODY.as_bytes()))).expect("request");
    let started = Instant::now();
    let res = client.request(req).await.expect("response");
    assert!(res.status().is_success(), "{base}: {}", res.status());
    let mut body: Incoming = res.into_body();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body");
        if first.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
            first = Some(started.elapsed());
        }
    }
    first.expect("a streamed byte")
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn added(a: Duration, b: Duration) -> String {
    format!("{:+.3} ms", (a.as_secs_f64() - b.as_secs_f64()) * 1e3)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, direct, gateway, key, ..] = args.as_slice() else {
        panic!("usage: bench_ttfb DIRECT_URL GATEWAY_URL API_KEY [REQUESTS]");
    };
    let n: usize = args.get(4).map(|n| n.parse().expect("REQUESTS is a number")).unwrap_or(200);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Http = Client::builder(TokioExecutor::new()).build(connector);
    for _ in 0..20 {
        ttfb(&client, direct, None).await;
        ttfb(&client, gateway, Some(key)).await;
    }
    let (mut d, mut g) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        d.push(ttfb(&client, direct, None).await);
        g.push(ttfb(&client, gateway, Some(key)).await);
    }
    d.sort();
    g.sort();
    println!("| path | requests | TTFB p50 | TTFB p99 |");
    println!("| --- | --- | --- | --- |");
    println!("| direct | {n} | {} | {} |", ms(pct(&d, 0.5)), ms(pct(&d, 0.99)));
    println!("| gateway | {n} | {} | {} |", ms(pct(&g, 0.5)), ms(pct(&g, 0.99)));
    println!("| added | | {} | {} |", added(pct(&g, 0.5), pct(&d, 0.5)), added(pct(&g, 0.99), pct(&d, 0.99)));
}
