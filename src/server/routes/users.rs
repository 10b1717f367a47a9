//! `/v2/users`: administrators manage users; everyone reads `/v2/users/me`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::compat::{USER_PUBLIC, check_unchanged, with_public_fields};
use crate::api::{User, UserCreate, UserSelfUpdate, UserSpec, UserUpdate};
use crate::db::Val;
use crate::server::AppState;
use crate::server::auth::{Auth, check_password, hash_password, verify_password};
use crate::server::error::{ApiError, ApiResult, ErrorCode};
use crate::server::extract::{Json, RawQuery, Tolerant, tolerant_from_value};
use crate::server::list::{self, CommonListParams, Since};
use crate::server::watch::list_or_watch;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_users, create_user)).routes(routes!(me, update_me)).routes(routes!(
        get_user,
        update_user,
        delete_user
    ))
}

/// Lists users (administrators only). Supports `page`, `perPage`, `sort_by`, `search`, `watch`.
#[utoipa::path(get, path = "/v2/users", tag = "users",
    params(CommonListParams, Since),
    responses((status = 200, body = crate::api::ListResponse<User>)))]
async fn list_users(
    State(state): State<AppState>,
    Auth(p): Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    p.require_admin()?;
    let (params, filters) = list::parse::<Since>(&raw)?;
    list_or_watch::<UserSpec, _, _, _>(&state, &headers, &raw, params, filters, |u| u).await
}

fn check_username(name: &str) -> ApiResult<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::field("username", "must be 1-64 characters of letters, digits, '_', '-', '.', '@'"))
    }
}

/// Creates a user (administrators only).
#[utoipa::path(post, path = "/v2/users", tag = "users", request_body = UserCreate,
    responses((status = 200, body = User), (status = 400, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    Auth(p): Auth,
    Tolerant(body, _): Tolerant<UserCreate>,
) -> ApiResult<axum::Json<User>> {
    p.require_admin()?;
    check_username(&body.username)?;
    check_password("password", &body.password)?;
    let password = body.password.clone();
    let hash = state.hashing.run(move || hash_password(&password)).await??;
    let spec = UserSpec {
        username: body.username,
        full_name: body.full_name,
        is_admin: body.is_admin,
        is_active: body.is_active,
        require_password_change: body.require_password_change,
    };
    let user = state.db.insert(&spec, &[("password_hash", Val::Text(hash))]).await?;
    Ok(axum::Json(user))
}

/// The caller's own user.
#[utoipa::path(get, path = "/v2/users/me", tag = "users", responses((status = 200, body = User)))]
async fn me(Auth(p): Auth) -> axum::Json<User> {
    axum::Json(p.user)
}

/// Changes the caller's own name or password (a new password needs `current_password`). The
/// caller's own object may be sent back whole, but a privileged field (`is_admin`, `is_active`,
/// `username`, `role`, …) holding another value than the stored one is a 400 naming it.
#[utoipa::path(put, path = "/v2/users/me", tag = "users", request_body = UserSelfUpdate,
    responses((status = 200, body = User), (status = 400, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody)))]
