//! `/v2/model-instances`: list and watch (users and workers), place by hand, delete, the worker's
//! own status reports, and logs streamed from the worker that runs the instance.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{
    Binding, InstanceState, InstanceStatus, InstanceStatusReport, ListResponse, ModelInstance, ModelInstanceCreate,
    ModelInstanceSpec, ModelSource, RunSpec, SubordinateStatusReport, WorkerSpec,
};
use crate::db::{DbError, instance_columns};
use crate::server::AppState;
use crate::server::auth::{Auth, Caller, server_token};
use crate::server::error::{ApiError, ApiResult, ErrorCode};
use crate::server::extract::{Json, RawQuery, int_param};
use crate::server::list::{self, CommonListParams, InstanceFilters};
use crate::server::watch::list_or_watch;

mod report;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_instances, create_instance))
        .routes(routes!(get_instance, delete_instance))
        .routes(routes!(report_status))
        .routes(routes!(report_subordinate_status))
        .routes(routes!(instance_logs))
}

/// Lists instances; filter with `worker_id`, `model_id`, `state`. Workers see only their own.
///
/// `worker_id` selects the instances the worker takes part in: as their main worker, or as a
/// subordinate worker of a distributed instance.
#[utoipa::path(get, path = "/v2/model-instances", tag = "model-instances",
    params(CommonListParams, InstanceFilters),
    responses((status = 200, body = ListResponse<ModelInstance>)))]
async fn list_instances(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (mut params, mut filters) = list::parse::<InstanceFilters>(&raw)?;
    match caller {
        Caller::Worker(w) => {
            filters.worker_id = Some(w.worker_id);
            params.worker_scope = Some(w.worker_id);
        }
        Caller::Registrant { .. } => {
            return Err(ApiError::forbidden("a registration token may only register a worker"));
        }
        Caller::User(_) => {}
    }
    let gateway = state.gateway.gateway.clone();
    let view = move |i: ModelInstance| with_in_flight(instance_view(i), &gateway);
    list_or_watch::<ModelInstanceSpec, _, _, _>(&state, &headers, &raw, params, filters, view).await
}

/// An instance as answered: GPUStack's required `source` and, for local files, `local_path`, filled
/// in for rows stored before they were.
pub fn instance_view(mut i: ModelInstance) -> ModelInstance {
    let s = &mut i.spec;
    let source = *s.run.source.get_or_insert(ModelSource::LocalPath);
    if source == ModelSource::LocalPath && s.run.local_path.is_none() {
        s.run.local_path = Some(s.model_path.clone());
    }
    i
}

/// The instance with the requests in flight on it across servers' gateways, where it is routed
/// or draining (never stored).
pub fn with_in_flight(mut i: ModelInstance, gateway: &crate::gateway::Gateway) -> ModelInstance {
    if matches!(i.spec.status.state, InstanceState::Running | InstanceState::Draining) {
        i.spec.status.in_flight = Some(gateway.in_flight_everywhere(i.id));
    }
    i
}

/// Places an instance on a worker by hand (administrators); deployments do this for you.
#[utoipa::path(post, path = "/v2/model-instances", tag = "model-instances", request_body = ModelInstanceCreate,
    responses((status = 200, body = ModelInstance), (status = 400, body = crate::api::ErrorBody)))]
