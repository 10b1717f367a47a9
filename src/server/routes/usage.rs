//! `GET /v2/usage` (token usage per day, caller, route and operation; filters: `start_date`,
//! `end_date`, `model`, `api_key_id`, `user_id`) and `GET /v2/dashboard` (counts by state and the
//! last 31 days of usage). Non-administrators see only their own usage.

use std::collections::BTreeMap;

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{
    ActiveClaim, ActiveModel, ClusterSpec, Dashboard, InstanceState, LoadHistory, LoadNow, ModelInstanceSpec,
    ModelRouteSpec, ModelSpec, ModelUsageSummary, Record, ResourceCounts, SystemLoad, TimePoint, UsageDay,
    UsageResponse, UsageRow, WorkerStatus,
};
use crate::db::UsageFilter;
use crate::server::AppState;
use crate::server::auth::Auth;
use crate::server::cache::ClusterRows;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{RawQuery, int_param};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(usage)).routes(routes!(dashboard))
}

fn date_param(raw: &std::collections::HashMap<String, String>, name: &str) -> ApiResult<Option<String>> {
    match raw.get(name) {
        None => Ok(None),
        Some(v) => chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .map(|d| Some(d.format("%Y-%m-%d").to_string()))
            .map_err(|_| ApiError::field(name, format!("must be a date as YYYY-MM-DD, got {v:?}"))),
    }
}

fn per_day(rows: &[UsageRow]) -> Vec<UsageDay> {
    let mut days: BTreeMap<&str, UsageDay> = BTreeMap::new();
    for r in rows {
        let d = days.entry(&r.date).or_insert_with(|| UsageDay {
            date: r.date.clone(),
            request_count: 0,
            prompt_token_count: 0,
            completion_token_count: 0,
        });
        d.request_count += r.request_count;
        d.prompt_token_count += r.prompt_token_count;
        d.completion_token_count += r.completion_token_count;
    }
    days.into_values().collect()
}

#[utoipa::path(get, path = "/v2/usage", tag = "usage",
    params(("start_date" = Option<String>, Query), ("end_date" = Option<String>, Query), ("model" = Option<String>, Query),
           ("api_key_id" = Option<i64>, Query), ("user_id" = Option<i64>, Query)),
    responses((status = 200, body = UsageResponse)))]
