//! `/v2/inference-backends`: built-in, community and custom backends, in JSON or GPUStack's YAML.
//!
//! The rules live in `crate::backends` (validate, admission); this file reads and writes rows and
//! maps their refusals (`From<ValidationError>` / `From<YamlError>` in `error.rs`). Built-in rows
//! are stored without their catalog versions; every answer shows them merged back in. Updates take
//! the expected row version from `If-Match` or `?version=` (the body is the backend itself, whose
//! fields are closed), and answer 409 when it is stale. Creates and updates answer the backend
//! with `warnings` (`admission::warnings`: versions whose engine answers without a key), which
//! the UI shows; GPUStack's clients ignore the extra field.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::backend::{
    BackendList, BackendListItem, BackendYaml, InferenceBackend, InferenceBackendSaved, InferenceBackendSpec,
};
use crate::api::compat::{BACKEND_PUBLIC, VERSION_CONFIG_PUBLIC, with_public_fields};
use crate::backends::admission::{admit_new, admit_update, for_display, removed_versions, warnings};
use crate::backends::{Catalog, check_deletable, parse_gpustack_backend_yaml, to_backend_yaml};
use crate::db::DbError;
use crate::server::AppState;
use crate::server::auth::{Auth, Caller, Principal};
use crate::server::bootstrap;
use crate::server::error::{ApiError, ApiResult, ErrorCode};
use crate::server::extract::{Json, RawQuery, Tolerant, expected_version, guard_version};
use crate::server::list::{self, CommonListParams, Since};
use crate::server::watch::list_or_watch;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_backends, create_backend))
        .routes(routes!(compact_list))
        .routes(routes!(all_backends))
        .routes(routes!(get_backend, update_backend, delete_backend))
        .routes(routes!(get_backend_by_name))
        .routes(routes!(create_from_yaml))
        .routes(routes!(update_from_yaml))
        .routes(routes!(export_yaml))
        .routes(routes!(enable_backend))
        .routes(routes!(disable_backend))
}

fn catalog() -> ApiResult<&'static Catalog> {
    bootstrap::catalog().map_err(ApiError::internal)
}

/// A stored row as the API shows it (built-ins with their catalog versions).
/// A backend as answered: catalog versions merged in, and every field GPUStack always sends present.
fn display(catalog: &Catalog, mut record: InferenceBackend) -> serde_json::Value {
    record.spec = for_display(catalog, &record.spec);
    let mut value = serde_json::to_value(&record).unwrap_or_default();
    with_public_fields(&mut value, BACKEND_PUBLIC);
    if let Some(serde_json::Value::Object(versions)) = value.get_mut("version_configs") {
        for config in versions.values_mut() {
            with_public_fields(config, VERSION_CONFIG_PUBLIC);
        }
    }
    value
}

/// A stored backend as answered to its create or update: [`display`] plus `warnings`.
fn display_with_warnings(catalog: &Catalog, record: InferenceBackend) -> serde_json::Value {
    let warned = warnings(&for_display(catalog, &record.spec));
    let mut value = display(catalog, record);
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("warnings".into(), warned.into());
    }
    value
}

/// Lists backends (paginated, sortable, searchable by name; `?watch=true` streams changes).
#[utoipa::path(get, path = "/v2/inference-backends", tag = "inference-backends",
    params(CommonListParams, Since),
    responses((status = 200, body = crate::api::ListResponse<InferenceBackend>)))]
async fn list_backends(
    State(state): State<AppState>,
    Auth(_p): Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (params, filters) = list::parse::<Since>(&raw)?;
    let catalog = catalog()?;
    list_or_watch::<InferenceBackendSpec, _, _, _>(&state, &headers, &raw, params, filters, move |r| {
        display(catalog, r)
    })
    .await
}

/// The enabled backends in compact form, for the deploy form: versions (catalog ones included),
/// frameworks, defaults and parameter format.
#[utoipa::path(get, path = "/v2/inference-backends/list", tag = "inference-backends",
    responses((status = 200, body = BackendList)))]
