//! One description per list: a `Deserialize + IntoParams` struct names a list's query filters once,
//! and yields the parameters a request may carry, their parsing (4xx naming the field), the SQL
//! filters, the row test watch streams apply, and the `params(...)` of its OpenAPI operation.

use std::collections::HashMap;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use utoipa::IntoParams;
use utoipa::openapi::path::ParameterIn;

use super::error::ApiError;
use super::extract::{ListParams, query_error};
use crate::api::{
    ApiKeySpec, GpuDeviceView, InstanceState, ModelInstanceSpec, ModelRouteTargetSpec, Record, WorkerSpec,
};
use crate::db::{Resource, Val};

/// The parameters every list takes (parsed by [`ListParams::parse`]; this struct documents them).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[allow(dead_code, reason = "documents the parameters `ListParams::parse` reads")]
#[into_params(parameter_in = Query)]
pub struct CommonListParams {
    /// Page number from 1; -1 answers every row on one page.
    pub page: Option<i64>,
    /// Rows per page, 1 to 1000 (default 100); `per_page` is read too.
    #[serde(rename = "perPage")]
    pub per_page: Option<i64>,
    /// Comma-separated fields to sort by, `-` first for descending (default `-id`: newest first).
    pub sort_by: Option<String>,
    /// Case-insensitive substring of the name.
    pub search: Option<String>,
    /// `true`: answer a stream of changes instead of a page (SSE with `Accept: text/event-stream`);
    /// `/v2/gpu-devices` refuses it (watch `/v2/workers`).
    pub watch: Option<bool>,
}

/// A list's own query filters: what SQL selects and which rows a watch stream passes, which agree.
pub trait ListFilters<T: Resource>: IntoParams + DeserializeOwned + Send + Sync + 'static {
    /// Equality filters on the table's extra columns: (column, value).
    fn sql(&self) -> Vec<(&'static str, Val)>;
    /// Whether a row matches: for watch events, and after [`ListFilters::sql`] where that selects more.
    fn matches(&self, row: &Record<T>) -> bool;
    /// Whether [`ListFilters::sql`] selects exactly the rows that match; when not, it selects a
    /// superset and the list is filtered and paged in memory.
    fn sql_is_exact(&self) -> bool {
        true
    }
}

/// The query parameter names a filters struct takes, as its OpenAPI description names them.
pub fn param_names<F: IntoParams>() -> Vec<String> {
    F::into_params(|| Some(ParameterIn::Query)).into_iter().map(|p| p.name).collect()
}

/// Parses a list request: the common parameters and the list's filters `F`; any other parameter
/// is a 400 naming it, as is a bad value.
pub fn parse<F: IntoParams + DeserializeOwned>(raw: &HashMap<String, String>) -> Result<(ListParams, F), ApiError> {
    let names = param_names::<F>();
    let extra: Vec<&str> = names.iter().map(String::as_str).collect();
    let params = ListParams::parse(raw, &extra)?;
    let filters = parse_filters::<F>(raw, &names)?;
    Ok((params, filters))
}

/// Reads the filters `F` from the query parameters it names; a bad value is a 400 naming the field.
fn parse_filters<F: DeserializeOwned>(raw: &HashMap<String, String>, names: &[String]) -> Result<F, ApiError> {
    let object: serde_json::Map<String, serde_json::Value> = raw
        .iter()
        .filter(|(k, _)| names.contains(k))
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_path_to_error::deserialize(serde_json::Value::Object(object)).map_err(|e| {
        let field = e.path().to_string();
        query_error(&field, e.into_inner())
    })
}

/// An optional integer query parameter (`must be an integer, got "x"`).
fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let raw = String::deserialize(d)?;
    raw.trim().parse::<i64>().map(Some).map_err(|_| D::Error::custom(format!("must be an integer, got {raw:?}")))
}

/// An optional instance state (`unknown instance state "x"`).
fn instance_state<'de, D: Deserializer<'de>>(d: D) -> Result<Option<InstanceState>, D::Error> {
    let raw = String::deserialize(d)?;
    serde_json::from_value(serde_json::Value::String(raw.clone()))
        .map(Some)
        .map_err(|_| D::Error::custom(format!("unknown instance state {raw:?}")))
}

/// No filters: the list has only a watch's resume point.
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Since {
    /// With `watch`: resume after this event id (as `Last-Event-ID`).
    #[serde(default, deserialize_with = "int")]
    #[allow(dead_code, reason = "parsed to refuse a bad value, and documented; `watch.rs` reads it")]
    pub since: Option<i64>,
}

impl<T: Resource> ListFilters<T> for Since {
    fn sql(&self) -> Vec<(&'static str, Val)> {
        Vec::new()
    }

    fn matches(&self, _row: &Record<T>) -> bool {
        true
    }
}

