//! `/v2/models`: model deployments. Create, edit, scale (replicas; 0 = stop), delete (cascades to
//! instances). The controller turns replicas into instances; the scheduler places them.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{
    EvaluationClaim, EvaluationRequest, EvaluationResponse, EvaluationResult, ListResponse, Model, ModelInstanceSpec,
    ModelSource, ModelSpec, WorkerSpec,
};
use crate::control::controller::spec_hash;
use crate::control::deployment::{BackendLookupError, backend_for};
use crate::control::evaluate::evaluate;
use crate::control::scheduler;
use crate::db::{DbError, model_columns};
use crate::placement::place;
use crate::server::AppState;
use crate::server::auth::Auth;
use crate::server::error::{ApiError, ApiResult, ErrorCode};
use crate::server::extract::{Json, RawQuery, Tolerant, bool_param, expected_version_allowing, guard_version};
use crate::server::list::{self, CommonListParams, InstanceFilters, Since};
use crate::server::watch::list_or_watch;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models, create_model))
        .routes(routes!(get_model, update_model, delete_model))
        .routes(routes!(model_instances))
        .routes(routes!(restart_model))
        .routes(routes!(evaluate_models))
}

#[utoipa::path(get, path = "/v2/models", tag = "models",
    params(CommonListParams, Since),
    responses((status = 200, body = ListResponse<Model>)))]
async fn list_models(
    State(state): State<AppState>,
    Auth(_p): Auth,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (params, filters) = list::parse::<Since>(&raw)?;
    // A watch event is a change of the row: it would carry a count gone stale at once.
    let gateway = (!params.watch).then(|| state.gateway.gateway.clone());
    let view = move |m: Model| match &gateway {
        Some(gateway) => with_queued(m, gateway),
        None => m,
    };
    list_or_watch::<ModelSpec, _, _, _>(&state, &headers, &raw, params, filters, view).await
}

/// The deployment with the requests held for it in wake queues across servers, when it is
/// autoscaled (never stored).
pub fn with_queued(mut m: Model, gateway: &crate::gateway::Gateway) -> Model {
    m.spec.queued = m.spec.autoscaling.is_some().then(|| gateway.queued_everywhere(m.id));
    m
}

fn non_empty(field: &str, value: &Option<String>, why: &str) -> ApiResult<String> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(ApiError::field(field, why)),
    }
}

/// `fit_concurrency` is a number of full contexts, and means something only under `fit`.
fn check_fit(spec: &ModelSpec) -> ApiResult<()> {
    let Some(n) = spec.fit_concurrency else { return Ok(()) };
    let max = crate::estimate::MAX_CONTEXTS;
    if n == 0 || n > max {
        return Err(ApiError::field("fit_concurrency", format!("must be between 1 and {max}")));
    }
    if spec.gpu_memory == Some(crate::api::GpuMemoryPolicy::Reserve) {
        return Err(ApiError::field("fit_concurrency", "applies only with gpu_memory: fit"));
    }
    Ok(())
}

/// Hub ids must be `owner/name` and file names relative paths without `..`: a worker turns them
/// into paths under its download cache (`api::hub`).
fn check_hub_fields(spec: &ModelSpec) -> ApiResult<()> {
    use crate::api::hub::{repo_file_problem, repo_id_problem};
    let ids =
        [("huggingface_repo_id", &spec.huggingface_repo_id), ("model_scope_model_id", &spec.model_scope_model_id)];
    for (field, value) in ids {
        if let Some(why) = value.as_deref().filter(|v| !v.is_empty()).and_then(repo_id_problem) {
            return Err(ApiError::field(field, why));
        }
    }
    let files =
        [("huggingface_filename", &spec.huggingface_filename), ("model_scope_file_path", &spec.model_scope_file_path)];
    for (field, value) in files {
        if let Some(why) = value.as_deref().filter(|v| !v.is_empty()).and_then(repo_file_problem) {
            return Err(ApiError::field(field, why));
        }
    }
    Ok(())
}

/// Checks a deployment and fills what the server decides (backend, cluster). Pure checks first,
/// then lookups; every refusal names its field.
pub async fn admit(state: &AppState, spec: ModelSpec) -> ApiResult<ModelSpec> {
    Ok(admit_with_backend(state, spec).await?.0)
}

