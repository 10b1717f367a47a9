//! `/v2/workers` and `/v2/gpu-devices`: workers join with a cluster token, report status, beat.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{
    ListResponse, ModelInstanceSpec, Worker, WorkerLabelsUpdate, WorkerRegister, WorkerRegistered, WorkerShutdown,
    WorkerSpec, WorkerState, WorkerStatusReport, WorkerUpdate,
};
use crate::db::{DbError, Val};
use crate::server::AppState;
use crate::server::auth::{Auth, Caller, digest, new_worker_credential, server_token};
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{Json, RawQuery, Tolerant};
use crate::server::list::{self, CommonListParams, WorkerFilters};
use crate::server::watch::list_or_watch;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_workers, register_worker))
        .routes(routes!(get_worker, update_worker, delete_worker))
        .routes(routes!(heartbeat))
        .routes(routes!(update_labels))
        .routes(routes!(report_status))
        .routes(routes!(worker_shutdown))
}

#[utoipa::path(get, path = "/v2/workers", tag = "workers",
    params(CommonListParams, WorkerFilters),
    responses((status = 200, body = ListResponse<Worker>)))]
async fn list_workers(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    if let Caller::Registrant { .. } = caller {
        return Err(ApiError::forbidden("a registration token may only register a worker"));
    }
    let (params, mut filters) = list::parse::<WorkerFilters>(&raw)?;
    let live = state.live.clone();
    // A regular user may list (GPUStack's deploy form does) but sees no machine: an empty list.
    let admin = matches!(&caller, Caller::User(p) if p.user.spec.is_admin);
    filters.admin = admin;
    if !admin && !params.watch {
        let empty: Vec<Worker> = Vec::new();
        return Ok(axum::Json(ListResponse { items: empty, pagination: params.pagination(0, 0) }).into_response());
    }
    list_or_watch::<WorkerSpec, _, _, _>(&state, &headers, &raw, params, filters, move |w| live.overlay(w)).await
}

/// The `os` label GPUStack's worker sets: `linux`, `darwin`, `windows` (not the distribution).
pub fn os_label(os_name: &str) -> String {
    let name = os_name.to_lowercase();
    if name.contains("linux")
        || ["debian", "ubuntu", "centos", "rhel", "fedora", "alpine", "rocky", "suse"].iter().any(|d| name.contains(d))
    {
        "linux".into()
    } else if name.contains("mac") || name.contains("darwin") {
        "darwin".into()
    } else if name.contains("windows") {
        "windows".into()
    } else {
        name
    }
}

/// The `arch` label as Go names architectures (`amd64`, `arm64`).
pub fn arch_label(arch: &str) -> String {
    match arch {
        "x86_64" | "amd64" => "amd64".into(),
        "aarch64" | "arm64" => "arm64".into(),
        "x86" | "i686" | "i386" => "386".into(),
        other => other.to_lowercase(),
    }
}

fn check_name(name: &str) -> ApiResult<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::field("name", "must be 1-63 characters of letters, digits, '-', '_', '.'"))
    }
}

/// Registers a new worker (Bearer = the cluster's registration token). The token only ever makes
/// new workers: an existing worker rejoins with its own credential (kept in its data dir), and a
/// name that is taken stays taken until an administrator deletes that worker, so holding the
/// cluster token never lets anyone take over a worker and the instances placed on it.
#[utoipa::path(post, path = "/v2/workers", tag = "workers", request_body = WorkerRegister,
    responses((status = 200, body = WorkerRegistered), (status = 401, body = crate::api::ErrorBody)))]