/// `/v2/workers`: no query filters; a caller that is not an administrator sees no worker.
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkerFilters {
    /// With `watch`: resume after this event id (as `Last-Event-ID`).
    #[serde(default, deserialize_with = "int")]
    #[allow(dead_code, reason = "parsed to refuse a bad value, and documented; `watch.rs` reads it")]
    pub since: Option<i64>,
    /// Set by the handler: whether the caller may see workers.
    #[serde(skip)]
    pub admin: bool,
}

impl ListFilters<WorkerSpec> for WorkerFilters {
    fn sql(&self) -> Vec<(&'static str, Val)> {
        Vec::new()
    }

    fn matches(&self, _row: &Record<WorkerSpec>) -> bool {
        self.admin
    }

    fn sql_is_exact(&self) -> bool {
        self.admin
    }
}

/// `/v2/api-keys`: the caller's own keys.
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApiKeyFilters {
    /// With `watch`: resume after this event id (as `Last-Event-ID`).
    #[serde(default, deserialize_with = "int")]
    #[allow(dead_code, reason = "parsed to refuse a bad value, and documented; `watch.rs` reads it")]
    pub since: Option<i64>,
    /// Set by the handler: the caller.
    #[serde(skip)]
    pub user_id: i64,
}

impl ListFilters<ApiKeySpec> for ApiKeyFilters {
    fn sql(&self) -> Vec<(&'static str, Val)> {
        vec![("user_id", Val::Int(self.user_id))]
    }

    fn matches(&self, row: &Record<ApiKeySpec>) -> bool {
        row.spec.user_id == self.user_id
    }
}

/// `/v2/model-route-targets`.
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RouteTargetFilters {
    /// With `watch`: resume after this event id (as `Last-Event-ID`).
    #[serde(default, deserialize_with = "int")]
    #[allow(dead_code, reason = "parsed to refuse a bad value, and documented; `watch.rs` reads it")]
    pub since: Option<i64>,
    /// Only the targets of this route.
    #[serde(default, deserialize_with = "int")]
    pub route_id: Option<i64>,
}

impl ListFilters<ModelRouteTargetSpec> for RouteTargetFilters {
    fn sql(&self) -> Vec<(&'static str, Val)> {
        self.route_id.map(|r| vec![("route_id", Val::Int(r))]).unwrap_or_default()
    }

    fn matches(&self, row: &Record<ModelRouteTargetSpec>) -> bool {
        self.route_id.is_none_or(|r| row.spec.route_id == r)
    }
}

/// `/v2/model-instances` (and `/v2/models/{id}/instances`, whose path sets `model_id`).
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstanceFilters {
    /// With `watch`: resume after this event id (as `Last-Event-ID`).
    #[serde(default, deserialize_with = "int")]
    #[allow(dead_code, reason = "parsed to refuse a bad value, and documented; `watch.rs` reads it")]
    pub since: Option<i64>,
    /// Only the instances this worker takes part in: as their main worker or as a subordinate
    /// worker of a distributed instance (a worker's own credential always sets its id).
    #[serde(default, deserialize_with = "int")]
    pub worker_id: Option<i64>,
    /// Only the instances of this deployment.
    #[serde(default, deserialize_with = "int")]
    pub model_id: Option<i64>,
    /// Only the instances in this state.
    #[serde(default, deserialize_with = "instance_state")]
    pub state: Option<InstanceState>,
}

impl ListFilters<ModelInstanceSpec> for InstanceFilters {
    /// `worker_id` is not a column test (subordinate workers are in the row's JSON): SQL selects
    /// by deployment and state, and [`ListFilters::matches`] by worker after it.
    fn sql(&self) -> Vec<(&'static str, Val)> {
        let mut filters = Vec::new();
        if let Some(id) = self.model_id {
            filters.push(("model_id", Val::Int(id)));
        }
        if let Some(s) = self.state {
            filters.push(("state", Val::Text(s.as_str().to_string())));
        }
        filters
    }

    fn matches(&self, row: &Record<ModelInstanceSpec>) -> bool {
        self.worker_id.is_none_or(|w| row.spec.involves(w))
            && self.model_id.is_none_or(|m| row.spec.model_id == Some(m))
            && self.state.is_none_or(|s| row.spec.status.state == s)
    }

    fn sql_is_exact(&self) -> bool {
        self.worker_id.is_none()
    }
}

/// `/v2/gpu-devices` (listed from memory, not a table: no SQL, no watch).
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GpuDeviceFilters {
    /// Only the GPUs of this cluster's workers.
    #[serde(default, deserialize_with = "int")]
    pub cluster_id: Option<i64>,
    /// Only this worker's GPUs.
    #[serde(default, deserialize_with = "int")]
    pub worker_id: Option<i64>,
}

impl GpuDeviceFilters {
    /// Whether a GPU matches.
    pub fn matches(&self, view: &GpuDeviceView) -> bool {
        self.cluster_id.is_none_or(|c| view.cluster_id == c) && self.worker_id.is_none_or(|w| view.worker_id == w)
    }
}

#[cfg(test)]
#[path = "list_tests.rs"]
mod tests;