/// `admit`, also answering the backend it looked up (evaluation needs it; one lookup).
async fn admit_with_backend(
    state: &AppState,
    mut spec: ModelSpec,
) -> ApiResult<(ModelSpec, crate::api::backend::InferenceBackendSpec)> {
    let valid_name = !spec.name.is_empty()
        && spec.name.len() <= 63
        && spec.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid_name {
        return Err(ApiError::field("name", "must be 1-63 characters of letters, digits, '-', '_', '.'"));
    }
    crate::server::routes::model_routes::supported_access_policy(spec.access_policy)?;
    match spec.source {
        ModelSource::Huggingface => {
            non_empty("huggingface_repo_id", &spec.huggingface_repo_id, "required when source is huggingface")?;
        }
        ModelSource::ModelScope => {
            non_empty("model_scope_model_id", &spec.model_scope_model_id, "required when source is model_scope")?;
        }
        ModelSource::LocalPath => {
            let path = non_empty("local_path", &spec.local_path, "required when source is local_path")?;
            if !std::path::Path::new(&path).is_absolute() {
                return Err(ApiError::field("local_path", format!("must be an absolute path, got {path:?}")));
            }
            if !std::path::Path::new(&path).exists() {
                return Err(ApiError::field("local_path", format!("{path:?} does not exist")));
            }
        }
    }
    check_hub_fields(&spec)?;
    if let Some(name) = spec.env.keys().find(|k| !crate::backends::validate::is_env_name(k)) {
        return Err(ApiError::field(
            format!("env.{name}"),
            format!("{name:?} is not an environment variable name (a letter or '_', then letters, digits, '_')"),
        ));
    }
    if spec.replicas > 1024 {
        return Err(ApiError::field("replicas", "must be between 0 and 1024"));
    }
    check_fit(&spec)?;
    crate::control::autoscale::check(&mut spec).map_err(|(field, rule)| ApiError::field(field, rule))?;
    spec.ready_replicas = 0;
    spec.queued = None;
    spec.cluster_id = Some(match spec.cluster_id {
        Some(id) => match state.db.get::<crate::api::ClusterSpec>(id).await {
            Ok(c) => c.id,
            Err(DbError::NotFound { .. }) => return Err(ApiError::field("cluster_id", format!("no cluster {id}"))),
            Err(e) => return Err(e.into()),
        },
        None => default_cluster(state).await?,
    });
    let backend = match backend_for(&state.db, &spec).await {
        Ok(b) => b,
        Err(BackendLookupError::Missing(name)) => {
            return Err(ApiError::field("backend", format!("no inference backend named {name:?}")));
        }
        Err(BackendLookupError::Db(e)) => return Err(e.into()),
    };
    if crate::backends::catalog::is_custom(&backend.backend_name) {
        // GPUStack's flexible testing mode: the deployment brings its own command (and image).
        non_empty("run_command", &spec.run_command, "required with the Custom backend")?;
        spec.backend = Some(crate::backends::catalog::CUSTOM.into());
        spec.backend_version = None;
        check_command(&backend, &spec)?;
        check_gpu_selector(state, &spec).await?;
        return Ok((spec, backend));
    }
    if !backend.enabled {
        return Err(ApiError::field(
            "backend",
            format!("backend {:?} is disabled; enable it first", backend.backend_name),
        ));
    }
    if let Some(v) = &spec.backend_version
        && !backend.version_configs.contains_key(v)
    {
        let known: Vec<&str> = backend.version_configs.keys().map(String::as_str).collect();
        return Err(ApiError::field(
            "backend_version",
            format!("backend {:?} has no version {v:?} (it has: {})", backend.backend_name, known.join(", ")),
        ));
    }
    spec.backend = Some(backend.backend_name.clone());
    check_command(&backend, &spec)?;
    use crate::backends::kind::kind_of;
    let kind = kind_of(&backend.backend_name);
    if spec.distributed_inference_across_workers && !kind.supports_distributed() {
        return Err(ApiError::field(
            "distributed_inference_across_workers",
            format!(
                "backend {:?} cannot run one replica across workers; use vLLM, SGLang or a custom backend",
                backend.backend_name
            ),
        ));
    }
    let spans = spec.gpu_selector.as_ref().is_some_and(|s| selection_spans_workers(&s.gpu_ids));
    if spans && !spec.distributed_inference_across_workers && kind.distributed_by_default() {
        // GPUStack's SDK sends null, which GPUStack takes as true for these backends: a selection
        // over several workers would otherwise wait forever.
        spec.distributed_inference_across_workers = true;
    }
    if kind.configured_by_file() {
        // MindIE's parameters become its config file: every documented range is checked now.
        crate::estimate::mindie_config(&spec.backend_parameters)
            .map_err(|e| ApiError::field("backend_parameters", e.to_string()))?;
    }
    check_gpu_selector(state, &spec).await?;
    Ok((spec, backend))
}