async fn create_instance(
    State(state): State<AppState>,
    Auth(p): Auth,
    Json(body): Json<ModelInstanceCreate>,
) -> ApiResult<(StatusCode, axum::Json<ModelInstance>)> {
    p.require_admin()?;
    if body.name.is_empty() || body.name.len() > 128 {
        return Err(ApiError::field("name", "must be 1-128 characters"));
    }
    if body.model_path.trim().is_empty() {
        return Err(ApiError::field("model_path", "must name a file or directory on the worker"));
    }
    let worker = match state.db.get::<WorkerSpec>(body.worker_id).await {
        Ok(w) => w,
        Err(DbError::NotFound { .. }) => {
            return Err(ApiError::field("worker_id", format!("no worker with id {}", body.worker_id)));
        }
        Err(e) => return Err(e.into()),
    };
    use crate::control::deployment::{BackendLookupError, backend_named};
    let backend =
        match backend_named(&state.db, &body.backend, body.image_name.as_deref(), body.run_command.as_deref()).await {
            Ok(b) => b,
            Err(BackendLookupError::Missing(name)) => {
                return Err(ApiError::field("backend", format!("no backend named {name:?}")));
            }
            Err(BackendLookupError::Db(e)) => return Err(e.into()),
        };
    let resolved_backend = Some(crate::backends::render::frozen(&backend, body.backend_version.as_deref()));
    let spec = ModelInstanceSpec {
        name: body.name,
        model_id: None,
        model_name: body.model_name,
        model_path: body.model_path.clone(),
        spec_hash: None,
        run: RunSpec {
            source: Some(ModelSource::LocalPath),
            local_path: Some(body.model_path),
            backend: body.backend,
            backend_version: body.backend_version,
            backend_parameters: body.backend_parameters,
            env: body.env,
            run_command: body.run_command,
            image_name: body.image_name,
            restart_on_error: body.restart_on_error,
            ..RunSpec::default()
        },
        binding: Binding {
            worker_id: Some(worker.id),
            worker_name: Some(worker.spec.name.clone()),
            worker_ip: Some(worker.spec.ip.clone()),
            gpu_indexes: body.gpu_indexes,
            resolved_backend,
            ..Binding::default()
        },
        status: InstanceStatus { state: InstanceState::Scheduled, ..InstanceStatus::default() },
    };
    let instance = state.db.insert(&spec, &instance_columns(&spec)).await?;
    Ok((StatusCode::OK, axum::Json(instance)))
}

#[utoipa::path(get, path = "/v2/model-instances/{id}", tag = "model-instances", params(("id" = i64, Path)),
    responses((status = 200, body = ModelInstance), (status = 404, body = crate::api::ErrorBody)))]
async fn get_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<ModelInstance>> {
    let instance = state.db.get::<ModelInstanceSpec>(id).await?;
    if let Caller::Worker(w) = caller
        && !instance.spec.involves(w.worker_id)
    {
        return Err(ApiError::forbidden("a worker may only read its own instances"));
    }
    Ok(axum::Json(with_in_flight(instance_view(instance), &state.gateway.gateway)))
}

/// Deletes an instance: its worker stops it and frees its port. A serving instance of a
/// deployment drains first (no new requests; stopped once those in flight finished, or at the
/// deployment's `drain_timeout`); deleting a draining instance stops it at once.
#[utoipa::path(delete, path = "/v2/model-instances/{id}", tag = "model-instances", params(("id" = i64, Path)),
    responses((status = 200), (status = 404, body = crate::api::ErrorBody)))]
async fn delete_instance(State(state): State<AppState>, Auth(p): Auth, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    p.require_admin()?;
    // A report of its worker may change it meanwhile: the mark is a compare-and-swap, tried again.
    for _ in 0..3 {
        let instance = state.db.get::<ModelInstanceSpec>(id).await?;
        let timeout = match instance.spec.model_id {
            Some(m) => match state.db.get::<crate::api::ModelSpec>(m).await {
                Ok(model) => model.spec.drain_timeout,
                Err(DbError::NotFound { .. }) => 0,
                Err(e) => return Err(e.into()),
            },
            // Placed by hand: never routed.
            None => 0,
        };
        if !crate::control::drain::begin(&state.db, &[&instance], timeout, "deleted").await?.is_empty() {
            return Ok(StatusCode::OK);
        }
    }
    state.db.delete::<ModelInstanceSpec>(id).await?;
    Ok(StatusCode::OK)
}

/// The worker's report on its own instance: one transition of its state; refused (409) if the
/// instance changed since `version`.
#[utoipa::path(put, path = "/v2/model-instances/{id}/status", tag = "model-instances",
    operation_id = "report_instance_status", params(("id" = i64, Path)),
    request_body = InstanceStatusReport, responses((status = 200, body = ModelInstance), (status = 409, body = crate::api::ErrorBody)))]
async fn report_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<report::ReportBody>,
) -> ApiResult<axum::Json<ModelInstance>> {
    let Caller::Worker(w) = caller else {
        return Err(ApiError::forbidden("only the instance's worker reports its status"));
    };
    let current = state.db.get::<ModelInstanceSpec>(id).await?;
    if current.spec.binding.worker_id != Some(w.worker_id) {
        return Err(ApiError::forbidden(format!("instance {id} is not placed on worker {}", w.worker_id)));
    }
    let instance = state
        .db
        .modify::<ModelInstanceSpec, ApiError, _>(id, Some(body.version()), |i| {
            let transition =
                body.transition(i).map_err(|m| ApiError::new(ErrorCode::InvalidInput, m).with_field("state"))?;
            report::apply(&transition, i);
            Ok(instance_columns(i))
        })
        .await?;
    Ok(axum::Json(instance_view(instance)))
}

