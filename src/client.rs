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

/// A client bound to one API key and one or more servers (`--server-url a,b`: servers sharing one
/// database). Calls go to the server that answered last; one that cannot be reached is skipped
/// for the next, and the call is sent there (nothing reached the first, so nothing is sent twice).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    bases: Arc<[String]>,
    current: Arc<AtomicUsize>,
    api_key: Option<String>,
}

/// Percent-encodes a path segment or query value (everything but RFC 3986's unreserved characters).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
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
        Client { http, bases: bases.into(), current: Arc::default(), api_key }
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
        let first = self.current.load(Ordering::Relaxed);
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
            if let Some(id) = last_event_id {
                req = req.header("Last-Event-ID", id.to_string());
            }
            match req.send().await {
                Ok(res) => {
                    if k > 0 {
                        self.current.store(i, Ordering::Relaxed);
                        tracing::info!(server = %self.bases[i], "the previous server does not answer: now using this one");
                    }
                    return Ok((url, res));
                }
                // Not connected: nothing was sent; try the next server.
                Err(e) if e.is_connect() => failure = Some(ClientError::Connect { url, message: e.to_string() }),
                Err(e) => return Err(ClientError::Connect { url, message: e.to_string() }),
            }
        }
        Err(failure.unwrap_or_else(|| ClientError::Connect { url: path.to_string(), message: "no server".into() }))
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
