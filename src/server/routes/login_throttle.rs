//! `/v2/login-throttle`: an administrator clears failed-login counts (`ferrostack logins clear`),
//! for one user name or for everyone, on the server that answers (counts are per server process).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::server::AppState;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::RawQuery;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(clear))
}

/// How many counters were removed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ThrottleCleared {
    pub cleared: usize,
}

/// Clears failed-login counts so a locked-out user can log in at once.
#[utoipa::path(delete, path = "/v2/login-throttle", tag = "auth", params(("username" = Option<String>, Query, description = "whose counts to clear (every address); all when absent")),
    responses((status = 200, body = ThrottleCleared), (status = 403, body = crate::api::ErrorBody)))]
async fn clear(State(state): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<axum::Json<ThrottleCleared>> {
    if let Some(other) = q.keys().find(|k| *k != "username") {
        return Err(ApiError::field(other.clone(), "unknown parameter (only username)"));
    }
    let username = q.get("username").map(String::as_str);
    let cleared = state.logins.clear(username);
    tracing::info!(username = username.unwrap_or("*"), cleared, "login throttle cleared");
    Ok(axum::Json(ThrottleCleared { cleared }))
}
