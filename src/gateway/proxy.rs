//! Forwarding one request to an instance: pick (never a draining one), connect (a request that
//! reached no instance, or lost its connection before any answer byte, goes to another; see
//! [`resend`]), hand a fallback target the answers it catches, and stream the response back.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, Request, Response, Uri};

use super::usage::{Accounting, MeteredBody, Scanner, UsageEvent};
use super::{Gateway, GatewayError, Route};

/// Most attempts per request when instances refuse connections.
const MAX_CONNECT_ATTEMPTS: usize = 3;

/// Headers that belong to one hop (RFC 9110 §7.6.1) or carry the caller's credentials.
fn dropped(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "authorization"
            | "x-api-key"
            | "cookie"
            | "x-gpustack-model"
    )
}

fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "te" | "trailer" | "transfer-encoding" | "upgrade"
    )
}

/// Response headers an engine may not pass to the client. The gateway answers on the server's
/// own origin, where the web UI runs with its session: an engine must not act on that origin
/// (cookies, site data, CORS grants, service-worker scope, HSTS, alternative services, network
/// error reporting, client hints), make the browser act on its own (`Refresh`, `Link` preloads and
/// stylesheets, authentication prompts), or loosen the confinement the gateway sets
/// ([`CONFINEMENT`]).
fn origin_affecting(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("access-control-")
        || matches!(
            name,
            "set-cookie"
                | "set-cookie2"
                | "clear-site-data"
                | "service-worker-allowed"
                | "refresh"
                | "link"
                | "www-authenticate"
                | "strict-transport-security"
                | "alt-svc"
                | "nel"
                | "report-to"
                | "reporting-endpoints"
                | "accept-ch"
                | "critical-ch"
                | "origin-agent-cluster"
                | "speculation-rules"
                | "content-security-policy"
                | "content-security-policy-report-only"
                | "x-content-type-options"
                | "cross-origin-resource-policy"
        )
}

/// Set on every proxied answer: a page an engine serves (llama.cpp's web UI, or anything an
/// engine's owner makes it send) opens as a sandboxed document with an opaque origin, so its
/// scripts cannot call the management API with the viewer's session; no type sniffing turns JSON
/// or text into HTML; other sites cannot embed the answers.
const CONFINEMENT: [(&str, &str); 3] = [
    ("content-security-policy", "sandbox"),
    ("x-content-type-options", "nosniff"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// The headers the client gets: the engine's, less hop-by-hop and origin-affecting ones (and the
/// length when the body is rewritten), plus [`CONFINEMENT`].
fn answer_headers(upstream: &HeaderMap, rewritten: bool) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(upstream.len() + CONFINEMENT.len());
    for (k, v) in upstream {
        if !(hop_by_hop(k) || origin_affecting(k) || rewritten && k == header::CONTENT_LENGTH) {
            headers.append(k.clone(), v.clone());
        }
    }
    for (k, v) in CONFINEMENT {
        headers.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    headers
}

/// One request on its way upstream.
pub(crate) struct Outgoing {
    pub route: Arc<Route>,
    pub method: Method,
    /// Path and query as the instance sees them.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The `model` the client sent, if any (rewritten when a target serves another name).
    pub model: Option<String>,
    pub operation: &'static str,
    /// Drop the usage-only stream chunk the gateway asked for.
    pub strip_usage: bool,
    /// The leading content a `prefix_aware` route hashes ([`super::prefix::key_of`]).
    pub leading: Option<super::prefix::Leading>,
    pub user_id: i64,
    pub api_key_id: i64,
}

fn rewrite_model(body: &Bytes, served: &str) -> Bytes {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut v) if v.is_object() => {
            v["model"] = serde_json::Value::String(served.to_string());
            serde_json::to_vec(&v).map(Bytes::from).unwrap_or_else(|_| body.clone())
        }
        _ => body.clone(),
    }
}