/// Renders the deployment's command once with stand-in values, so that a run command that does
/// not split, an unknown placeholder, unparsable backend parameters or a parameter the server owns
/// (`--port`, `--host`, the model and served name) are refused now, naming the field, instead of
/// failing on a worker later.
fn check_command(backend: &crate::api::backend::InferenceBackendSpec, spec: &ModelSpec) -> ApiResult<()> {
    use crate::backends::render::owned_parameter;
    use crate::backends::{DeploymentOverrides, RenderContext, RenderError, render_command};
    let overrides = DeploymentOverrides {
        version: spec.backend_version.as_deref(),
        run_command: spec.run_command.as_deref(),
        env: Some(&spec.env),
        injected_parameters: &[],
        backend_parameters: &spec.backend_parameters,
    };
    let ctx = RenderContext {
        model_path: "/model",
        model_name: &spec.name,
        port: 1,
        worker_ip: "127.0.0.1",
        gpu_ids: &[0],
        data_dir: "/data",
        api_key: "key",
        api_key_file: "/key",
    };
    let field_of = |e: &RenderError| match e {
        RenderError::Params(_) => "backend_parameters",
        RenderError::UnknownPlaceholder { field, .. } | RenderError::Split { field, .. } if field == "run_command" => {
            "run_command"
        }
        RenderError::UnknownPlaceholder { field, .. } if field == "backend_parameters" => "backend_parameters",
        // The backend's own templates are checked when it is stored; anything else is the backend's.
        _ => "backend",
    };
    if let Err(e) = render_command(backend, &overrides, &ctx) {
        return Err(ApiError::field(field_of(&e), e.to_string()));
    }
    match owned_parameter(backend, &overrides) {
        Ok(None) => Ok(()),
        Ok(Some((flag, why))) => Err(ApiError::field(
            "backend_parameters",
            format!("{flag} cannot be set: {why}; remove it from backend_parameters"),
        )),
        Err(e) => Err(ApiError::field(field_of(&e), e.to_string())),
    }
}

async fn default_cluster(state: &AppState) -> ApiResult<i64> {
    let clusters = state.db.all::<crate::api::ClusterSpec>().await?;
    clusters
        .iter()
        .find(|c| c.spec.is_default)
        .or(clusters.first())
        .map(|c| c.id)
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "no cluster exists"))
}

async fn check_gpu_selector(state: &AppState, spec: &ModelSpec) -> ApiResult<()> {
    let Some(sel) = &spec.gpu_selector else { return Ok(()) };
    if sel.gpu_ids.is_empty() {
        return Err(ApiError::field("gpu_selector.gpu_ids", "must list at least one <worker>:<type>:<index>"));
    }
    let workers = state.db.all::<WorkerSpec>().await?;
    for id in &sel.gpu_ids {
        let known = workers.iter().any(|w| w.spec.status.gpu_devices.iter().any(|g| g.id(&w.spec.name) == *id));
        if !known {
            return Err(ApiError::field(
                "gpu_selector.gpu_ids",
                format!("no GPU {id:?} (expected <worker>:<type>:<index> of an existing GPU; see /v2/gpu-devices)"),
            ));
        }
    }
    if let Some(n) = sel.gpus_per_replica
        && (n == 0 || n as usize > sel.gpu_ids.len())
    {
        return Err(ApiError::field(
            "gpu_selector.gpus_per_replica",
            format!("must be between 1 and the {} selected GPUs, got {n}", sel.gpu_ids.len()),
        ));
    }
    Ok(())
}

/// Deploys a model.
#[utoipa::path(post, path = "/v2/models", tag = "models", request_body = ModelSpec,
    responses((status = 200, body = Model), (status = 400, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody)))]
