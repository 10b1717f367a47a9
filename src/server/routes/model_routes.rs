//! `/v2/model-routes` and `/v2/model-route-targets`: the public model names clients call and the
//! weighted deployments behind them. A route named after each deployment is created with it
//! (unless `enable_model_route` is false); targets are `active` while their deployment runs.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{
    ModelRoute, ModelRouteCreate, ModelRouteSpec, ModelRouteTarget, ModelRouteTargetCreate, ModelRouteTargetItem,
    ModelRouteTargetSpec, ModelSpec, TargetState,
};
use crate::db::{DbError, route_columns, target_columns};
use crate::server::AppState;
use crate::server::auth::Auth;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{RawQuery, Tolerant};
use crate::server::list::{self, CommonListParams, RouteTargetFilters, Since};
use crate::server::watch::list_or_watch;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_routes, create_route))
        .routes(routes!(my_models))
        .routes(routes!(my_model))
        .routes(routes!(get_route, update_route, delete_route))
        .routes(routes!(list_targets, create_target))
        .routes(routes!(get_target, update_target, delete_target))
}

/// GPUStack's rule: a letter first, then letters, digits, `_ - . :`, not ending in a symbol.
fn check_name(name: &str) -> ApiResult<()> {
    let ok = name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            "name",
            "must start with a letter, end with a letter or digit, and use only letters, digits, '_', '-', '.', ':'",
        ))
    }
}

fn check_codes(field: &str, codes: &Option<Vec<String>>) -> ApiResult<()> {
    for c in codes.iter().flatten() {
        if c != "4xx" && c != "5xx" {
            return Err(ApiError::field(field, format!("must list only \"4xx\" and \"5xx\", got {c:?}")));
        }
    }
    Ok(())
}

async fn model_name(state: &AppState, field: &str, model_id: i64) -> ApiResult<String> {
    match state.db.get::<ModelSpec>(model_id).await {
        Ok(m) => Ok(m.spec.name),
        Err(DbError::NotFound { .. }) => Err(ApiError::field(field, format!("no model {model_id}"))),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(get, path = "/v2/model-routes", tag = "model-routes",
    params(CommonListParams, Since),
    responses((status = 200, body = crate::api::ListResponse<ModelRoute>)))]
async fn list_routes(
    State(state): State<AppState>,
    Auth(_p): Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (params, filters) = list::parse::<Since>(&raw)?;
    list_or_watch::<ModelRouteSpec, _, _, _>(&state, &headers, &raw, params, filters, |r| r).await
}

/// The models the caller may call through `/v1` (GPUStack's `my-models`: model routes). Every
/// route is open to every user with an inference key; a regular user sees these and nothing of
/// the deployments, instances and workers behind them.
#[utoipa::path(get, path = "/v2/my-models", tag = "model-routes",
    params(CommonListParams, Since),
    responses((status = 200, body = crate::api::ListResponse<ModelRoute>)))]
async fn my_models(
    State(state): State<AppState>,
    Auth(_p): Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    // The same list as `/v2/model-routes`, which a regular user may read here.
    list_routes(State(state), Auth(_p), headers, RawQuery(raw)).await
}

#[utoipa::path(get, path = "/v2/my-models/{id}", tag = "model-routes", params(("id" = i64, Path)),
    responses((status = 200, body = ModelRoute), (status = 404, body = crate::api::ErrorBody)))]
async fn my_model(
    State(state): State<AppState>,
    Auth(_p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<ModelRoute>> {
    Ok(axum::Json(state.db.get::<ModelRouteSpec>(id).await?))
}

async fn replace_targets(state: &AppState, route: &ModelRoute, items: &[ModelRouteTargetItem]) -> ApiResult<()> {
    for (i, t) in items.iter().enumerate() {
        check_codes(&format!("targets[{i}].fallback_status_codes"), &t.fallback_status_codes)?;
        model_name(state, &format!("targets[{i}].model_id"), t.model_id).await?;
    }
    for old in state.db.targets_of_route(route.id).await? {
        state.db.delete::<ModelRouteTargetSpec>(old.id).await?;
    }
    for t in items {
        let model = model_name(state, "model_id", t.model_id).await?;
        let spec = ModelRouteTargetSpec {
            name: t.name.clone().unwrap_or_else(|| format!("{}-{model}", route.spec.name)),
            route_id: route.id,
            route_name: route.spec.name.clone(),
            model_id: Some(t.model_id),
            provider_id: None,
            overridden_model_name: t.overridden_model_name.clone(),
            weight: t.weight,
            fallback_status_codes: t.fallback_status_codes.clone(),
            state: TargetState::Unavailable,
        };
        state.db.insert(&spec, &target_columns(&spec)).await?;
    }
    Ok(())
}

#[utoipa::path(post, path = "/v2/model-routes", tag = "model-routes", request_body = ModelRouteCreate,
    responses((status = 200, body = ModelRoute), (status = 400, body = crate::api::ErrorBody)))]
