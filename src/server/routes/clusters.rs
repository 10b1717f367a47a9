//! `/v2/clusters`: groups of workers and their registration tokens (stored as digests; the plain
//! token is shown on create and on regenerate only).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{Cluster, ClusterCreate, ClusterSpec, ClusterUpdate, ClusterWithToken};
use crate::db::Val;
use crate::server::AppState;
use crate::server::auth::{Auth, digest, random_token};
use crate::server::error::{ApiError, ApiResult, ErrorCode};
use crate::server::extract::{Json, ListParams, RawQuery};
use crate::server::watch::list_or_watch;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_clusters, create_cluster))
        .routes(routes!(get_cluster, update_cluster, delete_cluster))
        .routes(routes!(regenerate_token))
}

#[utoipa::path(get, path = "/v2/clusters", tag = "clusters",
    params(("page" = Option<i64>, Query), ("perPage" = Option<i64>, Query), ("sort_by" = Option<String>, Query),
           ("search" = Option<String>, Query), ("watch" = Option<bool>, Query)),
    responses((status = 200, body = crate::api::ListResponse<Cluster>)))]
async fn list_clusters(
    State(state): State<AppState>,
    Auth(_p): Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = ListParams::parse(&raw, &["since"])?;
    list_or_watch::<ClusterSpec, _, _, _>(&state, &headers, &raw, params, vec![], |_| true, |c| c).await
}

fn check_name(name: &str) -> ApiResult<()> {
    let valid =
        !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid { Ok(()) } else { Err(ApiError::field("name", "must be 1-63 characters of letters, digits, '-', '_'")) }
}

fn new_token() -> (String, Vec<(&'static str, Val)>) {
    let token = random_token(32);
    let extra = vec![("token_digest", Val::Text(digest(&token)))];
    (token, extra)
}

/// Creates a cluster; the answer carries its registration token, shown this once.
#[utoipa::path(post, path = "/v2/clusters", tag = "clusters", request_body = ClusterCreate,
    responses((status = 201, body = ClusterWithToken), (status = 409, body = crate::api::ErrorBody)))]
async fn create_cluster(
    State(state): State<AppState>,
    Auth(p): Auth,
    Json(body): Json<ClusterCreate>,
) -> ApiResult<(StatusCode, axum::Json<ClusterWithToken>)> {
    p.require_admin()?;
    check_name(&body.name)?;
    let (token, extra) = new_token();
    let spec = ClusterSpec {
        name: body.name,
        description: body.description,
        is_default: false,
        token_hint: token[..4].to_string(),
    };
    let cluster = state.db.insert(&spec, &extra).await?;
    Ok((StatusCode::CREATED, axum::Json(ClusterWithToken { cluster, registration_token: token })))
}

#[utoipa::path(get, path = "/v2/clusters/{id}", tag = "clusters", params(("id" = i64, Path)),
    responses((status = 200, body = Cluster), (status = 404, body = crate::api::ErrorBody)))]
async fn get_cluster(
    State(state): State<AppState>,
    Auth(_p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Cluster>> {
    Ok(axum::Json(state.db.get::<ClusterSpec>(id).await?))
}

#[utoipa::path(put, path = "/v2/clusters/{id}", tag = "clusters", params(("id" = i64, Path)), request_body = ClusterUpdate,
    responses((status = 200, body = Cluster), (status = 409, body = crate::api::ErrorBody)))]
async fn update_cluster(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(body): Json<ClusterUpdate>,
) -> ApiResult<axum::Json<Cluster>> {
    p.require_admin()?;
    if let Some(name) = &body.name {
        check_name(name)?;
    }
    let cluster = state
        .db
        .modify::<ClusterSpec, ApiError, _>(id, body.version, |c| {
            if let Some(v) = &body.name {
                c.name = v.clone();
            }
            if let Some(v) = &body.description {
                c.description = Some(v.clone());
            }
            Ok(vec![])
        })
        .await?;
    Ok(axum::Json(cluster))
}

/// Deletes a cluster; the default cluster stays.
#[utoipa::path(delete, path = "/v2/clusters/{id}", tag = "clusters", params(("id" = i64, Path)),
    responses((status = 204), (status = 400, body = crate::api::ErrorBody)))]
async fn delete_cluster(State(state): State<AppState>, Auth(p): Auth, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    p.require_admin()?;
    if state.db.get::<ClusterSpec>(id).await?.spec.is_default {
        return Err(ApiError::new(ErrorCode::RuleViolation, "the default cluster cannot be deleted"));
    }
    state.db.delete::<ClusterSpec>(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the cluster's registration token; the old one stops working. The new one is shown once.
#[utoipa::path(post, path = "/v2/clusters/{id}/registration-token", tag = "clusters", params(("id" = i64, Path)),
    responses((status = 200, body = ClusterWithToken)))]
async fn regenerate_token(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<ClusterWithToken>> {
    p.require_admin()?;
    let (token, extra) = new_token();
    let hint = token[..4].to_string();
    let cluster = state
        .db
        .modify::<ClusterSpec, ApiError, _>(id, None, |c| {
            c.token_hint = hint.clone();
            Ok(extra.clone())
        })
        .await?;
    Ok(axum::Json(ClusterWithToken { cluster, registration_token: token }))
}