async fn create_model(
    State(state): State<AppState>,
    Auth(p): Auth,
    Tolerant(spec, _): Tolerant<ModelSpec>,
) -> ApiResult<axum::Json<Model>> {
    p.require_admin()?;
    let mut spec = admit(&state, spec).await?;
    spec.ready_replicas = 0;
    spec.analysis = None;
    spec.state = None;
    spec.state_message = None;
    spec.scaling_message = None;
    spec.spec_digest = Some(spec_hash(&spec));
    spec.rollout_digest = None;
    // The route named after it, unless turned off or the name is a route already (left alone).
    let route =
        spec.enable_model_route && state.db.get_by_name::<crate::api::ModelRouteSpec>(&spec.name).await?.is_none();
    // One transaction: the deployment never exists without the route it asked for.
    let (model, _) = state
        .db
        .insert_chain(
            (&spec, &model_columns(&spec)),
            |m| route.then(|| crate::server::routing::model_route(m)),
            crate::server::routing::model_target,
        )
        .await?;
    Ok(axum::Json(model))
}

#[utoipa::path(get, path = "/v2/models/{id}", tag = "models", params(("id" = i64, Path)),
    responses((status = 200, body = Model), (status = 404, body = crate::api::ErrorBody)))]
async fn get_model(State(state): State<AppState>, Auth(_p): Auth, Path(id): Path<i64>) -> ApiResult<axum::Json<Model>> {
    Ok(axum::Json(with_queued(state.db.get::<ModelSpec>(id).await?, &state.gateway.gateway)))
}

/// Replaces a deployment's spec (scale with `replicas`; 0 stops it). As in GPUStack, running
/// instances keep the spec they started with and new instances get the new one; with
/// `?rolling=true` instances with an older spec are replaced one at a time instead. Send the
/// version you read (`version` in the body, `If-Match` or `?version=`) to get 409 on a concurrent change.
#[utoipa::path(put, path = "/v2/models/{id}", tag = "models",
    params(("id" = i64, Path), ("version" = Option<i64>, Query), ("rolling" = Option<bool>, Query)),
    request_body = ModelSpec, responses((status = 200, body = Model), (status = 409, body = crate::api::ErrorBody)))]
async fn update_model(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    Tolerant(spec, body_version): Tolerant<ModelSpec>,
) -> ApiResult<axum::Json<Model>> {
    p.require_admin()?;
    let version = guard_version(expected_version_allowing(&headers, &raw, &["rolling"])?, body_version)?;
    let rolling = bool_param(&raw, "rolling")?.unwrap_or(false);
    let current = state.db.get::<ModelSpec>(id).await?;
    if spec.name != current.spec.name {
        return Err(ApiError::field("name", "cannot change; deploy under the new name and delete this one"));
    }
    let spec = admit(&state, spec).await?;
    let route_changed = spec.generic_proxy != current.spec.generic_proxy;
    let model = state
        .db
        .modify::<ModelSpec, ApiError, _>(id, version, |m| {
            let previous = m.clone();
            *m = spec.clone();
            let digest = spec_hash(m);
            m.meta = previous.meta;
            // Still used while the source is the same (`control::analysis` compares).
            m.analysis = previous.analysis;
            m.ready_replicas = previous.ready_replicas;
            m.state = previous.state;
            m.state_message = previous.state_message;
            m.scaling_message = previous.scaling_message;
            m.rollout_digest = match previous.rollout_digest {
                _ if rolling => Some(digest.clone()),
                Some(d) if d == digest => Some(d),
                _ => None,
            };
            m.spec_digest = Some(digest);
            Ok(model_columns(m))
        })
        .await?;
    if route_changed {
        crate::server::routing::sync_model_route(&state.db, &model).await?;
    }
    Ok(axum::Json(model))
}

/// The instances of one deployment (GPUStack's path; the same as `/v2/model-instances?model_id=`).
#[utoipa::path(get, path = "/v2/models/{id}/instances", tag = "models",
    params(("id" = i64, Path), CommonListParams, Since),
    responses((status = 200, body = ListResponse<crate::api::ModelInstance>), (status = 404, body = crate::api::ErrorBody)))]
async fn model_instances(
    State(state): State<AppState>,
    Auth(_p): Auth,
    Path(id): Path<i64>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    state.db.get::<ModelSpec>(id).await?;
    let (params, _) = list::parse::<Since>(&raw)?;
    let filters = InstanceFilters { model_id: Some(id), ..InstanceFilters::default() };
    let view = crate::server::routes::model_instances::instance_view;
    list_or_watch::<ModelInstanceSpec, _, _, _>(&state, &headers, &raw, params, filters, view).await
}

