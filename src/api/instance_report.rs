//! What a worker reports about its own instance: one transition of the instance's state, each
//! carrying exactly the fields that transition sets (`PUT /v2/model-instances/{id}/status`).
//!
//! On the wire the transition is tagged by the state it moves to, so a report reads as before:
//! `{"state": "running", "ports": [8080], "pid": 42, …, "version": 7}`. A field a transition does
//! not carry is never touched by it: the server keeps what it has. A field it carries replaces the
//! stored value, `null` included (a container has no `pid`, a process no `container_id`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::worker::InstanceState;

/// One step of an instance's lifecycle as its worker saw it happen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum InstanceTransition {
    /// The model's files are being downloaded from a hub for run `restart_count`.
    Downloading {
        /// Fraction done, 0 to 1.
        progress: f64,
        /// Bytes of the model's files on the worker so far.
        bytes: u64,
        restart_count: u32,
    },
    /// Run `restart_count` begins: the model is there, the workload is being prepared. A new run
    /// clears the last one's ports and due restart, and (distributed) resets every part.
    Initializing {
        restart_count: u32,
        /// When this run restarts the instance after a failure (absent on a first start): becomes
        /// `last_restart_time`.
        #[serde(default)]
        restarted_at: Option<DateTime<Utc>>,
        /// 1 for a model downloaded from a hub; absent for a local path.
        #[serde(default)]
        download_progress: Option<f64>,
    },
    /// The workload was launched and listens on `ports` (HTTP first, then a distributed
    /// instance's rendezvous port).
    Starting {
        ports: Vec<u16>,
        #[serde(default)]
        pid: Option<u32>,
        #[serde(default)]
        container_id: Option<String>,
        /// The launch command as run (program and arguments, the engine key masked).
        command: Vec<String>,
        /// Where the worker found or downloaded the model.
        resolved_path: String,
    },
    /// The workload answers its health check. Says again where it listens and what runs, so a
    /// lost `starting` report (or a workload taken back after a worker restart) leaves nothing unknown.
    Running {
        ports: Vec<u16>,
        #[serde(default)]
        pid: Option<u32>,
        #[serde(default)]
        container_id: Option<String>,
        command: Vec<String>,
    },
    /// Run `restart_count` failed; its workload is gone. Ends a drain early.
    Error {
        message: String,
        restart_count: u32,
        /// When the restart is due; absent when the instance does not restart on error.
        #[serde(default)]
        next_restart_time: Option<DateTime<Utc>>,
        /// Failures in a row the restart backoff counts.
        backoff_failures: u32,
    },
    /// Stopped with its worker (a clean stop, not a crash): back to `scheduled`, no restart
    /// counted; the worker's next start launches it at once.
    Scheduled { message: String },
}

impl InstanceTransition {
    /// The state the instance moves to.
    pub fn state(&self) -> InstanceState {
        match self {
            InstanceTransition::Downloading { .. } => InstanceState::Downloading,
            InstanceTransition::Initializing { .. } => InstanceState::Initializing,
            InstanceTransition::Starting { .. } => InstanceState::Starting,
            InstanceTransition::Running { .. } => InstanceState::Running,
            InstanceTransition::Error { .. } => InstanceState::Error,
            InstanceTransition::Scheduled { .. } => InstanceState::Scheduled,
        }
    }
}

/// `PUT /v2/model-instances/{id}/status`: a transition of the worker's own instance, guarded by
/// the instance version the worker last saw (a stale report is refused with 409).
///
/// The server also reads the body of earlier workers (every field optional, `state` and
/// `restart_count` always there) as the transition its state names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceStatusReport {
    /// The instance version the worker last saw.
    pub version: i64,
    #[serde(flatten)]
    pub transition: InstanceTransition,
}
