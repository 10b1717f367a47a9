//! A fast fake inference server for the gateway benchmark (`bench/gateway.sh`): answers
//! `POST /v1/chat/completions` with a fixed small chat completion, or, when the body asks to
//! stream, with a few SSE chunks (and a usage chunk when `stream_options.include_usage` is set);
//! `GET /health` and `GET /v1/models` answer for health checks. `--delay-ms N` waits N ms (without
//! using the CPU) before answering a chat request, like a model's service time.
//! Run: `cargo run --release --example stub_upstream -- --port 9000` (also accepts `--host`).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;

const COMPLETION: &str = r#"{"id":"chatcmpl-stub","object":"chat.completion","created":1700000000,"model":"stub","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}"#;

const CHUNK: &str = r#"data: {"id":"chatcmpl-stub","object":"chat.completion.chunk","created":1700000000,"model":"stub","choices":[{"index":0,"delta":{"content":"Paris"},"finish_reason":null}]}"#;

const USAGE_CHUNK: &str = r#"data: {"id":"chatcmpl-stub","object":"chat.completion.chunk","created":1700000000,"model":"stub","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn compact(body: &[u8]) -> Vec<u8> {
    body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect()
}

static DELAY: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

async fn chat(body: Bytes) -> Response {
    if let Some(delay) = DELAY.get().filter(|d| !d.is_zero()) {
        tokio::time::sleep(*delay).await;
    }
    let body = compact(&body);
    if !contains(&body, br#""stream":true"#) {
        return ([(header::CONTENT_TYPE, "application/json")], COMPLETION).into_response();
    }
    let usage = contains(&body, br#""include_usage":true"#);
    // Each event is its own frame, sent as soon as it is produced.
    let stream = async_stream::stream! {
        for _ in 0..3 {
            yield Ok::<_, std::convert::Infallible>(Bytes::from(format!("{CHUNK}\n\n")));
            tokio::task::yield_now().await;
        }
        if usage {
            yield Ok(Bytes::from(format!("{USAGE_CHUNK}\n\n")));
        }
        yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .expect("static response")
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let host = arg(&args, "--host").unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = arg(&args, "--port").map(|p| p.parse().expect("--port takes a number")).unwrap_or(0);
    let delay: u64 = arg(&args, "--delay-ms").map(|d| d.parse().expect("--delay-ms takes a number")).unwrap_or(0);
    let _ = DELAY.set(std::time::Duration::from_millis(delay));
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(|| async { r#"{"object":"list","data":[{"id":"stub","object":"model"}]}"# }))
        .route("/health", get(|| async { r#"{"status":"ok"}"# }));
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await.expect("bind");
    eprintln!("stub upstream listening on {}", listener.local_addr().expect("local addr"));
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.expect("serve");
}
