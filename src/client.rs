//! Typed HTTP client for the management API, used by the CLI, the worker and tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{ErrorBody, ListResponse};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url}: {message}")]
    Connect { url: String, message: String },
    #[error("{} {}: {}", .0.code, .0.reason, .0.message)]
    Api(ErrorBody),
    #[error("unexpected answer ({status}) from {url}: {message}")]
    Unexpected { url: String, status: u16, message: String },
}

impl ClientError {
    /// The HTTP status of an API error, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api(body) => Some(body.code),
            ClientError::Unexpected { status, .. } => Some(*status),
            ClientError::Connect { .. } => None,
        }
    }
}

/// How long a connection attempt to one server may take before the next server is tried.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// How long a server may take to answer a call (its headers; a plain call's body too) before the
/// next server is tried, unless set otherwise ([`Client::with_answer_timeout`]).
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A client bound to one API key and one or more servers (`--server-url a,b`: servers sharing one
/// database). Calls go to the server that answered last. One that cannot be reached, answers
/// 502/503/504 (503: it cannot reach its database) or does not answer in time is left for the
/// next: the call is sent there when that cannot act twice (nothing reached the first, the first
/// refused it with 503, or the method is idempotent), else its outcome is returned and only later
/// calls go to the next server ([`next_server`] decides).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    bases: Arc<[String]>,
    current: Arc<AtomicUsize>,
    api_key: Option<String>,
    answer_timeout: std::time::Duration,
}

/// How one server answered a call, as far as choosing a server goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No connection: nothing was sent.
    NotConnected,
    /// Sent, but no answer in time.
    TimedOut,
    /// An HTTP status.
    Status(u16),
    /// A 503 the server marks as refused before acting ([`NOT_ACTED`]).
    Refused,
}

pub use crate::api::NOT_ACTED;

/// What a client does after `outcome` from one server: (move later calls to the next server,
/// send this call there too). A 503 marked [`NOT_ACTED`] is a refusal before acting (a server
/// without its database); any other 503 (a statement that timed out, perhaps after a commit), 502
/// and 504 may have acted, so a call is sent again then only when it cannot act twice.
pub fn next_server(method: &Method, outcome: Outcome) -> (bool, bool) {
    let idempotent = matches!(*method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS);
    match outcome {
        Outcome::NotConnected | Outcome::Refused => (true, true),
        Outcome::TimedOut | Outcome::Status(502..=504) => (true, idempotent),
        Outcome::Status(_) => (false, false),
    }
}

/// Percent-encodes a path segment or query value (everything but RFC 3986's unreserved characters).
pub fn urlencode(s: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const RESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    utf8_percent_encode(s, RESERVED).to_string()
}

/// The server URLs in a `--server-url` value: comma-separated, without trailing slashes.
pub fn server_urls(value: &str) -> Vec<String> {
    value.split(',').map(|u| u.trim().trim_end_matches('/').to_string()).filter(|u| !u.is_empty()).collect()
}