async fn compact_list(State(state): State<AppState>, Auth(_p): Auth) -> ApiResult<axum::Json<BackendList>> {
    let catalog = catalog()?;
    let items = state
        .db
        .all_backends()
        .await?
        .into_iter()
        .filter(|r| r.spec.enabled)
        .map(|r| BackendListItem::from(&for_display(catalog, &r.spec)))
        .collect();
    Ok(axum::Json(BackendList { items }))
}

/// Every backend, enabled or not, in full (a bare array, as GPUStack answers).
#[utoipa::path(get, path = "/v2/inference-backends/all", tag = "inference-backends",
    responses((status = 200, body = Vec<InferenceBackend>)))]
async fn all_backends(State(state): State<AppState>, Auth(_p): Auth) -> ApiResult<axum::Json<Vec<serde_json::Value>>> {
    let catalog = catalog()?;
    let all = state.db.all_backends().await?.into_iter().map(|r| display(catalog, r)).collect();
    Ok(axum::Json(all))
}

#[utoipa::path(get, path = "/v2/inference-backends/{id}", tag = "inference-backends", params(("id" = i64, Path)),
    responses((status = 200, body = InferenceBackend), (status = 404, body = crate::api::ErrorBody)))]
async fn get_backend(
    State(state): State<AppState>,
    Auth(_p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let record = state.db.get::<InferenceBackendSpec>(id).await?;
    Ok(axum::Json(display(catalog()?, record)))
}

/// A backend by name, compared regardless of case.
#[utoipa::path(get, path = "/v2/inference-backends/backend_name/{backend_name}", tag = "inference-backends",
    params(("backend_name" = String, Path)),
    responses((status = 200, body = InferenceBackend), (status = 404, body = crate::api::ErrorBody)))]
async fn get_backend_by_name(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    // Workers read backends to render launch commands.
    if let Caller::Registrant { .. } = caller {
        return Err(ApiError::forbidden("a registration token may only register a worker"));
    }
    let record = state.db.backend_by_name(&name).await?;
    Ok(axum::Json(display(catalog()?, record)))
}

/// Creates a custom backend (`backend_source` is always `custom`; the name must end in `-custom`).
#[utoipa::path(post, path = "/v2/inference-backends", tag = "inference-backends", request_body = InferenceBackendSpec,
    responses((status = 200, body = InferenceBackendSaved), (status = 400, body = crate::api::ErrorBody),
              (status = 409, body = crate::api::ErrorBody)))]
async fn create_backend(
    State(state): State<AppState>,
    Auth(p): Auth,
    Tolerant(spec, _): Tolerant<InferenceBackendSpec>,
) -> ApiResult<(StatusCode, axum::Json<serde_json::Value>)> {
    create(&state, &p, spec).await
}

/// Creates a custom backend from GPUStack's YAML (`{"content": "<yaml>"}`).
#[utoipa::path(post, path = "/v2/inference-backends/from-yaml", tag = "inference-backends", request_body = BackendYaml,
    responses((status = 200, body = InferenceBackendSaved), (status = 400, body = crate::api::ErrorBody),
              (status = 409, body = crate::api::ErrorBody)))]
async fn create_from_yaml(
    State(state): State<AppState>,
    Auth(p): Auth,
    Json(body): Json<BackendYaml>,
) -> ApiResult<(StatusCode, axum::Json<serde_json::Value>)> {
    p.require_admin()?;
    create(&state, &p, parse_gpustack_backend_yaml(&body.content)?).await
}

async fn create(
    state: &AppState,
    p: &Principal,
    spec: InferenceBackendSpec,
) -> ApiResult<(StatusCode, axum::Json<serde_json::Value>)> {
    p.require_admin()?;
    let existing = state.db.all_backends().await?;
    let spec = admit_new(spec, existing.iter().map(|r| r.spec.backend_name.as_str()))?;
    let record = state.db.insert(&spec, &[]).await?;
    Ok((StatusCode::OK, axum::Json(display_with_warnings(catalog()?, record))))
}