/// What `POST /v2/models/{id}/restart` did (GPUStack's `ModelRestartResult`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ModelRestartResult {
    /// The fingerprint of the spec the new instances run.
    pub spec_digest: String,
    /// True when there was anything to tear down.
    pub restarted: bool,
    /// Names of the instances stopped.
    pub deleted_instances: Vec<String>,
    pub message: Option<String>,
}

/// Stops every instance of a deployment at once; the controller starts fresh ones with the current
/// spec (GPUStack's restart: the whole generation goes before any of it starts again). Serving
/// instances drain first: requests in flight on them finish; new ones wait for the new generation.
#[utoipa::path(post, path = "/v2/models/{id}/restart", tag = "models", params(("id" = i64, Path)),
    responses((status = 200, body = ModelRestartResult), (status = 404, body = crate::api::ErrorBody)))]
async fn restart_model(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<ModelRestartResult>> {
    p.require_admin()?;
    let model = state.db.get::<ModelSpec>(id).await?;
    // Serving instances drain (no new requests; stopped once those in flight finished); the
    // controller starts the new generation meanwhile.
    let instances = state.db.instances_of_model(id).await?;
    let live: Vec<&crate::api::ModelInstance> =
        instances.iter().filter(|i| i.spec.status.state != crate::api::InstanceState::Draining).collect();
    let deleted = crate::control::drain::begin(&state.db, &live, model.spec.drain_timeout, "restart").await?;
    let message = match (deleted.len(), model.spec.replicas) {
        (0, _) => "no instance was running; nothing to restart".to_string(),
        (n, r) => format!("stopped {n} instance(s); {r} replica(s) start with the current spec"),
    };
    Ok(axum::Json(ModelRestartResult {
        spec_digest: spec_hash(&model.spec),
        restarted: !deleted.is_empty(),
        deleted_instances: deleted,
        message: Some(message),
    }))
}

/// Deletes a deployment and answers at once; its instances go in the background (the controller
/// removes any that a stopped server left behind).
#[utoipa::path(delete, path = "/v2/models/{id}", tag = "models", params(("id" = i64, Path)),
    responses((status = 200), (status = 404, body = crate::api::ErrorBody)))]
async fn delete_model(State(state): State<AppState>, Auth(p): Auth, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    p.require_admin()?;
    let timeout = state.db.get::<ModelSpec>(id).await?.spec.drain_timeout;
    state.db.delete::<ModelSpec>(id).await?;
    let db = state.db.clone();
    tokio::spawn(async move {
        let instances = match db.instances_of_model(id).await {
            Ok(list) => list,
            Err(e) => return tracing::warn!(error = %e, model = id, "listing a deleted deployment's instances failed"),
        };
        // Serving ones drain (requests in flight on them finish; the leader stops them when idle),
        // the others go at once. What fails here the controller finishes on its pass (orphans).
        let refs: Vec<&crate::api::ModelInstance> = instances.iter().collect();
        if let Err(e) = crate::control::drain::begin(&db, &refs, timeout, "deployment deleted").await {
            tracing::warn!(error = %e, model = id, "stopping a deleted deployment's instances failed");
        }
    });
    Ok(StatusCode::OK)
}

fn result(name: String, compatible: bool, messages: Vec<String>) -> EvaluationResult {
    EvaluationResult {
        name,
        compatible,
        compatibility_messages: messages,
        scheduling_messages: Vec::new(),
        default_spec: None,
        resource_claim: None,
        error: None,
        error_message: None,
        backend: None,
        categories: Vec::new(),
        vram: None,
        ram: None,
        meta: None,
        injected_parameters: Vec::new(),
        tensor_parallel_size: None,
    }
}

/// `POST /v2/model-evaluations` as GPUStack's clients send it: each spec is read like the body of
/// `POST /v2/models` (GPUStack's nulls, read-only and neutral fields), errors naming
/// `model_specs[i].<field>`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvaluation {
    #[serde(default)]
    cluster_id: Option<i64>,
    model_specs: Vec<serde_json::Value>,
}

