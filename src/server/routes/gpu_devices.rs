//! `/v2/gpu-devices`: every GPU of every worker in GPUStack's shape, with the memory the scheduler
//! has claimed on each (the same claims the scheduler's snapshot counts). Paged, searchable, sortable;
//! built once per change of workers or instances, with the live figures laid over the page served.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{GpuCore, GpuDeviceView, GpuMemory, ListResponse};
use crate::control::scheduler::snapshot;
use crate::db::Db;
use crate::server::AppState;
use crate::server::auth::Auth;
use crate::server::cache::{ByGeneration, Mirrors};
use crate::server::error::{ApiError, ApiResult, ErrorCode};
use crate::server::extract::RawQuery;
use crate::server::list::{self, CommonListParams, GpuDeviceFilters};
use crate::server::watch::{page_of, sort_by_fields};
use std::collections::HashMap;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_gpu_devices)).routes(routes!(get_gpu_device))
}

/// The GPU list as stored (no live figures), rebuilt only when a worker or an instance changed:
/// 1,000 workers' GPUs are built once per change, not once per request.
pub type DeviceCache = ByGeneration<Vec<Device>>;

pub fn device_cache(db: &Db) -> DeviceCache {
    ByGeneration::new(db, &["workers", "model_instances"])
}

/// A GPU as listed, and when its worker's row was last written (live figures newer than that
/// replace the stored ones).
#[derive(Clone)]
pub struct Device {
    view: GpuDeviceView,
    heartbeat_time: Option<chrono::DateTime<chrono::Utc>>,
    /// How many GPUs the stored row lists (a live report listing another number is not used).
    gpus: usize,
}

/// Every GPU, in the workers' order (newest worker first, then by type and index).
async fn build(mirrors: &Mirrors) -> ApiResult<Vec<Device>> {
    let workers = mirrors.workers.rows().await?;
    let instances = mirrors.instances.rows().await?;
    let claims: HashMap<(i64, u32), u64> = snapshot(&workers, &instances, None)
        .workers
        .iter()
        .flat_map(|w| w.gpus.iter().map(move |g| ((w.id, g.index), g.allocated)))
        .collect();
    let mut items = Vec::new();
    for worker in workers.iter().rev() {
        let allocated = |index: u32| claims.get(&(worker.id, index)).copied().unwrap_or(0);
        for device in &worker.spec.status.gpu_devices {
            let view = GpuDeviceView {
                id: device.id(&worker.spec.name),
                worker_id: worker.id,
                worker_name: worker.spec.name.clone(),
                worker_ip: worker.spec.ip.clone(),
                worker_ifname: worker.spec.ifname.clone(),
                cluster_id: worker.spec.cluster_id,
                device_index: device.index,
                device_chip_index: 0,
                memory: GpuMemory {
                    total: device.memory_total,
                    used: device.memory_used,
                    allocated: allocated(device.index),
                    utilization_rate: device.memory_utilization_rate,
                    is_unified_memory: false,
                },
                core: device.core_utilization_rate.map(|utilization_rate| GpuCore { utilization_rate }),
                device: device.clone(),
            };
            let gpus = worker.spec.status.gpu_devices.len();
            items.push(Device { view, heartbeat_time: worker.spec.heartbeat_time, gpus });
        }
    }
    Ok(items)
}

/// The listed GPU with its worker's latest reported figures (memory used, utilisation, temperature).
fn live(state: &AppState, d: &Device) -> GpuDeviceView {
    let mut view = d.view.clone();
    if let Some(device) = state.live.gpu(view.worker_id, d.heartbeat_time, d.gpus, view.device_index) {
        view.memory.used = device.memory_used;
        view.memory.utilization_rate = device.memory_utilization_rate;
        view.core = device.core_utilization_rate.map(|utilization_rate| GpuCore { utilization_rate });
        view.device = device;
    }
    view
}

/// Whether a GPU matches `?search=` (lower-cased): its name, as GPUStack's search does, or its
/// worker's name (ours too: "every GPU of this machine").
pub fn matches_search(view: &GpuDeviceView, search: &str) -> bool {
    [&view.device.name, &view.worker_name].iter().any(|field| field.to_lowercase().contains(search))
}

