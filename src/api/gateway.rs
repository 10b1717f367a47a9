//! Wire types for the gateway's management side: model routes and their targets (GPUStack's field
//! names), token usage and the dashboard.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Record;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessPolicy {
    Public,
    #[default]
    Authed,
    AllowedPrincipals,
}

/// How a route spreads requests over its instances (Ferrostack's own field; GPUStack has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// Requests that share a prompt prefix go to the instance that took it first (whose prompt
    /// cache holds it), unless it is busier than 1.25× the mean; a new prefix goes where
    /// least-outstanding would. The default.
    #[default]
    PrefixAware,
    /// The instance with the fewest requests in flight on this server.
    LeastOutstanding,
    /// Each instance in turn.
    RoundRobin,
}

/// A model route: the public model name clients call, mapped to weighted targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelRouteSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub meta: Option<serde_json::Value>,
    #[serde(default)]
    pub generic_proxy: Option<bool>,
    /// The deployment this route was created with (it goes when the deployment goes).
    #[serde(default)]
    pub created_model_id: Option<i64>,
    /// Number of targets (maintained by the server).
    #[serde(default)]
    pub targets: u32,
    /// Number of targets with running instances (maintained by the server).
    #[serde(default)]
    pub ready_targets: u32,
    #[serde(default)]
    pub access_policy: AccessPolicy,
    /// Seconds to wait for the upstream's response headers; absent = no limit. Streams are never
    /// cut for being slow or idle.
    #[serde(default)]
    pub timeout: Option<u64>,
    /// How requests spread over the route's instances.
    #[serde(default)]
    pub load_balancing: LoadBalancing,
}

pub type ModelRoute = Record<ModelRouteSpec>;

/// Target state: `active` while its deployment has running instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    Active,
    #[default]
    Unavailable,
}

/// One weighted target of a route: a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelRouteTargetSpec {
    pub name: String,
    pub route_id: i64,
    pub route_name: String,
    #[serde(default)]
    pub model_id: Option<i64>,
    #[serde(default)]
    pub provider_id: Option<i64>,
    /// The name sent upstream as `model` instead of the route's.
    #[serde(default)]
    pub overridden_model_name: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// `"4xx"` and/or `"5xx"`: this target takes requests that the others answer with these.
    #[serde(default)]
    pub fallback_status_codes: Option<Vec<String>>,
    #[serde(default)]
    pub state: TargetState,
}

fn default_weight() -> u32 {
    100
}

pub type ModelRouteTarget = Record<ModelRouteTargetSpec>;

/// A target as given inside a route create/update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRouteTargetItem {
    #[serde(default)]
    pub name: Option<String>,
    pub model_id: i64,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub overridden_model_name: Option<String>,
    #[serde(default)]
    pub fallback_status_codes: Option<Vec<String>>,
}

/// `POST /v2/model-routes` and `PUT /v2/model-routes/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRouteCreate {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub meta: Option<serde_json::Value>,
    #[serde(default)]
    pub generic_proxy: Option<bool>,
    #[serde(default)]
    pub access_policy: AccessPolicy,
    #[serde(default)]
    pub timeout: Option<u64>,
    /// How requests spread over the route's instances; absent keeps the route's (on create:
    /// `prefix_aware`).
    #[serde(default)]
    pub load_balancing: Option<LoadBalancing>,
    /// Replaces the route's targets when present. A number (the target count a GET answers, sent
    /// back unchanged) leaves them as they are.
    #[serde(default, deserialize_with = "targets_or_count")]
    #[schema(value_type = Option<Vec<ModelRouteTargetItem>>)]
    pub targets: Option<Vec<ModelRouteTargetItem>>,
    #[serde(default)]
    pub version: Option<i64>,
}