/// Updates a backend with a full definition. `backend_name` cannot change; on built-in backends
/// only the editable fields and `-custom` versions can. Send the row's version as `If-Match` or
/// `?version=` to get 409 instead of overwriting someone else's change.
#[utoipa::path(put, path = "/v2/inference-backends/{id}", tag = "inference-backends",
    params(("id" = i64, Path), ("version" = Option<i64>, Query), ("If-Match" = Option<String>, Header)),
    request_body = InferenceBackendSpec,
    responses((status = 200, body = InferenceBackendSaved), (status = 400, body = crate::api::ErrorBody),
              (status = 409, body = crate::api::ErrorBody)))]
async fn update_backend(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    Tolerant(spec, body_version): Tolerant<InferenceBackendSpec>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    p.require_admin()?;
    let expected = guard_version(expected_version(&headers, &raw)?, body_version)?;
    update(&state, id, expected, |_| Ok(spec.clone())).await
}

/// Updates a backend from GPUStack's YAML (`{"content": "<yaml>"}`); the same rules as `PUT /{id}`.
#[utoipa::path(put, path = "/v2/inference-backends/{id}/from-yaml", tag = "inference-backends",
    params(("id" = i64, Path), ("version" = Option<i64>, Query), ("If-Match" = Option<String>, Header)),
    request_body = BackendYaml,
    responses((status = 200, body = InferenceBackendSaved), (status = 400, body = crate::api::ErrorBody),
              (status = 409, body = crate::api::ErrorBody)))]
async fn update_from_yaml(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    Json(body): Json<BackendYaml>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    p.require_admin()?;
    let expected = expected_version(&headers, &raw)?;
    let spec = parse_gpustack_backend_yaml(&body.content)?;
    update(&state, id, expected, |_| Ok(spec.clone())).await
}

/// Enables a backend (a community backend becomes available in the deploy form).
#[utoipa::path(post, path = "/v2/inference-backends/{id}/enable", tag = "inference-backends",
    params(("id" = i64, Path)), responses((status = 200, body = InferenceBackendSaved)))]
async fn enable_backend(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    set_enabled(&state, &p, id, true).await
}

/// Disables a backend: it leaves the deploy form; running deployments are not touched.
#[utoipa::path(post, path = "/v2/inference-backends/{id}/disable", tag = "inference-backends",
    params(("id" = i64, Path)), responses((status = 200, body = InferenceBackendSaved)))]
async fn disable_backend(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    set_enabled(&state, &p, id, false).await
}

async fn set_enabled(
    state: &AppState,
    p: &Principal,
    id: i64,
    enabled: bool,
) -> ApiResult<axum::Json<serde_json::Value>> {
    p.require_admin()?;
    update(state, id, None, |stored| Ok(InferenceBackendSpec { enabled, ..stored.clone() })).await
}

/// Read, check, compare-and-swap. With `expected` a stale row is a 409; without, a concurrent change
/// is retried on the fresh row (the edit is re-applied and re-checked).
async fn update<F>(
    state: &AppState,
    id: i64,
    expected: Option<i64>,
    edit: F,
) -> ApiResult<axum::Json<serde_json::Value>>
where
    F: Fn(&InferenceBackendSpec) -> ApiResult<InferenceBackendSpec>,
{
    let catalog = catalog()?;
    let mut attempts = 0;
    loop {
        let current = state.db.get::<InferenceBackendSpec>(id).await?;
        if let Some(v) = expected
            && v != current.version
        {
            let conflict =
                DbError::VersionConflict { kind: "inference backend", id, expected: v, actual: current.version };
            return Err(conflict.into());
        }
        let new = admit_update(catalog, &current.spec, edit(&current.spec)?)?;
        if new == current.spec {
            // Nothing changed (an unchanged export applied again): no write, no new version.
            return Ok(axum::Json(display_with_warnings(catalog, current)));
        }
        let before = for_display(catalog, &current.spec);
        for version in removed_versions(&before, &for_display(catalog, &new)) {
            backend_in_use(state, &current.spec.backend_name, Some(&version)).await?;
        }
        match state.db.update(id, current.version, &new, &[]).await {
            Err(DbError::VersionConflict { .. }) if expected.is_none() && attempts < 5 => attempts += 1,
            res => return Ok(axum::Json(display_with_warnings(catalog, res?))),
        }
    }
}

