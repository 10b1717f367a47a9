//! The OpenAI-compatible surface and the generic proxy: find the request's model, check the
//! caller may use it and is within its limits, and forward it.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Response, header};
use serde::Deserialize;

use super::proxy::Outgoing;
use super::{Caller, Gateway, GatewayError, Route};

/// The `operation` recorded with usage, from the request path.
pub fn operation(path: &str) -> &'static str {
    match path.trim_end_matches('/') {
        "/v1/chat/completions" => "chat_completion",
        "/v1/completions" => "completion",
        "/v1/embeddings" => "embedding",
        "/v1/rerank" => "rerank",
        "/v1/responses" => "responses",
        "/v1/audio/speech" => "audio_speech",
        "/v1/audio/transcriptions" => "audio_transcription",
        "/v1/images/generations" => "image_generation",
        _ => "proxy",
    }
}

#[derive(Deserialize)]
struct Head {
    model: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<serde_json::Value>,
}

fn content_type(headers: &HeaderMap) -> String {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase()
}

/// The value of the `model` field of a multipart form, found without decoding the files.
pub fn multipart_model(content_type: &str, body: &[u8]) -> Option<String> {
    let boundary = content_type.split(';').find_map(|p| p.trim().strip_prefix("boundary="))?.trim_matches('"');
    let delimiter = format!("--{boundary}");
    let text = body;
    let mut rest = text;
    while let Some(pos) = find(rest, delimiter.as_bytes()) {
        rest = &rest[pos + delimiter.len()..];
        let Some(head_end) = find(rest, b"\r\n\r\n") else { break };
        let head = String::from_utf8_lossy(&rest[..head_end]).to_ascii_lowercase();
        if head.contains("name=\"model\"") {
            let value = &rest[head_end + 4..];
            let end = find(value, format!("\r\n{delimiter}").as_bytes()).unwrap_or(value.len());
            return Some(String::from_utf8_lossy(&value[..end]).trim().to_string());
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What a body says: its model, and (for JSON) whether it streams.
struct Parsed {
    model: Option<String>,
    body: Bytes,
    strip_usage: bool,
    json: bool,
}

/// Reads the model; on a stream that did not ask for usage, asks for it (and marks the extra
/// chunk for removal).
fn parse(headers: &HeaderMap, body: Bytes, inject_usage: bool) -> Result<Parsed, GatewayError> {
    let ct = content_type(headers);
    if ct.starts_with("multipart/form-data") {
        return Ok(Parsed { model: multipart_model(&ct, &body), body, strip_usage: false, json: false });
    }
    if body.is_empty() || !(ct.is_empty() || ct.contains("json")) {
        return Ok(Parsed { model: None, body, strip_usage: false, json: false });
    }
    let head: Head = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::BadRequest(format!("the request body is not valid JSON: {e}")))?;
    let model = match head.model {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(_) => return Err(GatewayError::BadRequest("model: must be a string".into())),
    };
    let asked = head.stream_options.as_ref().and_then(|o| o.get("include_usage")).and_then(|v| v.as_bool());
    if inject_usage && head.stream == Some(true) && asked.is_none() {
        let mut v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| GatewayError::BadRequest(format!("the request body is not valid JSON: {e}")))?;
        if let Some(obj) = v.as_object_mut() {
            let opts = obj.entry("stream_options").or_insert_with(|| serde_json::json!({}));
            if let Some(o) = opts.as_object_mut() {
                o.insert("include_usage".into(), serde_json::Value::Bool(true));
                let body =
                    serde_json::to_vec(&v).map(Bytes::from).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
                return Ok(Parsed { model, body, strip_usage: true, json: true });
            }
        }
    }
    Ok(Parsed { model, body, strip_usage: false, json: true })
}

impl Gateway {
    fn admit(&self, caller: &Caller, name: &str) -> Result<Arc<Route>, GatewayError> {
        if !caller.may_use(name) {
            self.shared.metrics.error(name, "forbidden");
            return Err(GatewayError::NotAllowed(name.to_string()));
        }
        let Some(route) = self.snapshot().by_name(name).cloned() else {
            self.shared.metrics.error("", "unknown_model");
            return Err(GatewayError::UnknownModel(name.to_string()));
        };
        self.limit(caller, &route)?;
        Ok(route)
    }

    fn limit(&self, caller: &Caller, route: &Route) -> Result<(), GatewayError> {
        if caller.api_key_id != 0
            && let Err(retry_after) = self.shared.limiter.admit(caller.api_key_id, caller.rpm_limit, caller.tpm_limit)
        {
            self.shared.metrics.error(&route.name, "rate_limited");
            return Err(GatewayError::RateLimited { retry_after });
        }
        if !route.ready() {
            self.shared.metrics.error(&route.name, "no_instance");
            return Err(GatewayError::NoInstance(route.name.clone()));
        }
        Ok(())
    }

    /// `POST /v1/...`: routes by the body's `model`.
    pub async fn openai(&self, caller: &Caller, parts: Parts, body: Bytes) -> Result<Response<Body>, GatewayError> {
        let parsed = parse(&parts.headers, body, true)?;
        let name = parsed.model.clone().ok_or_else(|| GatewayError::BadRequest("model: required".into()))?;
        let route = self.admit(caller, &name)?;
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        self.send(caller, route, parts, parsed, path_and_query).await
    }

    /// `ANY /model/proxy/{route_id}/{path}`: the route by id, the prefix stripped.
    pub async fn proxy_route(
        &self,
        caller: &Caller,
        route_id: i64,
        path: &str,
        parts: Parts,
        body: Bytes,
    ) -> Result<Response<Body>, GatewayError> {
        let route = self.snapshot().by_id(route_id).cloned().ok_or(GatewayError::UnknownRoute(route_id))?;
        if !caller.may_use(&route.name) {
            return Err(GatewayError::NotAllowed(route.name.clone()));
        }
        if !route.generic_proxy {
            return Err(GatewayError::ProxyDisabled(route.name.clone()));
        }
        self.limit(caller, &route)?;
        let parsed = parse(&parts.headers, body, false).unwrap_or_else(|_| Parsed {
            model: None,
            body: Bytes::new(),
            strip_usage: false,
            json: false,
        });
        let path_and_query = stripped(path, &parts);
        self.send(caller, route, parts, parsed, path_and_query).await
    }

    /// Deprecated `ANY /model/proxy/{path}`: the route from `X-GPUStack-Model` or the body's model.
    pub async fn proxy_model(
        &self,
        caller: &Caller,
        path: &str,
        parts: Parts,
        body: Bytes,
    ) -> Result<Response<Body>, GatewayError> {
        let header_model = parts.headers.get("x-gpustack-model").and_then(|v| v.to_str().ok()).map(str::to_string);
        let parsed = parse(&parts.headers, body.clone(), false).unwrap_or(Parsed {
            model: None,
            body,
            strip_usage: false,
            json: false,
        });
        let name = header_model.or(parsed.model.clone()).ok_or_else(|| {
            GatewayError::BadRequest("name the model in the X-GPUStack-Model header or the body's \"model\"".into())
        })?;
        let route = self.admit(caller, &name)?;
        if !route.generic_proxy {
            return Err(GatewayError::ProxyDisabled(route.name.clone()));
        }
        let path_and_query = stripped(path, &parts);
        self.send(caller, route, parts, parsed, path_and_query).await
    }

    async fn send(
        &self,
        caller: &Caller,
        route: Arc<Route>,
        parts: Parts,
        parsed: Parsed,
        path_and_query: String,
    ) -> Result<Response<Body>, GatewayError> {
        let out = Outgoing {
            operation: operation(parts.uri.path()),
            route: route.clone(),
            method: parts.method,
            path_and_query,
            headers: parts.headers,
            body: parsed.body,
            model: parsed.model.filter(|_| parsed.json),
            strip_usage: parsed.strip_usage,
            user_id: caller.user_id,
            api_key_id: caller.api_key_id,
        };
        let res = self.forward(out).await;
        if let Err(e) = &res {
            let reason = match e {
                GatewayError::Timeout(_) => "timeout",
                GatewayError::NoInstance(_) => "no_instance",
                _ => "upstream",
            };
            self.shared.metrics.error(&route.name, reason);
        }
        res
    }

    /// `GET /v1/models`: the routes the caller may use that have a running instance.
    pub fn models(&self, caller: &Caller) -> serde_json::Value {
        let snapshot = self.snapshot();
        let data: Vec<serde_json::Value> = snapshot
            .routes()
            .iter()
            .filter(|r| r.ready() && caller.may_use(&r.name))
            .map(|r| {
                serde_json::json!({"id": r.name, "object": "model", "created": r.created, "owned_by": "ferrostack",
                                   "meta": {"categories": r.categories}})
            })
            .collect();
        serde_json::json!({"object": "list", "data": data})
    }
}

/// `/{path}` plus the original query.
fn stripped(path: &str, parts: &Parts) -> String {
    let path = path.trim_start_matches('/');
    match parts.uri.query() {
        Some(q) => format!("/{path}?{q}"),
        None => format!("/{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_forms_name_their_model() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF....\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--XyZ--\r\n";
        assert_eq!(multipart_model("multipart/form-data; boundary=XyZ", body).as_deref(), Some("whisper"));
        assert_eq!(multipart_model("multipart/form-data; boundary=other", body), None);
    }

    #[test]
    fn streams_ask_for_usage_once() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/json".parse().expect("ct"));
        let p = parse(&h, Bytes::from_static(br#"{"model":"m","stream":true}"#), true).expect("parse");
        assert!(p.strip_usage);
        let v: serde_json::Value = serde_json::from_slice(&p.body).expect("json");
        assert_eq!(v["stream_options"]["include_usage"], true);
        let asked = br#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#;
        let p = parse(&h, Bytes::from_static(asked), true).expect("parse");
        assert!(!p.strip_usage && p.body.as_ref() == asked, "the client's choice is kept byte for byte");
        let plain = br#"{"model":"m"}"#;
        let p = parse(&h, Bytes::from_static(plain), true).expect("parse");
        assert!(!p.strip_usage && p.body.as_ref() == plain && p.model.as_deref() == Some("m"));
        assert!(parse(&h, Bytes::from_static(b"{nope"), true).is_err());
    }
}