/// Lists GPUs. `search` matches the GPU's name (as GPUStack's) and its worker's name;
/// `cluster_id` and `worker_id` filter; `page`, `perPage`, `sort_by` as on every list. A regular
/// user gets an empty list.
#[utoipa::path(get, path = "/v2/gpu-devices", tag = "workers",
    params(CommonListParams, GpuDeviceFilters),
    responses((status = 200, body = ListResponse<GpuDeviceView>), (status = 400, body = crate::api::ErrorBody)))]
async fn list_gpu_devices(
    State(state): State<AppState>,
    Auth(p): Auth,
    _headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (params, filters) = list::parse::<GpuDeviceFilters>(&raw)?;
    if params.watch {
        return Err(ApiError::new(ErrorCode::InvalidQuery, "watch: GPUs change with their workers; watch /v2/workers")
            .with_field("watch"));
    }
    if !p.user.spec.is_admin {
        // A regular user may list (GPUStack's deploy form does) but sees no machine's GPUs.
        let empty: Vec<GpuDeviceView> = Vec::new();
        return Ok(axum::Json(ListResponse { items: empty, pagination: params.pagination(0, 0) }).into_response());
    }
    let search = params.query.search.as_deref().map(str::to_lowercase);
    let devices = state.gpu_devices.get(|| build(&state.mirrors)).await?;
    let matching: Vec<&Device> = devices
        .iter()
        .filter(|d| filters.matches(&d.view))
        .filter(|d| search.as_deref().is_none_or(|s| matches_search(&d.view, s)))
        .collect();
    let total = matching.len() as i64;
    let to_json = |items: Vec<&Device>| -> ApiResult<Vec<serde_json::Value>> {
        items
            .iter()
            .map(|d| serde_json::to_value(live(&state, d)))
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::internal(&e))
    };
    let items = if raw.contains_key("sort_by") {
        let keys: Vec<(String, bool)> = if params.field_sort.is_empty() {
            params.query.sort.iter().map(|(k, d)| (k.name().to_string(), *d)).collect()
        } else {
            params.field_sort.clone()
        };
        let mut values = to_json(matching)?;
        sort_by_fields(&mut values, &keys)?;
        page_of(values, params.query.page, params.query.per_page)
    } else {
        // Only the page is turned into JSON, with live figures.
        to_json(page_of(matching, params.query.page, params.query.per_page))?
    };
    let pagination = params.pagination(total, items.len());
    Ok(axum::Json(ListResponse { items, pagination }).into_response())
}

/// One GPU by its id (`<worker_name>:<type>:<index>`).
#[utoipa::path(get, path = "/v2/gpu-devices/{id}", tag = "workers", params(("id" = String, Path)),
    responses((status = 200, body = GpuDeviceView), (status = 404, body = crate::api::ErrorBody)))]
async fn get_gpu_device(
    State(state): State<AppState>,
    Auth(_p): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<GpuDeviceView>> {
    let devices = state.gpu_devices.get(|| build(&state.mirrors)).await?;
    devices
        .iter()
        .find(|d| d.view.id == id)
        .map(|d| axum::Json(live(&state, d)))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no GPU device {id:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{GpuDevice, GpuType, GpuVendor};

    #[test]
    fn search_matches_the_gpu_name_and_the_worker_name() {
        let device = GpuDevice {
            index: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            vendor: GpuVendor::Nvidia,
            gpu_type: GpuType::Cuda,
            uuid: None,
            memory_total: 80 << 30,
            memory_used: 0,
            memory_utilization_rate: 0.0,
            core_utilization_rate: None,
            temperature: None,
            simulated: true,
            memory_external: 0,
        };
        let view = GpuDeviceView {
            id: "box-1:cuda:0".into(),
            worker_id: 1,
            worker_name: "box-1".into(),
            worker_ip: "10.0.0.1".into(),
            worker_ifname: "eth0".into(),
            cluster_id: 1,
            device_index: 0,
            device_chip_index: 0,
            memory: GpuMemory {
                total: 80 << 30,
                used: 0,
                allocated: 0,
                utilization_rate: 0.0,
                is_unified_memory: false,
            },
            core: None,
            device,
        };
        let cases = [("h100", true), ("nvidia h100 80gb", true), ("box-1", true), ("a100", false), ("10.0.0.1", false)];
        for (search, want) in cases {
            assert_eq!(matches_search(&view, search), want, "{search}");
        }
    }
}