/// Deletes a custom backend. Built-in and community backends stay (disable them instead).
#[utoipa::path(delete, path = "/v2/inference-backends/{id}", tag = "inference-backends", params(("id" = i64, Path)),
    responses((status = 200), (status = 400, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody)))]
async fn delete_backend(State(state): State<AppState>, Auth(p): Auth, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    p.require_admin()?;
    let current = state.db.get::<InferenceBackendSpec>(id).await?;
    check_deletable(&current.spec)?;
    backend_in_use(&state, &current.spec.backend_name, None).await?;
    state.db.delete::<InferenceBackendSpec>(id).await?;
    Ok(StatusCode::OK)
}

/// Refuses (409 `InUse`) when a deployment with replicas > 0 uses `backend` (or, with `version`,
/// that version of it). Called before a delete and for every version an update removes.
async fn backend_in_use(state: &AppState, backend: &str, version: Option<&str>) -> ApiResult<()> {
    let users = state.db.models_using_backend(backend, version).await?;
    if users.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = users.iter().map(|m| format!("{} (replicas {})", m.spec.name, m.spec.replicas)).collect();
    let what = match version {
        Some(v) => format!("version {v:?} of backend {backend:?}"),
        None => format!("backend {backend:?}"),
    };
    Err(ApiError::new(
        ErrorCode::InUse,
        format!("{what} is used by deployment(s) {}; scale them to 0 or delete them first", names.join(", ")),
    ))
}

/// The backend as GPUStack YAML (`text/yaml`); importing it gives the same backend back.
#[utoipa::path(get, path = "/v2/inference-backends/{id}/yaml", tag = "inference-backends", params(("id" = i64, Path)),
    responses((status = 200, content_type = "text/yaml", body = String), (status = 404, body = crate::api::ErrorBody)))]
async fn export_yaml(State(state): State<AppState>, Auth(_p): Auth, Path(id): Path<i64>) -> ApiResult<Response> {
    let record = state.db.get::<InferenceBackendSpec>(id).await?;
    let text = to_backend_yaml(&for_display(catalog()?, &record.spec))?;
    Ok(([(header::CONTENT_TYPE, "text/yaml; charset=utf-8")], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn expected_version_from_header_or_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(expected_version(&headers, &query(&[])).ok(), Some(None));
        assert_eq!(expected_version(&headers, &query(&[("version", "4")])).ok(), Some(Some(4)));
        headers.insert(header::IF_MATCH, "W/\"3\"".parse().expect("header"));
        assert_eq!(expected_version(&headers, &query(&[])).ok(), Some(Some(3)));
        assert_eq!(expected_version(&headers, &query(&[("version", "3")])).ok(), Some(Some(3)));
        let cases: &[(&[(&str, &str)], &str)] =
            &[(&[("version", "4")], "version"), (&[("version", "x")], "version"), (&[("bogus", "1")], "bogus")];
        for (q, field) in cases {
            let err = expected_version(&headers, &query(q)).expect_err("refused");
            assert_eq!(err.field.as_deref(), Some(*field), "{}", err.message);
        }
        headers.insert(header::IF_MATCH, "abc".parse().expect("header"));
        assert_eq!(expected_version(&headers, &query(&[])).expect_err("refused").field.as_deref(), Some("If-Match"));
    }
}
