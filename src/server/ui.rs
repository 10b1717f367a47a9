//! The web UI: the production build of `ui/` (`ui/dist`, embedded at compile time), served with SPA fallback.
//!
//! `GET`/`HEAD` of any path no route claims is answered from the embedded files; a path that names no
//! file gets `index.html`, so the browser's router handles `/deployments` and friends. API prefixes
//! (`/v1`, `/v2`, `/auth`, `/model`), other methods and missing `/assets/*` files keep the JSON 404.
//! Hashed files under `/assets/` are cached for a year; everything else is revalidated.

use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use include_dir::{Dir, include_dir};

static DIST: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/ui/dist");

/// First path segments that belong to the API: an unknown path under them is a JSON 404, never the UI.
const API_PREFIXES: &[&str] = &["v1", "v2", "auth", "model"];

/// The router's fallback: an embedded file, `index.html` for client-side routes, or the JSON 404.
pub async fn serve(method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return super::not_found(uri).await.into_response();
    }
    let path = uri.path().trim_start_matches('/');
    let first = path.split('/').next().unwrap_or("");
    if API_PREFIXES.contains(&first) {
        return super::not_found(uri).await.into_response();
    }
    if let Some(file) = DIST.get_file(path).filter(|_| !path.is_empty()) {
        let cache = if path.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
        return file_response(path, file.contents(), cache);
    }
    if first == "assets" {
        return super::not_found(uri).await.into_response();
    }
    match DIST.get_file("index.html") {
        Some(index) => file_response("index.html", index.contents(), "no-cache"),
        None => super::not_found(uri).await.into_response(),
    }
}

fn file_response(path: &str, body: &'static [u8], cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type(path))),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response()
}

/// The content type for a built asset, by extension.
fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use axum::http::StatusCode;

    async fn get(path: &str) -> (StatusCode, String, String) {
        let res = serve(Method::GET, path.parse().expect("uri")).await;
        let status = res.status();
        let ctype = res.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body = to_bytes(res.into_body(), 1 << 24).await.expect("body");
        (status, ctype, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn client_routes_get_index_html() {
        for path in ["/", "/deployments", "/playground/chat?x=1"] {
            let (status, ctype, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(ctype, "text/html; charset=utf-8", "{path}");
            assert!(body.contains("<div id=\"root\">"), "{path}: {body}");
        }
    }

    #[tokio::test]
    async fn assets_have_their_content_type() {
        let js = DIST
            .get_dir("assets")
            .and_then(|d| d.files().find(|f| f.path().extension().is_some_and(|e| e == "js")))
            .expect("a built script");
        let (status, ctype, _) = get(&format!("/{}", js.path().display())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, "text/javascript; charset=utf-8");
    }

    #[tokio::test]
    async fn api_paths_and_missing_assets_stay_json_404() {
        for path in ["/v1/chat/completions", "/v2/nope", "/auth/x", "/model/proxy", "/assets/missing.js"] {
            let (status, ctype, body) = get(path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(ctype.starts_with("application/json"), "{path}: {ctype}");
            assert!(body.contains("\"reason\":\"NotFound\""), "{path}: {body}");
        }
        let res = serve(Method::POST, "/deployments".parse().expect("uri")).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("assets/a.CSS"), "text/css; charset=utf-8");
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