impl RawEvaluation {
    fn read(self) -> ApiResult<EvaluationRequest> {
        let model_specs = self
            .model_specs
            .into_iter()
            .enumerate()
            .map(|(i, mut spec)| {
                catalog_fields(&mut spec, i)?;
                crate::server::extract::tolerant_from_value::<ModelSpec>(spec).map(|(spec, _)| spec).map_err(|e| {
                    let inner = e.field.clone().unwrap_or_default();
                    let field = if inner.is_empty() {
                        format!("model_specs[{i}]")
                    } else {
                        format!("model_specs[{i}].{inner}")
                    };
                    let message = match e.message.strip_prefix(&format!("{inner}:")) {
                        Some(rest) if !inner.is_empty() => format!("{field}:{rest}"),
                        _ => format!("{field}: {}", e.message),
                    };
                    ApiError { field: Some(field), message, ..e }
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(EvaluationRequest { cluster_id: self.cluster_id, model_specs })
    }
}

/// The fields GPUStack's evaluation spec (`model_sets.ModelSpec`, from its model catalog) has on
/// top of a deployment's: dropped when neutral (`quantization` and `gpu_filters` null, `mode`
/// null or `standard`), refused naming the field otherwise.
fn catalog_fields(spec: &mut serde_json::Value, i: usize) -> ApiResult<()> {
    use serde_json::Value;
    let Some(map) = spec.as_object_mut() else { return Ok(()) };
    for (name, neutral) in [("quantization", &[][..]), ("gpu_filters", &[][..]), ("mode", &["standard"][..])] {
        match map.remove(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) if neutral.contains(&v.as_str()) => {}
            Some(other) => {
                return Err(ApiError::field(
                    format!("model_specs[{i}].{name}"),
                    format!("GPUStack's model-catalog field is not supported here (got {other}); leave it out"),
                ));
            }
        }
    }
    Ok(())
}

/// What one replica placed as `p` claims in all: every GPU's claim (main worker and
/// subordinates) and the RAM on each worker it spans.
fn placement_claim(p: &crate::placement::Placement) -> EvaluationClaim {
    let vram = p.vram_claim.values().chain(p.subordinates.iter().flat_map(|s| s.vram_claim.values())).sum();
    EvaluationClaim { ram: p.ram_claim.saturating_mul(1 + p.subordinates.len() as u64), vram }
}

/// Why a deployment's `distributed_inference_across_workers` was turned on for it.
const SPANS_WORKERS: &str = "turned on: the GPUs selected are on more than one worker (as GPUStack does for \
     vLLM and SGLang when the field is not set)";

/// Whether a manual GPU selection names GPUs of more than one worker (ids
/// `<worker>:<type>:<index>`; a worker's name has no `:`).
pub fn selection_spans_workers(gpu_ids: &[String]) -> bool {
    let mut workers = gpu_ids.iter().map(|id| id.rsplitn(3, ':').last().unwrap_or(id.as_str()));
    workers.next().is_some_and(|first| workers.any(|w| w != first))
}

/// Would these deployments fit, where, and why not, without deploying anything.
#[utoipa::path(post, path = "/v2/model-evaluations", tag = "models", request_body = EvaluationRequest,
    responses((status = 200, body = EvaluationResponse), (status = 400, body = crate::api::ErrorBody)))]
async fn evaluate_models(
    State(state): State<AppState>,
    Auth(_p): Auth,
    Json(raw): Json<RawEvaluation>,
) -> ApiResult<axum::Json<EvaluationResponse>> {
    let body = raw.read()?;
    if body.model_specs.len() > 16 {
        return Err(ApiError::field("model_specs", "at most 16 specs per evaluation"));
    }
    if let Some(id) = body.cluster_id {
        match state.db.get::<crate::api::ClusterSpec>(id).await {
            Ok(_) => {}
            Err(DbError::NotFound { .. }) => return Err(ApiError::field("cluster_id", format!("no cluster {id}"))),
            Err(e) => return Err(e.into()),
        }
    }
    let workers = state.db.all::<WorkerSpec>().await?;
    let instances = state.db.all::<ModelInstanceSpec>().await?;
    let mut results = Vec::new();
    for mut spec in body.model_specs {
        let name = spec.name.clone();
        spec.cluster_id = spec.cluster_id.or(body.cluster_id);
        let distributed_asked = spec.distributed_inference_across_workers;
        let (spec, backend) = match admit_with_backend(&state, spec).await {
            Ok(admitted) => admitted,
            Err(e) => {
                let mut r = result(name, false, vec![e.message.clone()]);
                r.error = Some(true);
                r.error_message = Some(e.message);
                results.push(r);
                continue;
            }
        };
        let default = crate::control::evaluate::cluster_policy(&state.db, spec.cluster_id).await?;
        let eval = evaluate(&spec, &backend, default, &state.hub).await;
        let mut spec = spec;
        if spec.categories.is_empty() {
            spec.categories = vec![eval.meta.category.as_str().to_owned()];
        }
        let now = chrono::Utc::now();
        let record = crate::api::Record { id: 0, version: 0, created_at: now, updated_at: now, spec: spec.clone() };
        let snapshot = scheduler::snapshot(&workers, &instances, None);
        let req = scheduler::sized_request(&snapshot, &record, &backend, &eval);
        let mut messages = eval.problems.clone();
        if spec.distributed_inference_across_workers && !distributed_asked {
            messages.push(format!("distributed_inference_across_workers: {SPANS_WORKERS}"));
        }
        let mut scheduling = Vec::new();
        // Under `gpu_memory: fit`, how the claim was computed.
        scheduling.extend(eval.estimate.fit.as_ref().map(|f| f.explain()));
        let mut claim = EvaluationClaim { ram: eval.ram, vram: eval.vram };
        let (compatible, injection, tp) = match place(&snapshot, &req) {
            Ok(p) => {
                let p = scheduler::settled(p, &req, &eval, &workers);
                claim = placement_claim(&p);
                let worker = workers.iter().find(|w| w.id == p.worker_id).map(|w| w.spec.name.as_str()).unwrap_or("");
                let on = if p.gpu_indexes.is_empty() { "CPU".to_string() } else { format!("GPUs {:?}", p.gpu_indexes) };
                scheduling.push(format!("fits on worker {worker}, {on}"));
                scheduling.extend(p.message.clone());
                let injection = scheduler::injection_for(&eval, &workers, &p, scheduler::gpu_taken(&snapshot, &p));
                let tp = scheduler::tensor_parallel_size(
                    &backend.backend_name,
                    &p,
                    &injection.args,
                    &spec.backend_parameters,
                );
                (true, injection, tp)
            }
            Err(nofit) => {
                scheduling.push("does not fit:".into());
                scheduling.extend(nofit.reasons.into_iter().take(20));
                (false, eval.injection(req.gpus_per_replica.unwrap_or(1), 1, None, 0), None)
            }
        };
        messages.extend(scheduling.iter().cloned());
        results.push(EvaluationResult {
            backend: spec.backend.clone(),
            categories: spec.categories.clone(),
            vram: Some(eval.vram),
            ram: Some(eval.ram),
            resource_claim: Some(claim),
            meta: Some(eval.meta_json()),
            injected_parameters: injection.args,
            tensor_parallel_size: tp,
            scheduling_messages: scheduling,
            default_spec: Some(spec.clone()),
            error: Some(false),
            ..result(spec.name.clone(), compatible, messages)
        });
    }
    Ok(axum::Json(EvaluationResponse { results }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_fields_are_dropped_when_neutral_and_named_otherwise() {
        let cases = [
            (serde_json::json!({"name": "m", "quantization": null, "gpu_filters": null, "mode": "standard"}), None),
            (serde_json::json!({"name": "m", "mode": null}), None),
            (serde_json::json!({"name": "m", "mode": "speed"}), Some("model_specs[2].mode")),
            (serde_json::json!({"name": "m", "gpu_filters": {"vram": 1}}), Some("model_specs[2].gpu_filters")),
            (serde_json::json!({"name": "m", "quantization": "Q4_K_M"}), Some("model_specs[2].quantization")),
        ];
        for (mut spec, want) in cases {
            let got = catalog_fields(&mut spec, 2);
            assert_eq!(got.as_ref().err().and_then(|e| e.field.as_deref()), want, "{spec}");
            if got.is_ok() {
                assert_eq!(spec, serde_json::json!({"name": "m"}));
            }
        }
    }

    #[test]
    fn a_selection_spans_workers_when_two_names_differ() {
        let cases: [(&[&str], bool); 6] = [
            (&[], false),
            (&["a:cuda:0"], false),
            (&["a:cuda:0", "a:cuda:1"], false),
            (&["a:cuda:0", "b:cuda:0"], true),
            (&["gpu-box-1:cuda:0", "gpu-box-1:rocm:0", "gpu-box-2:cuda:3"], true),
            (&["odd", "odd"], false),
        ];
        for (ids, want) in cases {
            let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
            assert_eq!(selection_spans_workers(&ids), want, "{ids:?}");
        }
    }
}
