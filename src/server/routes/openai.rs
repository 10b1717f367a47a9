//! The gateway's HTTP surface: `/v1/*` (OpenAI-compatible), the generic proxy `/model/proxy/*`
//! and `/metrics`. Authenticates the caller (API key with the `inference` scope, or on `/v1` the
//! UI's session), then hands the request to [`crate::gateway`]. Errors leave in OpenAI's shape.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use crate::api::Scope;
use crate::gateway::Caller;
use crate::server::AppState;
use crate::server::auth::{authenticate, digest, presented_api_key};
use crate::server::error::{ApiError, ErrorCode, OpenAiError};
use crate::server::routing::{KEY_TTL, STALE_KEY_TTL};

const POST_PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/rerank",
    "/v1/responses",
    "/v1/audio/speech",
    "/v1/audio/transcriptions",
    "/v1/images/generations",
];

pub fn router() -> Router<AppState> {
    let mut r = Router::new()
        .route("/v1/models", get(models))
        .route("/model/proxy/{*path}", any(proxy))
        .route("/metrics", get(super::metrics::metrics));
    for path in POST_PATHS {
        r = r.route(path, post(v1));
    }
    r
}

/// How long the gateway waits for the database to check a key it has not seen lately.
const AUTH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// The caller, from a (cached) API key or the session cookie; needs the `inference` scope.
async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, OpenAiError> {
    // The cache is keyed by the key that authenticates (the same function `authenticate` uses),
    // never by a header that played no part: `Authorization: Basic …` next to a valid `X-API-Key`
    // must not make that `Authorization` value a credential.
    let key = presented_api_key(headers).map(digest);
    // While the database does not answer, a key seen lately still serves (stale-while-unavailable:
    // running engines keep serving the callers they served; `routing::STALE_KEY_TTL`).
    let stale = || key.as_deref().and_then(|k| state.gateway.cached(k, STALE_KEY_TTL));
    let principal = match key.as_deref().and_then(|k| state.gateway.cached(k, KEY_TTL)) {
        Some(p) => p,
        None if !state.db.reachable() => match stale() {
            Some(p) => p,
            None => {
                return Err(
                    ApiError::new(ErrorCode::Unavailable, "the database is not available; retry shortly").into()
                );
            }
        },
        // A database that stopped answering a moment ago (not yet seen by the probe) does not
        // hold the call: past the deadline the key is taken as above.
        None => match tokio::time::timeout(AUTH_DEADLINE, authenticate(state, headers))
            .await
            .unwrap_or_else(|_| Err(ApiError::new(ErrorCode::Unavailable, "the database did not answer in time")))
        {
            Ok(p) => {
                if let (Some(k), Some(_)) = (key.clone(), &p.api_key) {
                    state.gateway.remember(k, &p);
                }
                p
            }
            Err(e) if e.code == ErrorCode::Unavailable => stale().ok_or(e)?,
            Err(e) => return Err(e.into()),
        },
    };
    if !principal.has_scope(Scope::Inference) {
        return Err(ApiError::forbidden("this API key lacks the \"inference\" scope").into());
    }
    let key = principal.api_key.as_ref();
    Ok(Caller {
        user_id: principal.user.id,
        api_key_id: key.map_or(0, |k| k.id),
        allowed_model_names: key.and_then(|k| k.spec.allowed_model_names.clone()),
        rpm_limit: key.and_then(|k| k.spec.rpm_limit),
        tpm_limit: key.and_then(|k| k.spec.tpm_limit),
    })
}

/// Reads a request body up to the server's limit; a declared `Content-Length` over it is refused
/// before a byte of the body is read.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, OpenAiError> {
    let limit = state.config.max_request_body;
    let too_large = || -> OpenAiError {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than {limit} bytes (the server's --max-request-body-mb)"),
        )
        .into()
    };
    let declared = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| too_large())
}

async fn models(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, OpenAiError> {
    let caller = caller(&state, &headers).await?;
    Ok(axum::Json(state.gateway.gateway.models(&caller)).into_response())
}

async fn v1(State(state): State<AppState>, req: Request) -> Result<Response, OpenAiError> {
    let caller = caller(&state, req.headers()).await?;
    let (parts, body) = req.into_parts();
    let body = read_body(&state, &parts.headers, body).await?;
    Ok(state.gateway.gateway.openai(&caller, parts, body).await?)
}

/// The generic proxy serves whatever an engine answers (llama.cpp's own web page, anything an
/// engine's owner makes it send) on the UI's origin: a browser's session cookie is never a
/// credential there, so a page cannot ride on it. Applications send an API key.
fn key_required() -> OpenAiError {
    ApiError::unauthorized(
        "the generic proxy needs an API key: send it as \"Authorization: Bearer <key>\" or \"X-API-Key\" \
         (a session cookie is not accepted on /model/proxy)",
    )
    .into()
}

async fn proxy(State(state): State<AppState>, Path(path): Path<String>, req: Request) -> Result<Response, OpenAiError> {
    if presented_api_key(req.headers()).is_none() {
        return Err(key_required());
    }
    let caller = caller(&state, req.headers()).await?;
    if caller.api_key_id == 0 {
        return Err(key_required());
    }
    let (parts, body) = req.into_parts();
    let body = read_body(&state, &parts.headers, body).await?;
    let gateway = &state.gateway.gateway;
    let (first, rest) = path.split_once('/').unwrap_or((path.as_str(), ""));
    match first.parse::<i64>() {
        Ok(route_id) => Ok(gateway.proxy_route(&caller, route_id, rest, parts, body).await?),
        Err(_) => Ok(gateway.proxy_model(&caller, &path, parts, body).await?),
    }
}
