//! `/healthz`, `/readyz`, `/version`: unauthenticated probes.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::VersionInfo;
use crate::control::leader::LeaderView;
use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult, ErrorCode};

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

/// Readiness: this server can serve the API, i.e. its database answered the latest probe (made
/// every half second with a 1 s deadline, so a cut shows here within 1.5 s). Read from memory.
/// Load balancers should send calls only to servers that are ready.
#[utoipa::path(get, path = "/readyz", tag = "probes", responses((status = 200, body = String), (status = 503, body = crate::api::ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> ApiResult<&'static str> {
    if state.db.reachable() { Ok("ok") } else { Err(not_ready()) }
}

/// The answer of a server whose database does not answer.
fn not_ready() -> ApiError {
    ApiError::new(ErrorCode::Unavailable, "this server cannot reach its database; use another server or retry shortly")
}

/// Refuses a management call at once (503, `Retry-After`) while the database does not answer,
/// instead of letting it wait on the database: a worker then moves to another server, and a
/// client learns it now. The gateway (`/v1`, `/model/proxy`) is not behind this: it serves from
/// what it last knew.
pub async fn refuse_without_database(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if state.db.reachable() {
        return next.run(req).await;
    }
    let mut res = not_ready().into_response();
    res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("2"));
    res.headers_mut().insert(crate::api::NOT_ACTED, axum::http::HeaderValue::from_static("1"));
    res
}

#[utoipa::path(get, path = "/version", tag = "probes", responses((status = 200, body = VersionInfo)))]
async fn version() -> Json<VersionInfo> {
    Json(VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: option_env!("FERROSTACK_GIT_COMMIT").unwrap_or("unknown").to_string(),
    })
}