impl Client {
    pub fn new(base_url: &str, api_key: Option<String>) -> Client {
        let mut bases = server_urls(base_url);
        if bases.is_empty() {
            bases.push(base_url.to_string());
        }
        let http = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).build().unwrap_or_default();
        Client { http, bases: bases.into(), current: Arc::default(), api_key, answer_timeout: ANSWER_TIMEOUT }
    }

    /// This client with another limit on how long a server may take to answer before the next is
    /// tried (the worker's calls are small: a few seconds).
    pub fn with_answer_timeout(mut self, timeout: std::time::Duration) -> Client {
        self.answer_timeout = timeout;
        self
    }

    /// The server calls go to now.
    pub fn base_url(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Sends a request to the current server, or, when it cannot be reached, to the next that
    /// can; returns the URL that answered and its response.
    async fn execute(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        last_event_id: Option<i64>,
    ) -> Result<(String, reqwest::Response), ClientError> {
        let n = self.bases.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut failure = None;
        for k in 0..n {
            let i = (first + k) % n;
            let url = format!("{}{path}", self.bases[i]);
            let mut req = self.http.request(method.clone(), &url);
            if let Some(key) = &self.api_key {
                req = req.bearer_auth(key);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            if path.contains("watch=true") {
                // SSE with change numbers (other clients get GPUStack's line framing).
                req = req.header(reqwest::header::ACCEPT, "text/event-stream");
            }
            if let Some(id) = last_event_id {
                req = req.header("Last-Event-ID", id.to_string());
            }
            let (outcome, answer) = match tokio::time::timeout(self.answer_timeout, req.send()).await {
                Ok(Ok(res)) => {
                    let outcome = match res.status().as_u16() {
                        503 if res.headers().contains_key(NOT_ACTED) => Outcome::Refused,
                        status => Outcome::Status(status),
                    };
                    (outcome, Ok((url, res)))
                }
                Ok(Err(e)) if e.is_connect() => {
                    (Outcome::NotConnected, Err(ClientError::Connect { url, message: e.to_string() }))
                }
                Ok(Err(e)) if e.is_timeout() => {
                    (Outcome::TimedOut, Err(ClientError::Connect { url, message: e.to_string() }))
                }
                Ok(Err(e)) => return Err(ClientError::Connect { url, message: e.to_string() }),
                Err(_) => {
                    let message = format!("no answer within {} s", self.answer_timeout.as_secs_f32());
                    (Outcome::TimedOut, Err(ClientError::Connect { url, message }))
                }
            };
            let (move_on, resend) = if n > 1 { next_server(&method, outcome) } else { (false, false) };
            if move_on && k + 1 < n {
                let next = (i + 1) % n;
                if self.current.compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                    tracing::info!(server = %self.bases[i], next = %self.bases[next], ?outcome, "the server does not serve: moving to the next");
                }
                if resend {
                    failure = Some(answer);
                    continue;
                }
            } else if k > 0 && !move_on {
                self.current.store(i, Ordering::Relaxed);
            }
            return answer;
        }
        failure.unwrap_or_else(|| Err(ClientError::Connect { url: path.to_string(), message: "no server".into() }))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let (url, res) = self.execute(method, path, body, None).await?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| ClientError::Connect { url: url.clone(), message: e.to_string() })?;
        if status.is_success() {
            let body: &[u8] = if status == StatusCode::NO_CONTENT || bytes.is_empty() { b"null" } else { &bytes };
            return serde_json::from_slice(body).map_err(|e| ClientError::Unexpected {
                url,
                status: status.as_u16(),
                message: e.to_string(),
            });
        }
        Err(error_of(url, status.as_u16(), &bytes))
    }

    /// GETs a non-JSON body (e.g. `text/yaml`) as text; errors still arrive as the JSON envelope.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let (url, res) = self.execute(Method::GET, path, None, None).await?;
        let status = res.status();
        let text = res.text().await.map_err(|e| ClientError::Connect { url: url.clone(), message: e.to_string() })?;
        if status.is_success() {
            return Ok(text);
        }
        Err(error_of(url, status.as_u16(), text.as_bytes()))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(Method::GET, path, None).await
    }

    pub async fn list<T: DeserializeOwned>(&self, path: &str) -> Result<ListResponse<T>, ClientError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let full = format!("{path}{sep}page=-1");
        self.get(&full).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.send(Method::POST, path, Some(&json_of(path, body)?)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.send(Method::PUT, path, Some(&json_of(path, body)?)).await
    }

    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.send::<serde_json::Value>(Method::DELETE, path, None).await.map(|_| ())
    }

    /// Opens a streaming GET (a watch or a followed log), resuming after `last_event_id`: change
    /// numbers are the same on every server, so a watch resumes exactly on another one.
    pub async fn stream(&self, path: &str, last_event_id: Option<i64>) -> Result<reqwest::Response, ClientError> {
        let (url, res) = self.execute(Method::GET, path, None, last_event_id).await?;
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status().as_u16();
        let bytes = res.bytes().await.unwrap_or_default();
        Err(error_of(url, status, &bytes))
    }
}

fn json_of<B: Serialize>(path: &str, body: &B) -> Result<serde_json::Value, ClientError> {
    serde_json::to_value(body).map_err(|e| ClientError::Unexpected {
        url: path.to_string(),
        status: 0,
        message: format!("cannot encode the request body: {e}"),
    })
}

