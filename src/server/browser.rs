//! Defences for requests a browser makes: cross-site request refusal and security headers.
//!
//! A state-changing request (anything but GET, HEAD, OPTIONS) that a session cookie would
//! authenticate — no API key presented — is refused (403) when its `Origin` (or, without one,
//! its `Referer`) is not this server's own, `Origin: null` included; `/auth/*` is checked with or
//! without a cookie (a forged login is an attack too). `/v1` with a cookie takes JSON only (415
//! otherwise), since a cross-site form can post `text/plain` without a preflight. Clients that
//! send no `Origin` and no `Referer` (scripts, the CLI, SDKs) are not affected. Every answer says
//! it may not be framed (`frame-ancestors 'none'`, `X-Frame-Options: DENY`) nor sniffed.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::{presented_api_key, session_cookie};
use super::error::{ApiError, ErrorCode};

/// Why a request is refused, if it is.
pub fn cross_site_refusal(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    forwarded_host_trusted: bool,
) -> Option<ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let by_cookie = presented_api_key(headers).is_none() && session_cookie(headers).is_some();
    if !by_cookie && !path.starts_with("/auth/") {
        return None;
    }
    let source = match headers.get(header::ORIGIN) {
        Some(origin) => Some(origin.to_str().unwrap_or("null").to_owned()),
        None => headers.get(header::REFERER).map(|r| r.to_str().unwrap_or("null").to_owned()),
    };
    if let Some(source) = source {
        let ours = own_hosts(headers, forwarded_host_trusted);
        let theirs = authority(&source);
        if theirs.is_none_or(|a| !ours.contains(&a)) {
            return Some(ApiError::forbidden(format!(
                "cross-site request refused: {source:?} is not this server's origin (send an API key instead of a cookie from other sites)"
            )));
        }
    }
    if by_cookie && path.starts_with("/v1/") {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
        if !json {
            return Some(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "with a session cookie, /v1 takes Content-Type: application/json only",
            ));
        }
    }
    None
}

/// The host[:port] of an origin or URL (default ports dropped, lowercase); `None` for `null` or
/// anything that is not an http(s) URL.
fn authority(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    (!host.is_empty()).then(|| without_default_port(&host.to_ascii_lowercase()))
}

fn without_default_port(host: &str) -> String {
    host.strip_suffix(":80").or_else(|| host.strip_suffix(":443")).unwrap_or(host).to_owned()
}

/// The names this server is reached by in this request: `Host`, and `X-Forwarded-Host` when the
/// operator trusts a reverse proxy's headers.
fn own_hosts(headers: &HeaderMap, forwarded_host_trusted: bool) -> Vec<String> {
    let mut names = vec![header::HOST.as_str()];
    if forwarded_host_trusted {
        names.push("x-forwarded-host");
    }
    names
        .into_iter()
        .filter_map(|n| headers.get(n)?.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| without_default_port(&h.trim().to_ascii_lowercase()))
        .filter(|h| !h.is_empty())
        .collect()
}

/// The middleware: refuses cross-site requests, then marks every answer unframeable.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let trusted = state.config.trusted_proxy_header.is_some();
    if let Some(refusal) = cross_site_refusal(req.method(), req.uri().path(), req.headers(), trusted) {
        return refusal.into_response();
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    // Appended, not set: a proxied answer's own policy (sandbox) stays and both apply.
    h.append(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("frame-ancestors 'none'"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.entry(header::REFERRER_POLICY).or_insert(HeaderValue::from_static("same-origin"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    /// A case: name, method, path, headers, the status it is refused with (if it is).
    type Case = (&'static str, Method, &'static str, Vec<(&'static str, &'static str)>, Option<u16>);

    #[test]
    fn cross_site_requests_by_cookie_are_refused() {
        let cookie = ("cookie", "ferrostack_session=abc");
        let host = ("host", "ferro.example:8080");
        let cases: Vec<Case> = vec![
            (
                "same origin",
                Method::POST,
                "/v2/models/1/restart",
                vec![cookie, host, ("origin", "http://ferro.example:8080")],
                None,
            ),
            (
                "foreign origin",
                Method::POST,
                "/v2/models/1/restart",
                vec![cookie, host, ("origin", "https://evil.example")],
                Some(403),
            ),
            (
                "origin null",
                Method::POST,
                "/v2/inference-backends/1/enable",
                vec![cookie, host, ("origin", "null")],
                Some(403),
            ),
            (
                "foreign referer",
                Method::DELETE,
                "/v2/models/1",
                vec![cookie, host, ("referer", "https://evil.example/x")],
                Some(403),
            ),
            (
                "own referer",
                Method::PUT,
                "/v2/models/1",
                vec![cookie, host, ("referer", "http://ferro.example:8080/models")],
                None,
            ),
            ("no origin (a script)", Method::POST, "/v2/models/1/restart", vec![cookie, host], None),
            (
                "a key, foreign origin",
                Method::POST,
                "/v2/models/1/restart",
                vec![cookie, host, ("origin", "https://evil.example"), ("authorization", "Bearer fs_a_b")],
                None,
            ),
            ("GET is safe", Method::GET, "/v2/models", vec![cookie, host, ("origin", "https://evil.example")], None),
            (
                "login from a foreign page",
                Method::POST,
                "/auth/login",
                vec![host, ("origin", "https://evil.example")],
                Some(403),
            ),
            (
                "logout from a foreign page",
                Method::POST,
                "/auth/logout",
                vec![cookie, host, ("origin", "https://evil.example")],
                Some(403),
            ),
            (
                "login, same origin",
                Method::POST,
                "/auth/login",
                vec![host, ("origin", "http://ferro.example:8080")],
                None,
            ),
            (
                "/v1 text/plain by cookie",
                Method::POST,
                "/v1/chat/completions",
                vec![cookie, host, ("content-type", "text/plain")],
                Some(415),
            ),
            ("/v1 no type by cookie", Method::POST, "/v1/chat/completions", vec![cookie, host], Some(415)),
            (
                "/v1 JSON by cookie",
                Method::POST,
                "/v1/chat/completions",
                vec![cookie, host, ("content-type", "application/json; charset=utf-8")],
                None,
            ),
            (
                "/v1 text/plain by key",
                Method::POST,
                "/v1/chat/completions",
                vec![host, ("x-api-key", "fs_a_b"), ("content-type", "text/plain")],
                None,
            ),
            (
                "default port",
                Method::POST,
                "/v2/models",
                vec![cookie, ("host", "ferro.example"), ("origin", "https://ferro.example:443")],
                None,
            ),
            (
                "userinfo trick",
                Method::POST,
                "/v2/models",
                vec![cookie, host, ("origin", "http://ferro.example:8080@evil.example")],
                Some(403),
            ),
        ];
        for (name, method, path, pairs, want) in cases {
            let got = cross_site_refusal(&method, path, &headers(&pairs), false).map(|e| e.code.status().as_u16());
            assert_eq!(got, want, "{name}");
        }
        // Behind a trusted proxy that rewrites Host, its X-Forwarded-Host names us too.
        let h = headers(&[
            cookie,
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-host", "ferro.example"),
            ("origin", "https://ferro.example"),
        ]);
        assert!(cross_site_refusal(&Method::POST, "/v2/models", &h, true).is_none());
        assert!(cross_site_refusal(&Method::POST, "/v2/models", &h, false).is_some());
    }
}
