//! The OpenAI-compatible surface and the generic proxy: find the request's model, check the
//! caller may use it and is within its limits, and forward it.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Response, header};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::prefix::Leading;
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
struct Head<'a> {
    model: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<bool>,
    /// Raw, `null` included, so the gateway can tell where it is in the body.
    #[serde(default, borrow, deserialize_with = "raw")]
    stream_options: Option<&'a RawValue>,
    /// Chat messages and the completion prompt, as raw text: the leading content a
    /// `prefix_aware` route hashes ([`super::prefix`]); never decoded.
    #[serde(default, borrow)]
    messages: Option<&'a RawValue>,
    #[serde(default, borrow)]
    prompt: Option<&'a RawValue>,
}

/// The part of `body` that `part` (a slice of it) covers, shared rather than copied.
fn slice_of(body: &Bytes, part: &RawValue) -> Option<Bytes> {
    let text = part.get().as_bytes();
    let at = (text.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = at.checked_add(text.len())?;
    (body.get(at..end)? == text).then(|| body.slice(at..end))
}

fn raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Paths (as the engine sees them) whose streams report usage only when asked
/// (`stream_options.include_usage`): OpenAI's chat and text completions, with llama.cpp's
/// aliases without `/v1`.
fn streams_usage_on_request(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default().trim_end_matches('/');
    matches!(path, "/v1/chat/completions" | "/v1/completions" | "/chat/completions" | "/completions")
}

/// The body with `stream_options.include_usage` set to true, the rest byte for byte: the object
/// `stream_options` was (or `null`) is replaced, or one is added as the first member. `None` when
/// the body is not an object or `raw` is not a slice of it.
fn ask_for_usage(body: &[u8], stream_options: Option<&RawValue>) -> Option<Bytes> {
    let (at, end, value) = match stream_options {
        Some(raw) => {
            let text = raw.get();
            let at = (text.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
            let end = at.checked_add(text.len())?;
            if body.get(at..end)? != text.as_bytes() {
                return None;
            }
            let mut options =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).unwrap_or_default();
            options.insert("include_usage".into(), serde_json::Value::Bool(true));
            (at, end, serde_json::to_vec(&options).ok()?)
        }
        None => {
            let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
            if body[open] != b'{' {
                return None;
            }
            let empty = body[open + 1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
            let member = if empty {
                "\"stream_options\":{\"include_usage\":true}"
            } else {
                "\"stream_options\":{\"include_usage\":true},"
            };
            (open + 1, open + 1, member.as_bytes().to_vec())
        }
    };
    let mut out = Vec::with_capacity(body.len() + value.len());
    out.extend_from_slice(&body[..at]);
    out.extend_from_slice(&value);
    out.extend_from_slice(&body[end..]);
    Some(Bytes::from(out))
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
    /// The request's leading content (raw `messages`, else `prompt`), for prefix-aware routing.
    leading: Option<Leading>,
}

/// Reads the model. On a stream from a path that reports usage only when asked
/// ([`streams_usage_on_request`]), asks for it whatever the client said, and marks the usage-only
/// chunk for removal unless the client asked for it too: usage is what the key is charged and
/// limited by. The body is parsed once; a rewrite copies it with `stream_options` spliced in.
fn parse(headers: &HeaderMap, body: Bytes, path: &str) -> Result<Parsed, GatewayError> {
    let ct = content_type(headers);
    if ct.starts_with("multipart/form-data") {
        return Ok(Parsed { model: multipart_model(&ct, &body), body, strip_usage: false, json: false, leading: None });
    }
    if body.is_empty() || !(ct.is_empty() || ct.contains("json")) {
        return Ok(Parsed { model: None, body, strip_usage: false, json: false, leading: None });
    }
    let head: Head = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::BadRequest(format!("the request body is not valid JSON: {e}")))?;
    let model = match head.model {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(_) => return Err(GatewayError::BadRequest("model: must be a string".into())),
    };
    let asked = head
        .stream_options
        .and_then(|o| serde_json::from_str::<StreamOptions>(o.get()).ok())
        .is_some_and(|o| o.include_usage == Some(true));
    let leading = match (head.messages, head.prompt) {
        (Some(m), _) => slice_of(&body, m).map(Leading::Messages),
        (None, Some(p)) => slice_of(&body, p).map(Leading::Prompt),
        (None, None) => None,
    };
    if head.stream == Some(true)
        && !asked
        && streams_usage_on_request(path)
        && let Some(rewritten) = ask_for_usage(&body, head.stream_options)
    {
        return Ok(Parsed { model, body: rewritten, strip_usage: true, json: true, leading });
    }
    Ok(Parsed { model, body, strip_usage: false, json: true, leading })
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
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
        if !route.ready() && self.snapshot().wakeable(route.id).is_empty() {
            self.shared.metrics.error(&route.name, "no_instance");
            return Err(GatewayError::NoInstance(route.name.clone()));
        }
        Ok(())
    }

    /// `POST /v1/...`: routes by the body's `model`.
    pub async fn openai(&self, caller: &Caller, parts: Parts, body: Bytes) -> Result<Response<Body>, GatewayError> {
        let parsed = parse(&parts.headers, body, parts.uri.path())?;
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
        let path_and_query = stripped(path, &parts);
        let parsed = parse(&parts.headers, body.clone(), &path_and_query).unwrap_or(Parsed {
            model: None,
            body,
            strip_usage: false,
            json: false,
            leading: None,
        });
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
        let path_and_query = stripped(path, &parts);
        let parsed = parse(&parts.headers, body.clone(), &path_and_query).unwrap_or(Parsed {
            model: None,
            body,
            strip_usage: false,
            json: false,
            leading: None,
        });
        let name = header_model.or(parsed.model.clone()).ok_or_else(|| {
            GatewayError::BadRequest("name the model in the X-GPUStack-Model header or the body's \"model\"".into())
        })?;
        let route = self.admit(caller, &name)?;
        if !route.generic_proxy {
            return Err(GatewayError::ProxyDisabled(route.name.clone()));
        }
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
        // A sleeping autoscaled route: held until it wakes (`wake.rs`).
        let route = if route.ready() { route } else { self.wait_for_instance(route).await? };
        let out = Outgoing {
            operation: operation(parts.uri.path()),
            route: route.clone(),
            method: parts.method,
            path_and_query,
            headers: parts.headers,
            body: parsed.body,
            model: parsed.model.filter(|_| parsed.json),
            strip_usage: parsed.strip_usage,
            leading: parsed.leading,
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
            .filter(|r| (r.ready() || !snapshot.wakeable(r.id).is_empty()) && caller.may_use(&r.name))
            .map(|r| {
                let mut meta = serde_json::json!({"categories": r.categories});
                // Autoscaled routes say whether they sleep (the first request wakes them).
                if !snapshot.wakeable(r.id).is_empty() {
                    meta["sleeping"] = serde_json::Value::Bool(!r.ready());
                }
                serde_json::json!({"id": r.name, "object": "model", "created": r.created, "owned_by": "ferrostack",
                                   "meta": meta})
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

    fn json() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/json".parse().expect("ct"));
        h
    }

    #[test]
    fn streams_always_ask_for_usage() {
        const CHAT: &str = "/v1/chat/completions";
        // (path, body, body sent on (None: unchanged), usage chunk stripped)
        let table: &[(&str, &str, Option<&str>, bool)] = &[
            (
                CHAT,
                r#"{"model":"m","stream":true}"#,
                Some(r#"{"stream_options":{"include_usage":true},"model":"m","stream":true}"#),
                true,
            ),
            (
                CHAT,
                r#" {"stream":true,"stream_options":{"include_usage":false,"x":1},"model":"m"}"#,
                Some(r#" {"stream":true,"stream_options":{"include_usage":true,"x":1},"model":"m"}"#),
                true,
            ),
            (
                CHAT,
                r#"{"stream":true,"stream_options":null}"#,
                Some(r#"{"stream":true,"stream_options":{"include_usage":true}}"#),
                true,
            ),
            (
                CHAT,
                r#"{"stream":true,"stream_options":{}}"#,
                Some(r#"{"stream":true,"stream_options":{"include_usage":true}}"#),
                true,
            ),
            (
                "/v1/completions",
                r#"{"stream":true,"prompt":"é \"}"}"#,
                Some(r#"{"stream_options":{"include_usage":true},"stream":true,"prompt":"é \"}"}"#),
                true,
            ),
            (
                "/completions?x=1",
                r#"{"stream":true}"#,
                Some(r#"{"stream_options":{"include_usage":true},"stream":true}"#),
                true,
            ),
            // The client asked: its body goes on byte for byte and it gets the chunk.
            (CHAT, r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#, None, false),
            // Not a stream, or a path whose streams need no asking.
            (CHAT, r#"{"model":"m"}"#, None, false),
            (CHAT, r#"{"model":"m","stream":false}"#, None, false),
            ("/v1/responses", r#"{"model":"m","stream":true}"#, None, false),
            ("/completion", r#"{"prompt":"x","stream":true}"#, None, false),
            ("/v1/embeddings", r#"{"model":"m","stream":true}"#, None, false),
        ];
        for (path, body, sent, strip) in table {
            let p = parse(&json(), Bytes::copy_from_slice(body.as_bytes()), path).expect("parse");
            let got = std::str::from_utf8(&p.body).expect("utf8");
            assert_eq!(got, sent.unwrap_or(body), "{path} {body}");
            assert_eq!(p.strip_usage, *strip, "{path} {body}");
            assert!(p.json);
            serde_json::from_str::<serde_json::Value>(got).expect("still JSON");
        }
        assert!(parse(&json(), Bytes::from_static(b"{nope"), CHAT).is_err());
        assert!(parse(&json(), Bytes::from_static(br#"{"model":1}"#), CHAT).is_err());
    }

    #[test]
    fn the_leading_content_is_the_raw_messages_or_prompt() {
        const CHAT: &str = "/v1/chat/completions";
        // (path, body, leading content)
        let table: &[(&str, &str, Option<&str>)] = &[
            (
                CHAT,
                r#"{"model":"m","messages":[{"role":"system","content":"S\n"}]}"#,
                Some(r#"[{"role":"system","content":"S\n"}]"#),
            ),
            // Streams are rewritten; the leading content is the client's, unchanged.
            (
                CHAT,
                r#"{"stream":true,"messages": [ {"role":"user","content":"q"} ] ,"model":"m"}"#,
                Some(r#"[ {"role":"user","content":"q"} ]"#),
            ),
            ("/v1/completions", r#"{"model":"m","prompt":"Once upon"}"#, Some(r#""Once upon""#)),
            ("/v1/completions", r#"{"model":"m","prompt":[1,2,3]}"#, Some("[1,2,3]")),
            (
                CHAT,
                r#"{"messages":[{"role":"user","content":"a"}],"prompt":"p"}"#,
                Some(r#"[{"role":"user","content":"a"}]"#),
            ),
            ("/v1/embeddings", r#"{"model":"m","input":"x"}"#, None),
        ];
        for (path, body, leading) in table {
            let p = parse(&json(), Bytes::copy_from_slice(body.as_bytes()), path).expect("parse");
            assert_eq!(p.leading.as_ref().map(Leading::raw), leading.map(str::as_bytes), "{body}");
        }
    }

    #[test]
    fn usage_is_asked_for_only_in_objects() {
        assert_eq!(ask_for_usage(b"[1]", None), None);
        assert_eq!(
            ask_for_usage(b"  { } ", None).as_deref(),
            Some(&br#"  {"stream_options":{"include_usage":true} } "#[..])
        );
        // A raw value that is not a slice of the body is never spliced.
        let elsewhere: Box<RawValue> = RawValue::from_string("{}".into()).expect("raw");
        assert_eq!(ask_for_usage(br#"{"stream_options":{}}"#, Some(&elsewhere)), None);
    }
}