async fn register_worker(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<WorkerRegister>,
) -> ApiResult<(StatusCode, axum::Json<WorkerRegistered>)> {
    let Caller::Registrant { cluster_id } = caller else {
        return Err(ApiError::unauthorized("register with the cluster's registration token as the Bearer token"));
    };
    check_name(&body.name)?;
    let mut labels = body.labels.clone();
    // GPUStack's worker labels: `os` and `arch` as Go names them (`linux`, `amd64`), so a
    // deployment's `worker_selector {"os": "linux"}` means the same on both.
    labels.entry("os".into()).or_insert_with(|| os_label(&body.status.os.name));
    labels.entry("arch".into()).or_insert_with(|| arch_label(&body.status.os.arch));
    labels.insert("worker-name".into(), body.name.clone());
    let spec = WorkerSpec {
        name: body.name.clone(),
        cluster_id,
        labels,
        maintenance: Default::default(),
        hostname: body.hostname,
        ip: body.ip,
        ifname: body.ifname,
        port: body.port,
        runtime: body.runtime,
        state: WorkerState::Ready,
        state_message: None,
        heartbeat_time: Some(chrono::Utc::now()),
        status: body.status,
        worker_version: body.worker_version,
    };
    // The credential embeds the id, so insert first with a placeholder digest, then set it.
    let existing = state.db.get_by_name::<WorkerSpec>(&body.name).await?;
    if let Some(w) = existing {
        return Err(ApiError::new(
            crate::server::error::ErrorCode::AlreadyExists,
            format!(
                "worker {:?} (id {}) already exists: a worker rejoins with its own credential, kept in its data \
                 dir; to register a new machine under this name, an administrator deletes worker {} first, or \
                 start it with another --worker-name",
                body.name, w.id, w.id
            ),
        )
        .with_field("name"));
    }
    let worker = match state
        .db
        .insert(&spec, &[("cluster_id", Val::Int(cluster_id)), ("token_digest", Val::Text(String::new()))])
        .await
    {
        Ok(w) => w,
        // Two machines raced for one name: the other won.
        Err(DbError::Duplicate { .. }) => {
            return Err(ApiError::new(
                crate::server::error::ErrorCode::AlreadyExists,
                format!("worker {:?} already exists", body.name),
            )
            .with_field("name"));
        }
        Err(e) => return Err(e.into()),
    };
    let (secret, credential) = new_worker_credential(worker.id);
    let worker = state
        .db
        .modify::<WorkerSpec, ApiError, _>(worker.id, None, |_| Ok(vec![("token_digest", Val::Text(digest(&secret)))]))
        .await?;
    state.leases.renew(worker.id, tokio::time::Instant::now());
    let server_token = server_token(&state.server_secret, worker.id);
    Ok((StatusCode::OK, axum::Json(WorkerRegistered { worker, credential, server_token })))
}

#[utoipa::path(get, path = "/v2/workers/{id}", tag = "workers", params(("id" = i64, Path)),
    responses((status = 200, body = Worker), (status = 404, body = crate::api::ErrorBody)))]
async fn get_worker(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Worker>> {
    match caller {
        Caller::Worker(w) if w.worker_id != id => Err(ApiError::forbidden("a worker may only read itself")),
        Caller::Registrant { .. } => Err(ApiError::forbidden("a registration token may only register a worker")),
        _ => Ok(axum::Json(state.live.overlay(state.db.get::<WorkerSpec>(id).await?))),
    }
}

/// Labels and maintenance mode (administrators).
#[utoipa::path(put, path = "/v2/workers/{id}", tag = "workers", params(("id" = i64, Path)), request_body = WorkerUpdate,
    responses((status = 200, body = Worker), (status = 409, body = crate::api::ErrorBody)))]
async fn update_worker(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Tolerant(body, _): Tolerant<WorkerUpdate>,
) -> ApiResult<axum::Json<Worker>> {
    p.require_admin()?;
    if let Some(labels) = &body.labels {
        check_label_keys(labels)?;
    }
    let worker = state
        .db
        .modify::<WorkerSpec, ApiError, _>(id, body.version, |w| {
            if body.name.as_ref().is_some_and(|n| n != &w.name) {
                return Err(ApiError::field("name", "workers cannot be renamed; the name is the worker's identity"));
            }
            if let Some(labels) = &body.labels {
                w.labels = labels.clone();
            }
            if let Some(m) = &body.maintenance {
                // A worker sent back as read keeps its state; only switching maintenance changes it.
                if m.enabled != w.maintenance.enabled {
                    w.state = if m.enabled { WorkerState::Maintenance } else { WorkerState::NotReady };
                }
                w.maintenance = m.clone();
            }
            Ok(vec![])
        })
        .await?;
    Ok(axum::Json(worker))
}