async fn create_route(
    State(state): State<AppState>,
    Auth(p): Auth,
    Tolerant(body, _): Tolerant<ModelRouteCreate>,
) -> ApiResult<(StatusCode, axum::Json<ModelRoute>)> {
    p.require_admin()?;
    check_name(&body.name)?;
    supported_access_policy(body.access_policy)?;
    for (i, t) in body.targets.iter().flatten().enumerate() {
        check_codes(&format!("targets[{i}].fallback_status_codes"), &t.fallback_status_codes)?;
        model_name(&state, &format!("targets[{i}].model_id"), t.model_id).await?;
    }
    let spec = ModelRouteSpec {
        name: body.name,
        description: body.description,
        categories: body.categories,
        meta: body.meta,
        generic_proxy: body.generic_proxy,
        created_model_id: None,
        targets: 0,
        ready_targets: 0,
        access_policy: body.access_policy,
        timeout: body.timeout,
        load_balancing: body.load_balancing.unwrap_or_default(),
    };
    let route = state.db.insert(&spec, &route_columns(&spec)).await?;
    if let Some(items) = &body.targets {
        replace_targets(&state, &route, items).await?;
    }
    state.gateway.refresh(&state.db).await?;
    Ok((StatusCode::OK, axum::Json(route)))
}

#[utoipa::path(get, path = "/v2/model-routes/{id}", tag = "model-routes", params(("id" = i64, Path)),
    responses((status = 200, body = ModelRoute), (status = 404, body = crate::api::ErrorBody)))]
async fn get_route(
    State(state): State<AppState>,
    Auth(_p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<ModelRoute>> {
    Ok(axum::Json(state.db.get::<ModelRouteSpec>(id).await?))
}

/// Edits a route; `targets`, when given, replace the route's targets. The name cannot change.
#[utoipa::path(put, path = "/v2/model-routes/{id}", tag = "model-routes", params(("id" = i64, Path)),
    request_body = ModelRouteCreate, responses((status = 200, body = ModelRoute), (status = 409, body = crate::api::ErrorBody)))]
async fn update_route(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Tolerant(body, _): Tolerant<ModelRouteCreate>,
) -> ApiResult<axum::Json<ModelRoute>> {
    p.require_admin()?;
    let current = state.db.get::<ModelRouteSpec>(id).await?;
    if !body.name.eq_ignore_ascii_case(&current.spec.name) {
        return Err(ApiError::field("name", "cannot change; create a route under the new name"));
    }
    supported_access_policy(body.access_policy)?;
    let route = state
        .db
        .modify::<ModelRouteSpec, ApiError, _>(id, body.version, |r| {
            r.description = body.description.clone();
            r.categories = body.categories.clone();
            r.meta = body.meta.clone();
            r.generic_proxy = body.generic_proxy;
            r.access_policy = body.access_policy;
            r.timeout = body.timeout;
            if let Some(policy) = body.load_balancing {
                r.load_balancing = policy;
            }
            Ok(route_columns(r))
        })
        .await?;
    if let Some(items) = &body.targets {
        replace_targets(&state, &route, items).await?;
    }
    state.gateway.refresh(&state.db).await?;
    Ok(axum::Json(route))
}

#[utoipa::path(delete, path = "/v2/model-routes/{id}", tag = "model-routes", params(("id" = i64, Path)),
    responses((status = 200), (status = 404, body = crate::api::ErrorBody)))]
async fn delete_route(State(state): State<AppState>, Auth(p): Auth, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    p.require_admin()?;
    state.db.delete::<ModelRouteSpec>(id).await?;
    for t in state.db.targets_of_route(id).await? {
        state.db.delete_if_present::<ModelRouteTargetSpec>(t.id).await?;
    }
    state.gateway.refresh(&state.db).await?;
    Ok(StatusCode::OK)
}

#[utoipa::path(get, path = "/v2/model-route-targets", tag = "model-routes",
    params(CommonListParams, RouteTargetFilters),
    responses((status = 200, body = crate::api::ListResponse<ModelRouteTarget>)))]
async fn list_targets(
    State(state): State<AppState>,
    Auth(_p): Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (params, filters) = list::parse::<RouteTargetFilters>(&raw)?;
    list_or_watch::<ModelRouteTargetSpec, _, _, _>(&state, &headers, &raw, params, filters, |t| t).await
}

