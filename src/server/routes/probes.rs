//! `/healthz`, `/readyz`, `/version`: unauthenticated probes.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::VersionInfo;
use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult, ErrorCode};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(version))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "probes", responses((status = 200, body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "probes", responses((status = 200, body = String), (status = 503, body = crate::api::ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> ApiResult<&'static str> {
    state
        .db
        .schema_version()
        .await
        .map(|_| "ok")
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("database not ready: {e}")))
}

#[utoipa::path(get, path = "/version", tag = "probes", responses((status = 200, body = VersionInfo)))]
async fn version() -> Json<VersionInfo> {
    Json(VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: option_env!("FERROSTACK_GIT_COMMIT").unwrap_or("unknown").to_string(),
    })
}
