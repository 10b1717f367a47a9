//! The floor for any HTTP proxy on this machine, for the gateway benchmark (`bench/gateway.sh`):
//! forwards every request to one upstream with the same server (axum) and pooled client
//! (hyper-util) settings as the gateway, and nothing else — no key check, no routing, no
//! balancing, no usage accounting, no metrics.
//! Run: `cargo run --release --example bare_proxy -- --port 9001 --upstream http://127.0.0.1:9000`.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::serve::ListenerExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, "--port").map(|p| p.parse().expect("--port takes a number")).unwrap_or(0);
    let upstream = arg(&args, "--upstream").expect("--upstream http://HOST:PORT");
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    let client: Client<HttpConnector, Body> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build(connector);
    let app = Router::new().fallback(move |req: Request| {
        let client = client.clone();
        let upstream = upstream.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            parts.uri = match format!("{upstream}{path}").parse::<Uri>() {
                Ok(uri) => uri,
                Err(_) => return StatusCode::BAD_REQUEST.into_response(),
            };
            parts.headers.remove(header::HOST);
            match client.request(Request::from_parts(parts, body)).await {
                Ok(res) => res.map(Body::new).into_response(),
                Err(_) => StatusCode::BAD_GATEWAY.into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    eprintln!("bare proxy listening on {}", listener.local_addr().expect("local addr"));
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.expect("serve");
}