async fn usage(
    State(state): State<AppState>,
    Auth(p): Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult<axum::Json<UsageResponse>> {
    let mut filter = UsageFilter {
        start_date: date_param(&raw, "start_date")?,
        end_date: date_param(&raw, "end_date")?,
        route_name: raw.get("model").cloned(),
        api_key_id: int_param(&raw, "api_key_id")?,
        user_id: int_param(&raw, "user_id")?,
    };
    if !p.user.spec.is_admin {
        filter.user_id = Some(p.user.id);
    }
    let items = state.db.usage(&filter).await?;
    let per_day = per_day(&items);
    Ok(axum::Json(UsageResponse { items, per_day }))
}

#[utoipa::path(get, path = "/v2/dashboard", tag = "usage", responses((status = 200, body = Dashboard)))]
async fn dashboard(State(state): State<AppState>, Auth(p): Auth) -> ApiResult<axum::Json<Dashboard>> {
    // Stored rows, read again only after a commit to them; live figures laid over for the load.
    let rows = state.cluster_rows.get(|| ClusterRows::read(&state.mirrors)).await?;
    let mut workers = BTreeMap::new();
    for w in rows.workers.iter() {
        let s =
            serde_json::to_value(w.spec.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        *workers.entry(s).or_insert(0) += 1;
    }
    let gpus = rows.workers.iter().map(|w| w.spec.status.gpu_devices.len() as i64).sum();
    let mut instances = BTreeMap::new();
    for i in rows.instances.iter() {
        *instances.entry(i.spec.status.state.as_str().to_string()).or_insert(0) += 1;
    }
    let since = (chrono::Utc::now() - chrono::Duration::days(30)).format("%Y-%m-%d").to_string();
    let filter = UsageFilter {
        start_date: Some(since),
        user_id: (!p.user.spec.is_admin).then_some(p.user.id),
        ..Default::default()
    };
    let usage_rows = state.db.usage(&filter).await?;
    let usage = per_day(&usage_rows);
    let series = |f: fn(&UsageDay) -> i64| -> Vec<TimePoint> {
        usage.iter().filter_map(|d| Some(TimePoint { timestamp: day_start(&d.date)?, value: f(d) as f64 })).collect()
    };
    let mut load = Load::default();
    state.live.each_latest(&rows.workers, |status| load.add(status));
    Ok(axum::Json(Dashboard {
        resource_counts: ResourceCounts {
            worker_count: rows.workers.len() as i64,
            gpu_count: gpus,
            model_count: rows.models.len() as i64,
            model_instance_count: rows.instances.len() as i64,
            cluster_count: state.db.count::<ClusterSpec>().await?,
        },
        system_load: SystemLoad { current: load.now(), history: LoadHistory::default() },
        model_usage: ModelUsageSummary {
            api_request_history: series(|d| d.request_count),
            completion_token_history: series(|d| d.completion_token_count),
            prompt_token_history: series(|d| d.prompt_token_count),
        },
        active_models: active_models(&rows.models, &rows.instances, &usage_rows),
        workers,
        gpus,
        models: rows.models.len() as i64,
        model_routes: state.db.count::<ModelRouteSpec>().await?,
        instances,
        usage,
    }))
}

/// Unix seconds of a `YYYY-MM-DD` day's start (UTC).
fn day_start(date: &str) -> Option<i64> {
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
}

/// Mean CPU and GPU utilization, and RAM and VRAM used over total, in percent, over every worker.
/// Sums in f64: figures come from workers and must not overflow whatever they say.
#[derive(Default)]
struct Load {
    workers: f64,
    cpu: f64,
    ram_used: f64,
    ram_total: f64,
    gpus_reporting: f64,
    gpu: f64,
    vram_used: f64,
    vram_total: f64,
}

impl Load {
    fn add(&mut self, s: &WorkerStatus) {
        self.workers += 1.0;
        self.cpu += s.cpu.utilization_rate;
        self.ram_used += s.memory.used as f64;
        self.ram_total += s.memory.total as f64;
        for g in &s.gpu_devices {
            if let Some(rate) = g.core_utilization_rate {
                self.gpus_reporting += 1.0;
                self.gpu += rate;
            }
            self.vram_used += g.memory_used as f64;
            self.vram_total += g.memory_total as f64;
        }
    }

    fn now(&self) -> LoadNow {
        let ratio = |part: f64, whole: f64| if whole <= 0.0 { 0.0 } else { part * 100.0 / whole };
        LoadNow {
            cpu: ratio(self.cpu, self.workers * 100.0),
            ram: ratio(self.ram_used, self.ram_total),
            gpu: ratio(self.gpu, self.gpus_reporting * 100.0),
            vram: ratio(self.vram_used, self.vram_total),
        }
    }
}

/// Deployments with running instances, busiest first.
fn active_models(
    models: &[Record<ModelSpec>],
    instances: &[Record<ModelInstanceSpec>],
    usage: &[UsageRow],
) -> Vec<ActiveModel> {
    let mut out: Vec<ActiveModel> = models
        .iter()
        .filter_map(|m| {
            let running: Vec<_> = instances
                .iter()
                .filter(|i| i.spec.model_id == Some(m.id) && i.spec.status.state == InstanceState::Running)
                .collect();
            if running.is_empty() {
                return None;
            }
            let claims = running.iter().filter_map(|i| i.spec.binding.computed_resource_claim.as_ref());
            let (ram, vram) = claims.fold((0u64, 0u64), |(r, v), c| {
                (r.saturating_add(c.ram), c.vram.values().fold(v, |v, b| v.saturating_add(*b)))
            });
            let token_count = usage
                .iter()
                .filter(|u| u.model_name == m.spec.name)
                .map(|u| u.prompt_token_count + u.completion_token_count)
                .sum();
            Some(ActiveModel {
                id: m.id,
                name: m.spec.name.clone(),
                categories: m.spec.categories.clone(),
                instance_count: running.len() as i64,
                token_count,
                resource_claim: ActiveClaim { ram, vram },
            })
        })
        .collect();
    out.sort_by(|a, b| b.token_count.cmp(&a.token_count).then_with(|| a.name.cmp(&b.name)));
    out
}
