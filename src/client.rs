//! Typed HTTP client for the management API, used by the CLI, the worker and tests.

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

/// A client bound to one server and one API key.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl Client {
    pub fn new(base_url: &str, api_key: Option<String>) -> Client {
        Client { http: reqwest::Client::new(), base: base_url.trim_end_matches('/').to_string(), api_key }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let res = req.send().await.map_err(|e| ClientError::Connect { url: url.clone(), message: e.to_string() })?;
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
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api(body)),
            Err(_) => Err(ClientError::Unexpected {
                url,
                status: status.as_u16(),
                message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            }),
        }
    }

    /// GETs a non-JSON body (e.g. `text/yaml`) as text; errors still arrive as the JSON envelope.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let url = format!("{}{path}", self.base);
        let connect = |e: reqwest::Error| ClientError::Connect { url: url.clone(), message: e.to_string() };
        let res = self.request(Method::GET, path).send().await.map_err(connect)?;
        let status = res.status();
        let text = res.text().await.map_err(connect)?;
        if status.is_success() {
            return Ok(text);
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(ClientError::Api(body)),
            Err(_) => Err(ClientError::Unexpected {
                url: url.clone(),
                status: status.as_u16(),
                message: text.chars().take(500).collect(),
            }),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.request(Method::GET, path), path).await
    }

    pub async fn list<T: DeserializeOwned>(&self, path: &str) -> Result<ListResponse<T>, ClientError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let full = format!("{path}{sep}page=-1");
        self.get(&full).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.send(self.request(Method::POST, path).json(body), path).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.send(self.request(Method::PUT, path).json(body), path).await
    }

    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.send::<serde_json::Value>(self.request(Method::DELETE, path), path).await.map(|_| ())
    }

    /// Opens a streaming GET (a watch or a followed log), resuming after `last_event_id`.
    pub async fn stream(&self, path: &str, last_event_id: Option<i64>) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.request(Method::GET, path);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let res = req.send().await.map_err(|e| ClientError::Connect { url: url.clone(), message: e.to_string() })?;
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status().as_u16();
        let bytes = res.bytes().await.unwrap_or_default();
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => ClientError::Api(body),
            Err(_) => ClientError::Unexpected { url, status, message: String::from_utf8_lossy(&bytes).into_owned() },
        })
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
