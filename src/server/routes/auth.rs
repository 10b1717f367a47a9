//! `/auth/login`, `/auth/logout`, `/auth/update-password`: session cookies for the UI.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{LoginForm, UpdatePassword, User, UserSpec};
use crate::db::Val;
use crate::server::AppState;
use crate::server::auth::{
    DEVICE_COOKIE, SESSION_COOKIE, authenticate, begin_password_check, blocking, check_password, device_cookie_value,
    digest, dummy_hash, hash_password, needs_rehash, random_token, session_cookie, verify_password,
};
use crate::server::error::{ApiError, ApiResult, ErrorCode};
use crate::server::extract::Json;

/// How long a login lasts.
const SESSION_SECONDS: i64 = 7 * 24 * 3600;
/// How long a browser counts as one the user logged in from.
const DEVICE_SECONDS: i64 = 365 * 24 * 3600;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login)).routes(routes!(logout)).routes(routes!(update_password))
}

/// Logs in with form fields `username` and `password`; sets an HttpOnly session cookie.
#[utoipa::path(post, path = "/auth/login", tag = "auth",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = User), (status = 401, body = crate::api::ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> ApiResult<Response> {
    let Form(form) = form.map_err(|e| match e {
        FormRejection::InvalidFormContentType(_) => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "expected form fields (Content-Type: application/x-www-form-urlencoded)",
        ),
        other => ApiError::new(ErrorCode::InvalidInput, format!("login form: {}", other.body_text())),
    })?;
    // Throttled per (name, address), per address and per name (`server::throttle`).
    let keys = match begin_password_check(&state, &extensions, &headers, &form.username) {
        Ok(keys) => keys,
        Err(refused) => return Ok(refused.into_response()),
    };
    // At most a few password checks at a time, before the database is asked (a flood of logins
    // neither grows memory nor takes the pool from other requests).
    let _turn = match state.hashing.turn().await {
        Ok(turn) => turn,
        Err(busy) => {
            // Refused for load, not for the password: not a failed login.
            state.logins.not_attempted(&keys);
            return Err(busy);
        }
    };
    let found = state.db.user_credentials(&form.username).await?;
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), hash),
        None => (None, dummy_hash().to_string()),
    };
    let found_hash = hash.clone();
    let password = form.password.clone();
    let ok = blocking(move || verify_password(&password, &hash)).await?;
    // Same answer whether the user is missing or the password wrong.
    let user = match user {
        Some(u) if ok && u.spec.is_active => u,
        _ => return Err(ApiError::unauthorized("invalid username or password")),
    };
    state.logins.succeeded(&keys);
    if needs_rehash(&found_hash) {
        // Made with an older cost: store a hash with today's (see `auth::hash_password`), only over
        // the row this login read (a password changed meanwhile wins), and never failing the login.
        let password = form.password.clone();
        let rehashed = match blocking(move || hash_password(&password)).await {
            Ok(Ok(fresh)) => state
                .db
                .modify::<UserSpec, ApiError, _>(user.id, Some(user.version), |_| {
                    Ok(vec![("password_hash", Val::Text(fresh.clone()))])
                })
                .await
                .map(|_| ()),
            Ok(Err(e)) | Err(e) => Err(e),
        };
        if let Err(e) = rehashed {
            tracing::info!(user = user.id, error = %e.message, "password hash not renewed at login");
        }
    }
    let token = random_token(43);
    let expires = crate::db::now_ms() + SESSION_SECONDS * 1000;
    state.db.create_session(&digest(&token), user.id, expires).await?;
    let cookie = format!("{SESSION_COOKIE}={token}; HttpOnly; Path=/; SameSite=Lax; Max-Age={SESSION_SECONDS}");
    // This browser has logged in as this user: the user-wide login cap no longer holds it back.
    let device = format!(
        "{DEVICE_COOKIE}={}; HttpOnly; Path=/auth; SameSite=Strict; Max-Age={DEVICE_SECONDS}",
        device_cookie_value(&state.server_secret, &user.spec.username)
    );
    let mut res = axum::Json(user).into_response();
    res.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(ApiError::internal)?);
    res.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&device).map_err(ApiError::internal)?);
    Ok(res)
}

/// Ends the session and clears the cookie.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", responses((status = 204)))]
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(token) = session_cookie(&headers) {
        state.db.delete_session(&digest(token)).await?;
    }
    let cookie = format!("{SESSION_COOKIE}=; HttpOnly; Path=/; SameSite=Lax; Max-Age=0");
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(ApiError::internal)?);
    Ok(res)
}

/// Changes the caller's own password (the current one is required); ends other sessions.
#[utoipa::path(post, path = "/auth/update-password", tag = "auth", request_body = UpdatePassword,
    responses((status = 204), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody)))]
async fn update_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<UpdatePassword>,
) -> ApiResult<StatusCode> {
    let principal = authenticate(&state, &headers).await?;
    if !principal.has_scope(crate::api::Scope::Management) {
        return Err(ApiError::forbidden(
            "changing a password needs a session or an API key with the \"management\" scope",
        ));
    }
    check_password("new_password", &body.new_password)?;
    let user_id = principal.user.id;
    let current_hash = state.db.password_hash(user_id).await?;
    let current = body.current_password.clone();
    if !state.hashing.run(move || verify_password(&current, &current_hash)).await? {
        return Err(ApiError::field("current_password", "does not match the current password"));
    }
    let new_password = body.new_password.clone();
    let new_hash = state.hashing.run(move || hash_password(&new_password)).await??;
    state
        .db
        .modify::<UserSpec, ApiError, _>(user_id, None, |u| {
            u.require_password_change = false;
            Ok(vec![("password_hash", Val::Text(new_hash.clone()))])
        })
        .await?;
    state.db.delete_user_sessions(user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
