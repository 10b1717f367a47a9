//! The worker's own small HTTP API, called by the server only (Bearer = the server token handed
//! over at registration): instance logs, tail and follow.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use subtle::ConstantTimeEq;

use super::logs;

#[derive(Clone)]
pub struct WorkerApi {
    pub instances_root: PathBuf,
    pub server_token: Arc<String>,
}

pub fn router(api: WorkerApi) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/instances/{id}/logs", get(instance_logs))
        .with_state(api)
}

fn authorized(api: &WorkerApi, headers: &HeaderMap) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(presented.as_bytes().ct_eq(api.server_token.as_bytes()))
}

async fn instance_logs(
    State(api): State<WorkerApi>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&api, &headers) {
        return (StatusCode::UNAUTHORIZED, "invalid server token").into_response();
    }
    let tail = match q.get("tail").map(|t| t.parse::<usize>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return (StatusCode::BAD_REQUEST, "tail: must be a non-negative integer").into_response(),
    };
    let follow = matches!(q.get("follow").map(String::as_str), Some("true" | "1"));
    let Some(path) = logs::latest_log(&api.instances_root, id) else {
        return (StatusCode::NOT_FOUND, format!("no logs for instance {id} on this worker")).into_response();
    };
    let (head, offset) = match tokio::task::spawn_blocking({
        let path = path.clone();
        move || logs::tail(&path, tail)
    })
    .await
    {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read log: {e}")).into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    // Engines print their arguments when they start: the engine key never leaves in a log.
    let key = crate::backends::render::engine_api_key(&api.server_token, id);
    let mask = move |text: &[u8]| -> Vec<u8> {
        let text = String::from_utf8_lossy(text);
        if text.contains(&key) {
            text.replace(&key, crate::backends::render::API_KEY_MASK).into_bytes()
        } else {
            text.into_owned().into_bytes()
        }
    };
    let head = mask(head.as_bytes());
    let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !follow {
        return (content_type, head).into_response();
    }
    let first = futures_util::stream::once(async move { Ok::<Vec<u8>, std::io::Error>(head) });
    let rest = logs::follow(path, offset).map(move |chunk| chunk.map(|c| mask(&c)));
    let body = Body::from_stream(first.chain(rest));
    (content_type, body).into_response()
}