/// Removes a worker and every instance placed on it.
#[utoipa::path(delete, path = "/v2/workers/{id}", tag = "workers", params(("id" = i64, Path)),
    responses((status = 200), (status = 404, body = crate::api::ErrorBody)))]
async fn delete_worker(State(state): State<AppState>, Auth(p): Auth, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    p.require_admin()?;
    // Its instances go, and so do distributed ones it holds a part of: the controller recreates
    // them elsewhere.
    let mut gone = state.db.instances_on_worker(id).await?;
    gone.extend(state.db.instances_with_subordinate(id).await?);
    for instance in gone {
        state.db.delete_if_present::<ModelInstanceSpec>(instance.id).await?;
    }
    state.db.delete::<WorkerSpec>(id).await?;
    state.leases.forget(id);
    state.live.forget(id);
    Ok(StatusCode::OK)
}

fn require_self(caller: &Caller, id: i64) -> ApiResult<()> {
    match caller {
        Caller::Worker(w) if w.worker_id == id => Ok(()),
        _ => Err(ApiError::forbidden("only the worker itself may do this")),
    }
}

fn check_label_keys(labels: &std::collections::BTreeMap<String, String>) -> ApiResult<()> {
    for key in labels.keys() {
        if key.is_empty() || key.len() > 63 || !key.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
            return Err(ApiError::field(
                format!("labels.{key}"),
                "label keys are 1-63 characters of letters, digits, '-', '_', '.', '/'",
            ));
        }
    }
    Ok(())
}

/// Adds or overwrites labels on several workers (GPUStack's bulk edit); other keys are kept.
/// Every worker must exist (404 naming the first that does not) before any is changed.
#[utoipa::path(post, path = "/v2/workers/labels", tag = "workers", request_body = WorkerLabelsUpdate,
    responses((status = 204), (status = 400, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody)))]
