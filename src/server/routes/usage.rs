//! `GET /v2/usage` (token usage per day, caller, route and operation; filters: `start_date`,
//! `end_date`, `model`, `api_key_id`, `user_id`) and `GET /v2/dashboard` (counts by state and the
//! last 31 days of usage). Non-administrators see only their own usage.

use std::collections::BTreeMap;

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{
    Dashboard, ModelInstanceSpec, ModelRouteSpec, ModelSpec, UsageDay, UsageResponse, UsageRow, WorkerSpec,
};
use crate::db::UsageFilter;
use crate::server::AppState;
use crate::server::auth::Auth;
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
    let workers_list = state.db.all::<WorkerSpec>().await?;
    let mut workers = BTreeMap::new();
    for w in &workers_list {
        let s =
            serde_json::to_value(w.spec.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        *workers.entry(s).or_insert(0) += 1;
    }
    let gpus = workers_list.iter().map(|w| w.spec.status.gpu_devices.len() as i64).sum();
    let mut instances = BTreeMap::new();
    for i in state.db.all::<ModelInstanceSpec>().await? {
        *instances.entry(i.spec.state.as_str().to_string()).or_insert(0) += 1;
    }
    let since = (chrono::Utc::now() - chrono::Duration::days(30)).format("%Y-%m-%d").to_string();
    let filter = UsageFilter {
        start_date: Some(since),
        user_id: (!p.user.spec.is_admin).then_some(p.user.id),
        ..Default::default()
    };
    let usage = per_day(&state.db.usage(&filter).await?);
    Ok(axum::Json(Dashboard {
        workers,
        gpus,
        models: state.db.count::<ModelSpec>().await?,
        model_routes: state.db.count::<ModelRouteSpec>().await?,
        instances,
        usage,
    }))
}