async fn update_me(
    State(state): State<AppState>,
    Auth(p): Auth,
    Json(mut raw): Json<serde_json::Value>,
) -> ApiResult<axum::Json<User>> {
    let mut as_read = serde_json::to_value(&p.user).map_err(ApiError::internal)?;
    with_public_fields(&mut as_read, USER_PUBLIC);
    check_unchanged::<UserSelfUpdate>(&mut raw, &as_read).map_err(|r| ApiError {
        code: ErrorCode::InvalidInput,
        message: r.message,
        field: Some(r.field),
    })?;
    let (body, _) = tolerant_from_value::<UserSelfUpdate>(raw)?;
    let new_hash = match (&body.password, &body.current_password) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(ApiError::field("current_password", "is required to set a new password"));
        }
        (Some(new), Some(current)) => {
            check_password("password", new)?;
            let (id, current, new) = (p.user.id, current.clone(), new.clone());
            let stored = state.db.password_hash(id).await?;
            if !state.hashing.run(move || verify_password(&current, &stored)).await? {
                return Err(ApiError::field("current_password", "does not match the current password"));
            }
            Some(state.hashing.run(move || hash_password(&new)).await??)
        }
    };
    let user = state
        .db
        .modify::<UserSpec, ApiError, _>(p.user.id, body.version, |u| {
            if let Some(v) = &body.full_name {
                u.full_name = Some(v.clone());
            }
            Ok(match &new_hash {
                Some(h) => {
                    u.require_password_change = false;
                    vec![("password_hash", Val::Text(h.clone()))]
                }
                None => vec![],
            })
        })
        .await?;
    if new_hash.is_some() {
        state.db.delete_user_sessions(user.id).await?;
    }
    Ok(axum::Json(user))
}

#[utoipa::path(get, path = "/v2/users/{id}", tag = "users", params(("id" = i64, Path)),
    responses((status = 200, body = User), (status = 404, body = crate::api::ErrorBody)))]
async fn get_user(State(state): State<AppState>, Auth(p): Auth, Path(id): Path<i64>) -> ApiResult<axum::Json<User>> {
    if p.user.id != id {
        p.require_admin()?;
    }
    Ok(axum::Json(state.db.get::<UserSpec>(id).await?))
}

/// Updates a user (administrators only). Send `version` to be told (409) if someone else changed it.
#[utoipa::path(put, path = "/v2/users/{id}", tag = "users", params(("id" = i64, Path)), request_body = UserUpdate,
    responses((status = 200, body = User), (status = 409, body = crate::api::ErrorBody)))]
async fn update_user(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Tolerant(body, _): Tolerant<UserUpdate>,
) -> ApiResult<axum::Json<User>> {
    p.require_admin()?;
    if let Some(name) = &body.username {
        check_username(name)?;
    }
    if p.user.id == id && (body.is_admin == Some(false) || body.is_active == Some(false)) {
        return Err(ApiError::field(
            if body.is_admin == Some(false) { "is_admin" } else { "is_active" },
            "administrators cannot demote or deactivate themselves",
        ));
    }
    let new_hash = match &body.password {
        Some(password) => {
            check_password("password", password)?;
            let password = password.clone();
            Some(state.hashing.run(move || hash_password(&password)).await??)
        }
        None => None,
    };
    let user = state
        .db
        .modify::<UserSpec, ApiError, _>(id, body.version, |u| {
            if let Some(v) = &body.username {
                u.username = v.clone();
            }
            if let Some(v) = &body.full_name {
                u.full_name = Some(v.clone());
            }
            if let Some(v) = body.require_password_change {
                u.require_password_change = v;
            }
            if let Some(v) = body.is_admin {
                u.is_admin = v;
            }
            if let Some(v) = body.is_active {
                u.is_active = v;
            }
            Ok(match &new_hash {
                Some(h) => vec![("password_hash", Val::Text(h.clone()))],
                None => vec![],
            })
        })
        .await?;
    if new_hash.is_some() || !user.spec.is_active {
        state.db.delete_user_sessions(id).await?;
    }
    Ok(axum::Json(user))
}

/// Deletes a user and, with it, their sessions and API keys.
#[utoipa::path(delete, path = "/v2/users/{id}", tag = "users", params(("id" = i64, Path)),
    responses((status = 200), (status = 404, body = crate::api::ErrorBody)))]
async fn delete_user(State(state): State<AppState>, Auth(p): Auth, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    p.require_admin()?;
    if p.user.id == id {
        return Err(ApiError::new(
            crate::server::error::ErrorCode::RuleViolation,
            "administrators cannot delete themselves",
        ));
    }
    state.db.delete::<UserSpec>(id).await?;
    Ok(StatusCode::OK)
}