impl Gateway {
    pub(crate) async fn forward(&self, out: Outgoing) -> Result<Response<Body>, GatewayError> {
        let shared = &self.shared;
        let route = out.route.clone();
        let started = Instant::now();
        let mut exclude: Vec<i64> = Vec::new();
        let mut fallback_for: Option<u16> = None;
        let mut connect_failures = 0;
        // Hashed only for a route that routes by prefix.
        let prefix = (route.load_balancing == super::snapshot::LoadBalancing::PrefixAware)
            .then(|| out.leading.as_ref().and_then(super::prefix::key_of))
            .flatten();
        // Requests sent whose connection was lost before any answer (resent at most once), and the
        // instance that lost it: asked again on a fresh connection when no other one is left (a
        // pooled connection its engine closed as it was reused).
        let mut lost = 0;
        let mut lost_on: Option<i64> = None;
        loop {
            // Draining instances are withdrawn, even from a route read before they began to drain.
            let routed = route.targets.iter().flat_map(|t| t.instances.iter()).map(|e| e.instance_id);
            for id in shared.drains.withdrawn_among(routed) {
                if !exclude.contains(&id) {
                    exclude.push(id);
                }
            }
            let Some(lease) = shared.balancer.pick_keyed(&route, &exclude, fallback_for, prefix) else {
                if let Some(id) = lost_on.take() {
                    exclude.retain(|x| *x != id);
                    continue;
                }
                return Err(if connect_failures > 0 {
                    GatewayError::Upstream(format!(
                        "{connect_failures} attempt(s) failed before an answer (connection refused, or closed before any \
                         response byte)"
                    ))
                } else {
                    GatewayError::NoInstance(route.name.clone())
                });
            };
            let target = &route.targets[lease.target];
            let body = match &out.model {
                Some(m) if *m != target.served_name && out.headers.get(header::CONTENT_TYPE).is_some_and(is_json) => {
                    rewrite_model(&out.body, &target.served_name)
                }
                _ => out.body.clone(),
            };
            let uri: Uri = format!("http://{}{}", lease.endpoint.addr, out.path_and_query)
                .parse()
                .map_err(|e| GatewayError::BadRequest(format!("invalid path: {e}")))?;
            let mut req = Request::builder().method(out.method.clone()).uri(uri);
            if let Some(h) = req.headers_mut() {
                for (k, v) in &out.headers {
                    if !dropped(k) {
                        h.append(k.clone(), v.clone());
                    }
                }
                // The engine key opens only the OpenAI API: the generic proxy can name any path,
                // and an engine's own admin routes (SGLang's server info, weight updates) must
                // not be reached with the gateway's key.
                if let Some(auth) = &lease.endpoint.auth
                    && carries_engine_key(&out.path_and_query)
                {
                    h.insert(header::AUTHORIZATION, auth.clone());
                }
                if !body.is_empty() || out.method != Method::GET {
                    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                }
            }
            let req = req.body(Body::from(body)).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
            let sent = shared.client.request(req);
            let res = match route.timeout {
                None => sent.await,
                Some(t) => match tokio::time::timeout(t, sent).await {
                    Ok(r) => r,
                    Err(_) => return Err(GatewayError::Timeout(t.as_secs())),
                },
            };
            let res = match res {
                Ok(res) => res,
                Err(e) => {
                    let failure = failure_of(&e);
                    if failure == Failure::Other {
                        return Err(GatewayError::Upstream(e.to_string()));
                    }
                    tracing::debug!(instance = lease.endpoint.instance_id, error = %e, ?failure, "no answer; retrying");
                    shared.balancer.failed(&lease);
                    exclude.push(lease.endpoint.instance_id);
                    connect_failures += 1;
                    if failure == Failure::LostBeforeAnswer {
                        lost += 1;
                        lost_on = Some(lease.endpoint.instance_id);
                    }
                    if !resend(failure, connect_failures, lost) {
                        return Err(GatewayError::Upstream(format!("{connect_failures} connect failures; last: {e}")));
                    }
                    shared.metrics.retries.inc();
                    continue;
                }
            };
            shared.balancer.succeeded(&lease);
            let status = res.status().as_u16();
            if fallback_for.is_none()
                && status >= 400
                && route.targets.iter().any(|t| t.is_fallback() && t.catches(status))
            {
                let excluded = exclude.len();
                exclude.push(lease.endpoint.instance_id);
                if shared.balancer.pick(&route, &exclude, Some(status)).is_some() {
                    fallback_for = Some(status);
                    continue;
                }
                exclude.truncate(excluded);
            }
            shared.metrics.requests.with_label_values(&[route.name.as_str(), res.status().as_str()]).inc();
            let (parts, incoming) = res.into_parts();
            let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let scanner = Scanner::for_content_type(content_type, out.strip_usage);
            let accounting = Accounting {
                shared: shared.clone(),
                event: UsageEvent {
                    at: chrono::Utc::now(),
                    user_id: out.user_id,
                    api_key_id: out.api_key_id,
                    route_id: route.id,
                    route_name: route.name.clone(),
                    model_name: target.served_name.clone(),
                    operation: out.operation,
                    usage: None,
                },
                started,
                lease: Some(lease),
            };
            let stripping = matches!(scanner, Scanner::Sse { strip: true, .. });
            let mut response = Response::new(Body::new(MeteredBody::new(incoming, scanner, accounting)));
            *response.status_mut() = parts.status;
            *response.headers_mut() = answer_headers(&parts.headers, stripping);
            return Ok(response);
        }
    }
}

/// Whether a request to this path gets the engine key: the OpenAI API (`/v1/…`) only.
fn carries_engine_key(path_and_query: &str) -> bool {
    let path = path_and_query.split('?').next().unwrap_or_default();
    path.starts_with("/v1/") && !path.contains("/../") && !path.contains("/./")
}

fn is_json(v: &HeaderValue) -> bool {
    v.to_str().is_ok_and(|s| s.to_ascii_lowercase().contains("json"))
}

/// How a request failed before its instance answered, as far as sending it again goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// No connection (refused, unreachable, connect timeout): the instance saw nothing.
    NotConnected,
    /// Sent, then the connection closed or was reset before any byte of an answer (a pooled
    /// connection to an engine that is going away): nothing reached the client either.
    LostBeforeAnswer,
    /// Anything else: never sent again.
    Other,
}