/// The target a POST or PUT body describes; `current` is the target a PUT edits, whose route and
/// model stand where the body names none.
async fn target_spec(
    state: &AppState,
    body: &ModelRouteTargetCreate,
    current: Option<&ModelRouteTargetSpec>,
) -> ApiResult<ModelRouteTargetSpec> {
    check_codes("fallback_status_codes", &body.fallback_status_codes)?;
    let missing = |field: &str| ApiError::field(field, "missing field");
    let route_id = body.route_id.or(current.map(|c| c.route_id)).ok_or_else(|| missing("route_id"))?;
    let model_id = body.model_id.or(current.and_then(|c| c.model_id)).ok_or_else(|| missing("model_id"))?;
    let route = match state.db.get::<ModelRouteSpec>(route_id).await {
        Ok(r) => r,
        Err(DbError::NotFound { .. }) => {
            return Err(ApiError::field("route_id", format!("no route {route_id}")));
        }
        Err(e) => return Err(e.into()),
    };
    let model = model_name(state, "model_id", model_id).await?;
    let name = match (&body.name, current) {
        (Some(name), _) => name.clone(),
        // A PUT that names no target keeps the name unless the route or model changed.
        (None, Some(c)) if c.route_id == route_id && c.model_id == Some(model_id) => c.name.clone(),
        (None, _) => format!("{}-{model}", route.spec.name),
    };
    Ok(ModelRouteTargetSpec {
        name,
        route_id: route.id,
        route_name: route.spec.name,
        model_id: Some(model_id),
        provider_id: None,
        overridden_model_name: body.overridden_model_name.clone(),
        weight: body.weight,
        fallback_status_codes: body.fallback_status_codes.clone(),
        state: TargetState::Unavailable,
    })
}

#[utoipa::path(post, path = "/v2/model-route-targets", tag = "model-routes", request_body = ModelRouteTargetCreate,
    responses((status = 200, body = ModelRouteTarget), (status = 400, body = crate::api::ErrorBody)))]
async fn create_target(
    State(state): State<AppState>,
    Auth(p): Auth,
    Tolerant(body, _): Tolerant<ModelRouteTargetCreate>,
) -> ApiResult<(StatusCode, axum::Json<ModelRouteTarget>)> {
    p.require_admin()?;
    let spec = target_spec(&state, &body, None).await?;
    let target = state.db.insert(&spec, &target_columns(&spec)).await?;
    state.gateway.refresh(&state.db).await?;
    Ok((StatusCode::OK, axum::Json(target)))
}

#[utoipa::path(get, path = "/v2/model-route-targets/{id}", tag = "model-routes", params(("id" = i64, Path)),
    responses((status = 200, body = ModelRouteTarget), (status = 404, body = crate::api::ErrorBody)))]
async fn get_target(
    State(state): State<AppState>,
    Auth(_p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<ModelRouteTarget>> {
    Ok(axum::Json(state.db.get::<ModelRouteTargetSpec>(id).await?))
}

#[utoipa::path(put, path = "/v2/model-route-targets/{id}", tag = "model-routes", params(("id" = i64, Path)),
    request_body = ModelRouteTargetCreate,
    responses((status = 200, body = ModelRouteTarget), (status = 409, body = crate::api::ErrorBody)))]
async fn update_target(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Tolerant(body, _): Tolerant<ModelRouteTargetCreate>,
) -> ApiResult<axum::Json<ModelRouteTarget>> {
    p.require_admin()?;
    let current = state.db.get::<ModelRouteTargetSpec>(id).await?;
    let fresh = target_spec(&state, &body, Some(&current.spec)).await?;
    let target = state
        .db
        .modify::<ModelRouteTargetSpec, ApiError, _>(id, body.version, |t| {
            let state = t.state;
            *t = fresh.clone();
            t.state = state;
            Ok(target_columns(t))
        })
        .await?;
    state.gateway.refresh(&state.db).await?;
    Ok(axum::Json(target))
}

#[utoipa::path(delete, path = "/v2/model-route-targets/{id}", tag = "model-routes", params(("id" = i64, Path)),
    responses((status = 200), (status = 404, body = crate::api::ErrorBody)))]
async fn delete_target(State(state): State<AppState>, Auth(p): Auth, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    p.require_admin()?;
    state.db.delete::<ModelRouteTargetSpec>(id).await?;
    state.gateway.refresh(&state.db).await?;
    Ok(StatusCode::OK)
}

/// The access policy Ferrostack enforces: every call to a model needs an API key or a session
/// (GPUStack's `authed`). `public` and `allowed_principals` are refused rather than stored unenforced.
pub fn supported_access_policy(policy: crate::api::AccessPolicy) -> ApiResult<()> {
    if policy == crate::api::AccessPolicy::Authed {
        Ok(())
    } else {
        Err(ApiError::field(
            "access_policy",
            "only \"authed\" is supported: every call to a model needs an API key or a session",
        ))
    }
}
