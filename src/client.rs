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
}
