//! Wire types shared by server, worker, CLI and tests (serde + OpenAPI). The bottom layer: no internal deps.
//!
//! Every stored resource travels as a [`Record`]: the common metadata (`id`, `version`, timestamps)
//! flattened together with the resource's own fields, so `GET /v2/users/1` answers
//! `{"id":1,"version":3,"created_at":…,"updated_at":…,"username":"admin",…}` as GPUStack does.

/// The header a server sets on a 503 it answered before acting on the call (a server without
/// its database): only then does a client send a call that could act twice to the next server.
pub const NOT_ACTED: &str = "x-ferrostack-not-acted";

pub(crate) mod auth;
pub(crate) mod autoscale;
pub(crate) mod backend;
pub(crate) mod compat;
pub(crate) mod gateway;
pub(crate) mod gpu;
pub(crate) mod hub;
pub(crate) mod instance_report;
pub(crate) mod model;
mod schema;
pub(crate) mod worker;

pub use auth::*;
pub use autoscale::*;
pub use gateway::*;
pub use gpu::*;
pub use instance_report::*;
pub use model::*;
pub use worker::*;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The environment variable a worker reads its cluster registration token from (kept off the
/// command line, where `ps` would show it).
pub const ENV_WORKER_TOKEN: &str = "FERROSTACK_TOKEN";

/// A stored resource: metadata plus the resource's own fields. Its OpenAPI schema is named after the
/// resource (`schema.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record<T> {
    pub id: i64,
    /// Optimistic-concurrency version; send it back on update to get 409 instead of a lost update.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(flatten)]
    pub spec: T,
}

/// Pagination block of a list response (GPUStack's names, camelCase on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Pagination {
    pub page: i64,
    #[serde(rename = "perPage")]
    pub per_page: i64,
    pub total: i64,
    #[serde(rename = "totalPage")]
    pub total_page: i64,
}

/// The list envelope every collection answers with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ListResponse<T> {
    pub items: Vec<T>,
    pub pagination: Pagination,
}

/// The management API's error envelope. `code` is the HTTP status; `reason` a stable identifier
/// from the server's error-code table; `field` names the offending input where there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub code: u16,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// What happened to a resource, as carried by a watch stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    Created,
    Updated,
    Deleted,
    /// The client's resume point is no longer retained: drop local state; a full replay follows.
    Reset,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "CREATED",
            EventType::Updated => "UPDATED",
            EventType::Deleted => "DELETED",
            EventType::Reset => "RESET",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "CREATED" => EventType::Created,
            "UPDATED" => EventType::Updated,
            "DELETED" => EventType::Deleted,
            "RESET" => EventType::Reset,
            _ => return None,
        })
    }
}

/// One event of a `?watch=true` stream. The SSE `id:` line carries `id` as well, so a client that
/// reconnects with `Last-Event-ID` receives exactly the changes it missed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WatchEvent<T> {
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub id: i64,
    pub data: Option<T>,
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VersionInfo {
    pub version: String,
    pub git_commit: String,
}