/// `POST /v2/model-route-targets` and `PUT /v2/model-route-targets/{id}`. `route_id` and
/// `model_id` are required on POST; on PUT a missing one keeps the target's (GPUStack's
/// `ModelRouteTargetUpdate` has no `route_id`, and its `model_id` may be null).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRouteTargetCreate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub route_id: Option<i64>,
    #[serde(default)]
    pub model_id: Option<i64>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub overridden_model_name: Option<String>,
    #[serde(default)]
    pub fallback_status_codes: Option<Vec<String>>,
    #[serde(default)]
    pub version: Option<i64>,
}

/// One row of token usage: a day, a caller (user and API key), a route and an operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageRow {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    pub user_id: i64,
    /// 0 when the call came through a session rather than an API key.
    pub api_key_id: i64,
    pub route_id: i64,
    pub route_name: String,
    pub model_name: String,
    pub operation: String,
    pub request_count: i64,
    pub prompt_token_count: i64,
    pub completion_token_count: i64,
    /// Of `request_count`, the requests whose answer reported no token usage (an engine's native
    /// route that does not count, a binary answer, an error): served, but not metered.
    #[serde(default)]
    pub unmetered_request_count: i64,
    /// The key's name, while the key exists (read-only; not stored with the row).
    #[serde(default)]
    pub api_key_name: Option<String>,
    /// The user's name, while the user exists (read-only).
    #[serde(default)]
    pub user_name: Option<String>,
}

/// `GET /v2/usage`: rows matching the filters plus per-day totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageResponse {
    pub items: Vec<UsageRow>,
    pub per_day: Vec<UsageDay>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageDay {
    pub date: String,
    pub request_count: i64,
    pub prompt_token_count: i64,
    pub completion_token_count: i64,
}

/// `GET /v2/dashboard`: resource counts by state and the last 31 days of usage, plus GPUStack's
/// `SystemSummary` fields (`resource_counts`, `system_load`, `model_usage`, `active_models`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Dashboard {
    pub workers: BTreeMap<String, i64>,
    pub gpus: i64,
    pub models: i64,
    pub model_routes: i64,
    pub instances: BTreeMap<String, i64>,
    pub usage: Vec<UsageDay>,
    pub resource_counts: ResourceCounts,
    pub system_load: SystemLoad,
    pub model_usage: ModelUsageSummary,
    pub active_models: Vec<ActiveModel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceCounts {
    pub worker_count: i64,
    pub gpu_count: i64,
    pub model_count: i64,
    pub model_instance_count: i64,
    pub cluster_count: i64,
}

/// Utilization in percent now; Ferrostack keeps no history (`history` lists are empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SystemLoad {
    pub current: LoadNow,
    pub history: LoadHistory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadNow {
    pub cpu: f64,
    pub ram: f64,
    pub gpu: f64,
    pub vram: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadHistory {
    pub cpu: Vec<TimePoint>,
    pub ram: Vec<TimePoint>,
    pub gpu: Vec<TimePoint>,
    pub vram: Vec<TimePoint>,
}

/// One point of a series: Unix seconds and a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TimePoint {
    pub timestamp: i64,
    pub value: f64,
}

/// Requests and tokens per day (the days of `usage`, as series).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelUsageSummary {
    pub api_request_history: Vec<TimePoint>,
    pub completion_token_history: Vec<TimePoint>,
    pub prompt_token_history: Vec<TimePoint>,
}

/// A deployment with running instances: how many, what they claim, tokens served (31 days).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActiveModel {
    pub id: i64,
    pub name: String,
    pub categories: Vec<String>,
    pub instance_count: i64,
    pub token_count: i64,
    pub resource_claim: ActiveClaim,
}

/// Bytes claimed by a deployment's running instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActiveClaim {
    pub ram: u64,
    pub vram: u64,
}

fn targets_or_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<ModelRouteTargetItem>>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null | serde_json::Value::Number(_) => Ok(None),
        list => serde_path_to_error::deserialize(list).map(Some).map_err(|e| {
            let path = e.path().to_string();
            serde::de::Error::custom(format!("{path}: {}", e.into_inner()))
        }),
    }
}
