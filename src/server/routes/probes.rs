//! `/healthz`, `/readyz`, `/version`: unauthenticated probes.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::VersionInfo;
use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult, ErrorCode};
use crate::server::leader::LeaderView;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(version))
}

/// What `/healthz` answers: the process is alive, and who leads the control loops.
#[derive(Debug, Serialize, ToSchema)]
struct Healthz {
    /// Always "ok": the process answers.
    status: &'static str,
    #[serde(flatten)]
    leadership: LeaderView,
}

/// Liveness: the process answers (read from memory only); says which server leads.
#[utoipa::path(get, path = "/healthz", tag = "probes", responses((status = 200, body = Healthz)))]
async fn healthz(State(state): State<AppState>) -> Json<Healthz> {
    Json(Healthz { status: "ok", leadership: state.leader.view() })
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