/// The retry rule: a request that never reached an instance goes to another one, up to
/// [`MAX_CONNECT_ATTEMPTS`] instances in all; one whose connection was lost before any answer
/// byte is sent again once (`lost`: how many were lost so far, this one included). A request
/// whose answer began is never sent again (it never gets here: `forward` returns it).
fn resend(failure: Failure, attempts_failed: usize, lost: usize) -> bool {
    match failure {
        Failure::NotConnected => attempts_failed < MAX_CONNECT_ATTEMPTS,
        Failure::LostBeforeAnswer => lost <= 1 && attempts_failed < MAX_CONNECT_ATTEMPTS,
        Failure::Other => false,
    }
}

/// Connection errors that mean the peer closed or reset it under the request.
fn lost_io(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind as K;
    matches!(kind, K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof)
}

/// What kind of failure the client's error is (before any response header arrived: hyper's
/// client answers only once the headers are in).
fn failure_of(e: &hyper_util::client::legacy::Error) -> Failure {
    if e.is_connect() {
        return Failure::NotConnected;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && (h.is_canceled() || h.is_incomplete_message())
        {
            return Failure::LostBeforeAnswer;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && lost_io(io.kind())
        {
            return Failure::LostBeforeAnswer;
        }
        source = s.source();
    }
    Failure::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_never_act_on_the_servers_origin() {
        // (header, value, passed on)
        let table = [
            ("content-type", "text/html", true),
            ("x-request-id", "abc", true),
            ("location", "/elsewhere", true),
            ("set-cookie", "ferrostack_session=evil; Path=/", false),
            ("set-cookie2", "x=1", false),
            ("clear-site-data", "\"cookies\"", false),
            ("access-control-allow-origin", "*", false),
            ("access-control-allow-credentials", "true", false),
            ("access-control-expose-headers", "*", false),
            ("service-worker-allowed", "/", false),
            ("refresh", "0; url=https://evil.example", false),
            ("link", "<https://evil.example/x.css>; rel=stylesheet", false),
            ("www-authenticate", "Basic realm=x", false),
            ("strict-transport-security", "max-age=63072000; includeSubDomains", false),
            ("alt-svc", "h2=\"evil.example:443\"", false),
            ("nel", "{}", false),
            ("report-to", "{}", false),
            ("accept-ch", "Sec-CH-UA", false),
            ("content-security-policy", "default-src *", false),
            ("x-content-type-options", "sniff", false),
            ("cross-origin-resource-policy", "cross-origin", false),
            ("connection", "keep-alive", false),
            ("transfer-encoding", "chunked", false),
        ];
        let mut upstream = HeaderMap::new();
        for (k, v, _) in table {
            upstream.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        upstream.append(header::SET_COOKIE, HeaderValue::from_static("second=1"));
        upstream.insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
        for rewritten in [false, true] {
            let got = answer_headers(&upstream, rewritten);
            for (k, v, kept) in table {
                let passed = got.get_all(k).iter().any(|g| g == v);
                assert_eq!(passed, kept, "{k}: {v}");
            }
            assert!(got.get(header::SET_COOKIE).is_none());
            for (k, v) in CONFINEMENT {
                assert_eq!(got.get_all(k).iter().collect::<Vec<_>>(), [v], "{k}");
            }
            let length = got.get(header::CONTENT_LENGTH).map(HeaderValue::as_bytes);
            assert_eq!(length, (!rewritten).then_some(&b"42"[..]), "rewritten {rewritten}");
        }
    }

    #[test]
    fn requests_are_sent_again_only_before_an_answer_began() {
        use Failure::*;
        // (failure, instances failed so far, lost so far (this one included), send again)
        let table = [
            (NotConnected, 1, 0, true),
            (NotConnected, 2, 0, true),
            (NotConnected, 3, 0, false),
            (LostBeforeAnswer, 1, 1, true),
            // Refused by one, then lost on the next: the lost one is the first, so once more.
            (LostBeforeAnswer, 2, 1, true),
            (LostBeforeAnswer, 2, 2, false),
            (NotConnected, 2, 1, true),
            (Other, 1, 0, false),
        ];
        for (failure, failed, lost, again) in table {
            assert_eq!(resend(failure, failed, lost), again, "{failure:?} failed={failed} lost={lost}");
        }
        use std::io::ErrorKind as K;
        for (kind, lost) in [
            (K::ConnectionReset, true),
            (K::BrokenPipe, true),
            (K::UnexpectedEof, true),
            (K::ConnectionAborted, true),
            (K::TimedOut, false),
            (K::InvalidData, false),
        ] {
            assert_eq!(lost_io(kind), lost, "{kind:?}");
        }
    }

    #[test]
    fn the_engine_key_goes_only_to_the_openai_api() {
        for (path, carries) in [
            ("/v1/chat/completions", true),
            ("/v1/embeddings?x=1", true),
            ("/get_server_info", false),
            ("/update_weights_from_disk", false),
            ("/invocations", false),
            ("/v1", false),
            ("/v1/../get_server_info", false),
            ("/v10/x", false),
        ] {
            assert_eq!(carries_engine_key(path), carries, "{path}");
        }
    }
}