/// The error an unsuccessful answer means: the API's envelope, or the raw text.
fn error_of(url: String, status: u16, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ClientError::Api(body),
        Err(_) => {
            ClientError::Unexpected { url, status, message: String::from_utf8_lossy(bytes).chars().take(500).collect() }
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<i64>,
    pub data: String,
}

/// Incremental Server-Sent Events parser: feed bytes, get complete events.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: String,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.push_str(&String::from_utf8_lossy(bytes));
        let mut events = Vec::new();
        while let Some(pos) = self.buf.find("\n\n") {
            let block: String = self.buf.drain(..pos + 2).collect();
            let mut event = SseEvent { id: None, data: String::new() };
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    event.id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !event.data.is_empty() {
                        event.data.push('\n');
                    }
                    event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if !event.data.is_empty() {
                events.push(event);
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_a_comma_separated_list() {
        assert_eq!(server_urls("http://a:8080/"), ["http://a:8080"]);
        assert_eq!(server_urls("http://a:8080, http://b:8080/,"), ["http://a:8080", "http://b:8080"]);
        assert!(server_urls(" , ").is_empty());
    }

    /// A server that cannot be reached is skipped: the call goes to the next, and later calls
    /// stay there.
    #[tokio::test]
    async fn calls_move_to_a_server_that_answers() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
        drop(dead);
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let live_url = format!("http://{}", live.local_addr().expect("addr"));
        let app = axum::Router::new().route("/v2/x", axum::routing::get(|| async { axum::Json(7) }));
        tokio::spawn(async move { axum::serve(live, app).await });
        let c = Client::new(&format!("{dead_url},{live_url}"), None);
        assert_eq!(c.base_url(), dead_url);
        assert_eq!(c.get::<i64>("/v2/x").await.expect("answered by the live server"), 7);
        assert_eq!(c.base_url(), live_url, "later calls go to the server that answered");
        let only_dead = Client::new(&dead_url, None);
        assert!(matches!(only_dead.get::<i64>("/v2/x").await, Err(ClientError::Connect { .. })));
    }

    #[test]
    fn when_calls_move_to_the_next_server() {
        use Outcome::*;
        for (method, outcome, want) in [
            (Method::POST, NotConnected, (true, true)),
            // Refused before acting (a server without its database): sent to the next.
            (Method::POST, Refused, (true, true)),
            // A 503 without the mark may have acted (a statement timed out after a commit).
            (Method::POST, Status(503), (true, false)),
            (Method::PUT, Status(503), (true, true)),
            // Maybe acted: only an idempotent call is sent again; later calls move either way.
            (Method::GET, TimedOut, (true, true)),
            (Method::PUT, TimedOut, (true, true)),
            (Method::POST, TimedOut, (true, false)),
            (Method::POST, Status(502), (true, false)),
            (Method::GET, Status(504), (true, true)),
            // An answer: the call's own outcome.
            (Method::POST, Status(500), (false, false)),
            (Method::GET, Status(404), (false, false)),
            (Method::GET, Status(200), (false, false)),
        ] {
            assert_eq!(next_server(&method, outcome), want, "{method} {outcome:?}");
        }
    }

    /// A server that refuses with 503 (no database) or does not answer in time is left for the
    /// next; a POST that timed out is not sent twice.
    #[tokio::test]
    async fn calls_move_on_503_and_on_no_answer() {
        let refusing = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let refusing_url = format!("http://{}", refusing.local_addr().expect("addr"));
        let app = axum::Router::new().route(
            "/v2/x",
            axum::routing::any(|| async {
                (axum::http::StatusCode::SERVICE_UNAVAILABLE, [(NOT_ACTED, "1")], "no database")
            }),
        );
        tokio::spawn(async move { axum::serve(refusing, app).await });
        // Accepts connections and never answers (a stopped process).
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let hung_url = format!("http://{}", hung.local_addr().expect("addr"));
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = hung.accept().await {
                held.push(sock);
            }
        });
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let live_url = format!("http://{}", live.local_addr().expect("addr"));
        let posts = Arc::new(AtomicUsize::new(0));
        let counted = posts.clone();
        let app = axum::Router::new().route(
            "/v2/x",
            axum::routing::get(|| async { axum::Json(7) }).post(move || {
                counted.fetch_add(1, Ordering::Relaxed);
                async { axum::Json(8) }
            }),
        );
        tokio::spawn(async move { axum::serve(live, app).await });

        let c = Client::new(&format!("{refusing_url},{live_url}"), None);
        assert_eq!(c.post::<_, i64>("/v2/x", &1).await.expect("sent on to the live server"), 8);
        assert_eq!(c.base_url(), live_url);

        let quick = std::time::Duration::from_millis(300);
        let c = Client::new(&format!("{hung_url},{live_url}"), None).with_answer_timeout(quick);
        assert_eq!(c.get::<i64>("/v2/x").await.expect("sent on after no answer"), 7);
        assert_eq!(c.base_url(), live_url);
        let c = Client::new(&format!("{hung_url},{live_url}"), None).with_answer_timeout(quick);
        assert!(c.post::<_, i64>("/v2/x", &1).await.is_err(), "a POST that may have acted is not sent twice");
        assert_eq!(c.base_url(), live_url, "but the next call goes to the live server");
        assert_eq!(posts.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn sse_events_are_parsed_across_chunk_boundaries() {
        let mut p = SseParser::default();
        assert!(p.push(b"id: 4\ndata: {\"a\"").is_empty());
        let events = p.push(b":1}\n\n: keep-alive\n\nid: 5\ndata: x\n\n");
        assert_eq!(
            events,
            vec![SseEvent { id: Some(4), data: "{\"a\":1}".into() }, SseEvent { id: Some(5), data: "x".into() }]
        );
    }
}