/// A subordinate worker's report on its part of a distributed instance. Not version-guarded: each
/// subordinate writes only its own entry, inside one read-modify-write.
#[utoipa::path(put, path = "/v2/model-instances/{id}/subordinate-status", tag = "model-instances",
    params(("id" = i64, Path)), request_body = SubordinateStatusReport,
    responses((status = 200, body = ModelInstance), (status = 403, body = crate::api::ErrorBody)))]
async fn report_subordinate_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<SubordinateStatusReport>,
) -> ApiResult<axum::Json<ModelInstance>> {
    let Caller::Worker(w) = caller else {
        return Err(ApiError::forbidden("only a subordinate worker of the instance reports its part"));
    };
    let instance = state
        .db
        .modify::<ModelInstanceSpec, ApiError, _>(id, None, |i| {
            if body.restart_count != i.status.restart_count {
                return Err(ApiError::new(
                    ErrorCode::VersionConflict,
                    format!(
                        "the report is about run {} of instance {id}, which is at run {}",
                        body.restart_count, i.status.restart_count
                    ),
                ));
            }
            let part = i
                .binding
                .distributed_servers
                .as_mut()
                .and_then(|d| d.subordinate_workers.iter_mut().find(|s| s.worker_id == w.worker_id))
                .ok_or_else(|| {
                    ApiError::forbidden(format!("worker {} is not a subordinate of instance {id}", w.worker_id))
                })?;
            part.state = body.state;
            part.state_message = body.state_message.clone();
            part.pid = body.pid;
            part.container_id = body.container_id.clone();
            if let Some(command) = &body.command {
                part.command = command.clone();
            }
            Ok(instance_columns(i))
        })
        .await?;
    Ok(axum::Json(instance_view(instance)))
}

/// The instance's log, from the worker that runs it: `tail=N` last lines, `follow=true` to stream.
#[utoipa::path(get, path = "/v2/model-instances/{id}/logs", tag = "model-instances",
    params(("id" = i64, Path), ("tail" = Option<i64>, Query), ("follow" = Option<bool>, Query)),
    responses((status = 200, body = String, content_type = "text/plain")))]
async fn instance_logs(
    State(state): State<AppState>,
    Auth(_p): Auth,
    Path(id): Path<i64>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let tail = int_param(&raw, "tail")?;
    if tail.is_some_and(|t| t < 0) {
        return Err(ApiError::new(ErrorCode::InvalidQuery, "tail: must be >= 0").with_field("tail"));
    }
    let follow = matches!(raw.get("follow").map(String::as_str), Some("true" | "1"));
    let instance = state.db.get::<ModelInstanceSpec>(id).await?;
    let worker_id = instance
        .spec
        .binding
        .worker_id
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "the instance is not placed on a worker yet"))?;
    let worker = state.db.get::<WorkerSpec>(worker_id).await?;
    if worker.spec.port == 0 {
        return Err(ApiError::new(ErrorCode::Unavailable, format!("worker {} serves no logs", worker.spec.name)));
    }
    let mut url = format!("http://{}:{}/instances/{id}/logs?follow={follow}", worker.spec.ip, worker.spec.port);
    if let Some(t) = tail {
        url.push_str(&format!("&tail={t}"));
    }
    let client =
        reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().map_err(ApiError::internal)?;
    let res =
        client.get(&url).bearer_auth(server_token(&state.server_secret, worker_id)).send().await.map_err(|e| {
            ApiError::new(ErrorCode::Unavailable, format!("cannot reach worker {}: {e}", worker.spec.name))
        })?;
    let status = StatusCode::from_u16(res.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    if !status.is_success() {
        let text = res.text().await.unwrap_or_default();
        return Err(ApiError::new(
            if status == StatusCode::NOT_FOUND { ErrorCode::NotFound } else { ErrorCode::Unavailable },
            format!("worker {}: {}", worker.spec.name, text.chars().take(300).collect::<String>()),
        ));
    }
    let body = Body::from_stream(res.bytes_stream());
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}
