//! A worker's report on its own instance, applied: the body read (the transition, or an earlier
//! worker's all-optional body read as one), then one pure `apply` that says, per transition, which
//! fields of the stored instance change. The route checks who may report and the version.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

use crate::api::{InstanceState, InstanceStatusReport, InstanceTransition, ModelInstanceSpec, WAITING_FOR_MAIN};

/// Applies a transition to the stored instance. A draining instance stays draining (its worker
/// may still say it runs): only its failure ends the drain early; the other fields a transition
/// carries are taken either way.
pub fn apply(t: &InstanceTransition, i: &mut ModelInstanceSpec) {
    let (state, message) = match t {
        InstanceTransition::Downloading { progress, bytes, restart_count } => {
            i.status.download_progress = Some(*progress);
            i.status.downloaded_bytes = Some(*bytes);
            i.status.restart_count = *restart_count;
            (InstanceState::Downloading, None)
        }
        InstanceTransition::Initializing { restart_count, restarted_at, download_progress } => {
            i.status.restart_count = *restart_count;
            if let Some(at) = restarted_at {
                i.status.last_restart_time = Some(*at);
            }
            i.status.next_restart_time = None;
            i.status.download_progress = *download_progress;
            // A new run: the last run's rendezvous port is no longer where anyone meets, and
            // every part of a distributed instance starts afresh.
            i.status.ports = Vec::new();
            for part in i.binding.distributed_servers.iter_mut().flat_map(|d| d.subordinate_workers.iter_mut()) {
                part.state = InstanceState::Scheduled;
                part.state_message = Some(WAITING_FOR_MAIN.into());
                part.pid = None;
                part.container_id = None;
            }
            (InstanceState::Initializing, None)
        }
        InstanceTransition::Starting { ports, pid, container_id, command, resolved_path } => {
            i.status.port = ports.first().copied();
            i.status.ports = ports.clone();
            i.status.pid = *pid;
            i.status.container_id = container_id.clone();
            i.status.command = command.clone();
            i.status.resolved_path = Some(resolved_path.clone());
            (InstanceState::Starting, None)
        }
        InstanceTransition::Running { ports, pid, container_id, command } => {
            i.status.port = ports.first().copied();
            i.status.ports = ports.clone();
            i.status.pid = *pid;
            i.status.container_id = container_id.clone();
            i.status.command = command.clone();
            (InstanceState::Running, None)
        }
        InstanceTransition::Error { message, restart_count, next_restart_time, backoff_failures } => {
            i.status.restart_count = *restart_count;
            i.status.next_restart_time = *next_restart_time;
            i.status.backoff_failures = *backoff_failures;
            i.status.pid = None;
            i.status.container_id = None;
            i.status.ports = Vec::new();
            (InstanceState::Error, Some(message.clone()))
        }
        InstanceTransition::Scheduled { message } => {
            i.status.pid = None;
            i.status.container_id = None;
            i.status.ports = Vec::new();
            (InstanceState::Scheduled, Some(message.clone()))
        }
    };
    // Draining and parked are the server's marks (a late report must not put either back in
    // routing); only the instance's failure ends them.
    if !matches!(i.status.state, InstanceState::Draining | InstanceState::Parked) || state == InstanceState::Error {
        i.status.state = state;
        i.status.state_message = message;
    }
}

/// The body of `PUT /v2/model-instances/{id}/status`: a transition, or what earlier workers send.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportBody {
    Transition(InstanceStatusReport),
    Legacy(LegacyStatusReport),
}

impl<'de> Deserialize<'de> for ReportBody {
    /// The transition first; an earlier worker's body otherwise (a body both read means the same
    /// to both: an earlier worker always sends every field, and one sent by hand that reads as a
    /// transition sets what that transition sets). A body neither reads is refused with the
    /// transition's error.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        match serde_json::from_value::<InstanceStatusReport>(value.clone()) {
            Ok(report) => Ok(ReportBody::Transition(report)),
            Err(e) => match serde_json::from_value::<LegacyStatusReport>(value) {
                Ok(legacy) => Ok(ReportBody::Legacy(legacy)),
                Err(_) => Err(serde::de::Error::custom(e)),
            },
        }
    }
}

impl ReportBody {
    /// The instance version the worker last saw.
    pub fn version(&self) -> i64 {
        match self {
            ReportBody::Transition(r) => r.version,
            ReportBody::Legacy(l) => l.version,
        }
    }

    /// The transition the body says, given the stored instance (an earlier worker left out what it
    /// did not change).
    pub fn transition(&self, stored: &ModelInstanceSpec) -> Result<InstanceTransition, String> {
        match self {
            ReportBody::Transition(r) => Ok(r.transition.clone()),
            ReportBody::Legacy(l) => l.transition(stored),
        }
    }
}

/// What workers sent before transitions: the new state and every field optional. Fields they
/// echoed back from their copy of the instance (times, counts, the port) are not taken unless the
/// state's transition sets them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyStatusReport {
    pub state: InstanceState,
    #[serde(default)]
    pub state_message: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub ports: Option<Vec<u16>>,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub container_id: Option<String>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub download_progress: Option<f64>,
    #[serde(default)]
    pub downloaded_bytes: Option<u64>,
    #[serde(default)]
    pub resolved_path: Option<String>,
    pub restart_count: u32,
    #[serde(default)]
    pub last_restart_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub next_restart_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub backoff_failures: Option<u32>,
    pub version: i64,
}

impl LegacyStatusReport {
    /// The transition to the state the body names; a state no worker reports is refused.
    fn transition(&self, stored: &ModelInstanceSpec) -> Result<InstanceTransition, String> {
        let message = || self.state_message.clone().unwrap_or_default();
        let ports = || match (&self.ports, self.port) {
            (Some(ports), _) => ports.clone(),
            (None, Some(port)) if stored.status.ports.first() != Some(&port) => vec![port],
            (None, _) => stored.status.ports.clone(),
        };
        let command = || self.command.clone().unwrap_or_else(|| stored.status.command.clone());
        Ok(match self.state {
            InstanceState::Downloading => InstanceTransition::Downloading {
                progress: self.download_progress.unwrap_or_default(),
                bytes: self.downloaded_bytes.or(stored.status.downloaded_bytes).unwrap_or_default(),
                restart_count: self.restart_count,
            },
            InstanceState::Initializing => InstanceTransition::Initializing {
                restart_count: self.restart_count,
                restarted_at: self.last_restart_time,
                download_progress: self.download_progress,
            },
            InstanceState::Starting => InstanceTransition::Starting {
                ports: ports(),
                pid: self.pid,
                container_id: self.container_id.clone(),
                command: command(),
                resolved_path: self
                    .resolved_path
                    .clone()
                    .or_else(|| stored.status.resolved_path.clone())
                    .unwrap_or_default(),
            },
            InstanceState::Running => InstanceTransition::Running {
                ports: ports(),
                pid: self.pid,
                container_id: self.container_id.clone(),
                command: command(),
            },
            InstanceState::Error => InstanceTransition::Error {
                message: message(),
                restart_count: self.restart_count,
                next_restart_time: self.next_restart_time,
                backoff_failures: self.backoff_failures.unwrap_or(stored.status.backoff_failures),
            },
            InstanceState::Scheduled => InstanceTransition::Scheduled { message: message() },
            other => {
                return Err(format!(
                    "a worker reports downloading, initializing, starting, running, error or scheduled, not {}",
                    other.as_str()
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests;