async fn update_labels(
    State(state): State<AppState>,
    Auth(p): Auth,
    Json(body): Json<WorkerLabelsUpdate>,
) -> ApiResult<StatusCode> {
    p.require_admin()?;
    if body.worker_ids.is_empty() || body.worker_ids.iter().any(|&id| id <= 0) {
        return Err(ApiError::field("worker_ids", "must list at least one worker id, each greater than 0"));
    }
    check_label_keys(&body.labels)?;
    let mut ids = body.worker_ids.clone();
    ids.sort_unstable();
    ids.dedup();
    for &id in &ids {
        state.db.get::<WorkerSpec>(id).await?;
    }
    for &id in &ids {
        let res = state
            .db
            .modify::<WorkerSpec, ApiError, _>(id, None, |w| {
                w.labels.extend(body.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                Ok(vec![])
            })
            .await;
        match res {
            Ok(_) | Err(ApiError { code: crate::server::error::ErrorCode::NotFound, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Renews the worker's lease (memory only); a worker that was not_ready becomes ready again.
#[utoipa::path(post, path = "/v2/workers/{id}/heartbeat", tag = "workers", params(("id" = i64, Path)),
    responses((status = 204)))]
async fn heartbeat(State(state): State<AppState>, caller: Caller, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    require_self(&caller, id)?;
    state.leases.renew(id, tokio::time::Instant::now());
    let worker = state.db.get::<WorkerSpec>(id).await?;
    if crate::control::monitor::back_on_heartbeat(worker.spec.state, worker.spec.maintenance.enabled) {
        state
            .db
            .modify::<WorkerSpec, ApiError, _>(id, None, |w| {
                w.state = WorkerState::Ready;
                w.state_message = None;
                w.heartbeat_time = Some(chrono::Utc::now());
                Ok(vec![])
            })
            .await?;
        tracing::info!(worker = %worker.spec.name, "worker is heartbeating again: ready");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The worker's own clean shutdown (`stopping`): maintenance with `drain`, marked `until_restart`,
/// so its instances move to other workers and drain before it stops them; sent again when it
/// starts (not `stopping`), it ends a maintenance its shutdown began (docs/draining.md).
#[utoipa::path(put, path = "/v2/workers/{id}/shutdown", tag = "workers", params(("id" = i64, Path)),
    request_body = WorkerShutdown, responses((status = 200, body = Worker), (status = 403, body = crate::api::ErrorBody)))]
async fn worker_shutdown(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<WorkerShutdown>,
) -> ApiResult<axum::Json<Worker>> {
    require_self(&caller, id)?;
    let before = state.db.get::<WorkerSpec>(id).await?;
    let after = crate::control::drain::maintenance_on_shutdown(&before.spec.maintenance, body.stopping);
    if after == before.spec.maintenance {
        return Ok(axum::Json(before));
    }
    let worker = state
        .db
        .modify::<WorkerSpec, ApiError, _>(id, None, |w| {
            w.maintenance = crate::control::drain::maintenance_on_shutdown(&w.maintenance, body.stopping);
            Ok(vec![])
        })
        .await?;
    let what = if body.stopping {
        "worker stopping: in maintenance with drain"
    } else {
        "worker started again: its stop's maintenance ends"
    };
    tracing::info!(worker = %worker.spec.name, "{what}");
    Ok(axum::Json(worker))
}

/// The worker's machine status (CPU, memory, filesystems, OS, GPUs).
#[utoipa::path(put, path = "/v2/workers/{id}/status", tag = "workers", operation_id = "report_worker_status",
    params(("id" = i64, Path)),
    request_body = WorkerStatusReport, responses((status = 200, body = Worker)))]
async fn report_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(body): Json<WorkerStatusReport>,
) -> ApiResult<axum::Json<Worker>> {
    require_self(&caller, id)?;
    state.leases.renew(id, tokio::time::Instant::now());
    let now = chrono::Utc::now();
    // Only what changed is written: a report that moves nothing but utilisation figures stays in
    // memory (one read, no write, nobody woken).
    let current = state.db.get::<WorkerSpec>(id).await?;
    let w = &current.spec;
    let same = w.status.steady() == body.status.steady()
        && body.ip.as_ref().is_none_or(|ip| ip == &w.ip)
        && body.ifname.as_ref().is_none_or(|i| i == &w.ifname)
        && body.port.is_none_or(|p| p == w.port);
    state.live.put(id, body.status.clone(), now);
    if same {
        return Ok(axum::Json(state.live.overlay(current)));
    }
    let worker = state
        .db
        .modify::<WorkerSpec, ApiError, _>(id, None, |w| {
            w.status = body.status.clone();
            if let Some(ip) = &body.ip {
                w.ip = ip.clone();
            }
            if let Some(ifname) = &body.ifname {
                w.ifname = ifname.clone();
            }
            if let Some(port) = body.port {
                w.port = port;
            }
            w.heartbeat_time = Some(now);
            Ok(vec![])
        })
        .await?;
    Ok(axum::Json(worker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_as_gpustack_sets_them() {
        for (name, want) in
            [("Debian GNU/Linux", "linux"), ("Ubuntu", "linux"), ("macOS", "darwin"), ("Windows", "windows")]
        {
            assert_eq!(os_label(name), want, "{name}");
        }
        for (arch, want) in [("x86_64", "amd64"), ("aarch64", "arm64"), ("riscv64", "riscv64")] {
            assert_eq!(arch_label(arch), want, "{arch}");
        }
    }
}
