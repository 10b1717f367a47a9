//! Wire types for workers and model instances (GPUStack's field names).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Record;
use super::gpu::GpuDevice;

/// Worker states, as GPUStack names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    #[default]
    NotReady,
    Ready,
    Unreachable,
    Maintenance,
}

/// How a worker runs instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// The rendered command runs on the host.
    #[default]
    Process,
    /// A container through the Docker Engine API (Docker or Podman).
    Container,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CpuStatus {
    pub total: u32,
    pub utilization_rate: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MemoryStatus {
    pub total: u64,
    pub used: u64,
    pub utilization_rate: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FilesystemStatus {
    pub mount_point: String,
    pub total: u64,
    pub used: u64,
    pub available: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OsStatus {
    pub name: String,
    pub version: String,
    pub kernel: String,
    pub arch: String,
}

/// What a worker reports about its machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerStatus {
    pub cpu: CpuStatus,
    pub memory: MemoryStatus,
    #[serde(default)]
    pub filesystem: Vec<FilesystemStatus>,
    pub os: OsStatus,
    #[serde(default)]
    pub gpu_devices: Vec<GpuDevice>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Maintenance {
    pub enabled: bool,
    #[serde(default)]
    pub message: Option<String>,
    /// With `enabled`: move the worker's instances away first (Ferrostack's, additive). Each is
    /// replaced on another worker, and drains once its replacement runs (docs/draining.md).
    #[serde(default)]
    pub drain: bool,
    /// Set by the worker's own clean shutdown (Ferrostack's, additive): its instances move away and
    /// drain before it stops; the worker ends this maintenance when it starts again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub until_restart: bool,
}

/// A worker as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerSpec {
    pub name: String,
    pub cluster_id: i64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub maintenance: Maintenance,
    pub hostname: String,
    /// The address the worker advertises (`--advertise-address`, else its `--ifname`'s, else its
    /// default route's): the gateway reaches its engines there.
    pub ip: String,
    /// The network interface that has `ip` (GPUStack's `ifname`; empty when unknown).
    #[serde(default)]
    pub ifname: String,
    /// The worker's own API port (logs), 0 when it serves none.
    pub port: u16,
    pub runtime: RuntimeKind,
    pub state: WorkerState,
    #[serde(default)]
    pub state_message: Option<String>,
    #[serde(default)]
    pub heartbeat_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub status: WorkerStatus,
    pub worker_version: String,
}

pub type Worker = Record<WorkerSpec>;

/// `POST /v2/workers`: a worker joins with its cluster's registration token (as Bearer).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerRegister {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub hostname: String,
    pub ip: String,
    #[serde(default)]
    pub ifname: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub runtime: RuntimeKind,
    #[serde(default)]
    pub status: WorkerStatus,
    pub worker_version: String,
}

/// The answer to registering: the worker's own credential, shown once, and the token the server
/// presents when it calls the worker.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerRegistered {
    #[serde(flatten)]
    pub worker: Worker,
    pub credential: String,
    pub server_token: String,
}

/// `PUT /v2/workers/{id}` by an administrator.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerUpdate {
    /// Workers cannot be renamed; accepted when it is the worker's own name (a GET sent back).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub maintenance: Option<Maintenance>,
    #[serde(default)]
    pub version: Option<i64>,
}

/// `PUT /v2/workers/{id}/shutdown` by the worker itself: `stopping` when its clean shutdown begins,
/// not `stopping` when it starts again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerShutdown {
    pub stopping: bool,
}

/// `PUT /v2/workers/{id}/status` by the worker itself.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerStatusReport {
    pub status: WorkerStatus,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub ifname: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
}

impl WorkerStatus {
    /// The status without its fast-moving figures (utilisation, memory and disk in use,
    /// temperature): what must be stored when it changes. Those figures live in the server's memory.
    pub fn steady(&self) -> WorkerStatus {
        let mut s = self.clone();
        s.cpu.utilization_rate = 0.0;
        s.memory.used = 0;
        s.memory.utilization_rate = 0.0;
        for f in &mut s.filesystem {
            f.used = 0;
            f.available = 0;
        }
        for g in &mut s.gpu_devices {
            g.memory_used = 0;
            g.memory_utilization_rate = 0.0;
            g.core_utilization_rate = None;
            g.temperature = None;
        }
        s
    }
}

/// `POST /v2/workers/labels`: labels to add or overwrite on every listed worker (others kept).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerLabelsUpdate {
    pub worker_ids: Vec<i64>,
    pub labels: BTreeMap<String, String>,
}

/// A GPU as `/v2/gpu-devices` lists it: GPUStack's `GPUDevicePublic` fields, plus the device as
/// the worker reports it (flat `memory_total`, …) and `simulated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GpuDeviceView {
    /// `<worker_name>:<type>:<index>`
    pub id: String,
    pub worker_id: i64,
    pub worker_name: String,
    pub worker_ip: String,
    pub worker_ifname: String,
    pub cluster_id: i64,
    /// The index among the worker's devices of this type (GPUStack's name for `index`).
    pub device_index: u32,
    pub device_chip_index: u32,
    pub memory: GpuMemory,
    /// Compute utilization, where the vendor tool reports it.
    #[serde(default)]
    pub core: Option<GpuCore>,
    #[serde(flatten)]
    pub device: GpuDevice,
}

/// A GPU's memory in GPUStack's shape, with what the scheduler has claimed on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GpuMemory {
    /// Bytes.
    pub total: u64,
    /// Bytes in use, as the worker last reported.
    pub used: u64,
    /// Bytes the instances placed on this GPU claim (from their scheduling claims).
    pub allocated: u64,
    /// `used / total` in percent.
    pub utilization_rate: f64,
    pub is_unified_memory: bool,
}

/// A GPU's compute utilization in GPUStack's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GpuCore {
    /// Percent (0–100).
    pub utilization_rate: f64,
}

/// Model instance states, as GPUStack names them, plus `draining` (Ferrostack's, additive): the
/// instance gets no new requests and is stopped once the requests in flight on it have finished
/// (or its deployment's `drain_timeout` passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    #[default]
    Pending,
    Analyzing,
    Scheduled,
    Initializing,
    Downloading,
    Starting,
    Running,
    Error,
    Unreachable,
    Draining,
    /// Kept on the way to zero replicas (`autoscaling.park_seconds`): withdrawn from routing like a
    /// draining instance, its engine kept (and, where it has one, in its sleep mode); a request
    /// wakes it in place.
    Parked,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Analyzing => "analyzing",
            InstanceState::Scheduled => "scheduled",
            InstanceState::Initializing => "initializing",
            InstanceState::Downloading => "downloading",
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Error => "error",
            InstanceState::Unreachable => "unreachable",
            InstanceState::Draining => "draining",
            InstanceState::Parked => "parked",
        }
    }
}

/// Memory the scheduler reserved for an instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceClaim {
    /// Bytes per GPU index (the index as a string: JSON object keys are strings).
    pub vram: BTreeMap<String, u64>,
    pub ram: u64,
}

/// A worker that runs part of a distributed instance (GPUStack's `subordinate_workers[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubordinateWorker {
    pub worker_id: i64,
    #[serde(default)]
    pub worker_name: Option<String>,
    #[serde(default)]
    pub worker_ip: Option<String>,
    #[serde(default)]
    pub gpu_indexes: Vec<u32>,
    /// What the scheduler reserved on this worker.
    #[serde(default)]
    pub computed_resource_claim: Option<ResourceClaim>,
    #[serde(default)]
    pub state: InstanceState,
    #[serde(default)]
    pub state_message: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub container_id: Option<String>,
    /// The follower command as run.
    #[serde(default)]
    pub command: Vec<String>,
}

/// A subordinate's state message while its part waits for the main worker's server.
pub const WAITING_FOR_MAIN: &str = "waiting for the main worker's server to start";

/// The other workers of an instance spread across workers. Subordinates start only once the main
/// worker's server is starting (it owns the rendezvous port), as GPUStack's `initialize_later`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DistributedServers {
    #[serde(default)]
    pub subordinate_workers: Vec<SubordinateWorker>,
}

/// A model instance: one running copy of a model on one worker. Three parts, flattened so the
/// wire is GPUStack's flat JSON: what runs ([`RunSpec`], copied from the deployment when the
/// instance is made), where it was placed ([`Binding`], written once by the scheduler) and how it
/// is doing ([`InstanceStatus`], reported by the worker and the controller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelInstanceSpec {
    pub name: String,
    #[serde(default)]
    pub model_id: Option<i64>,
    pub model_name: String,
    /// What to load: a local file or directory on the worker (for hub sources: the repository id;
    /// the worker downloads it and reports `resolved_path`).
    pub model_path: String,
    /// Fingerprint of the deployment fields that shape how the instance runs; a change rolls it.
    #[serde(default)]
    pub spec_hash: Option<String>,
    #[serde(flatten)]
    pub run: RunSpec,
    #[serde(flatten)]
    pub binding: Binding,
    #[serde(flatten)]
    pub status: InstanceStatus,
}

/// What an instance runs: its deployment's run-affecting fields as the instance was made from
/// them (`ModelSpec::run_spec`), or what an administrator gave when placing it by hand.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunSpec {
    #[serde(default)]
    pub source: Option<super::model::ModelSource>,
    /// The model's file or directory on the worker, for `local_path` deployments (GPUStack's field).
    #[serde(default)]
    pub local_path: Option<String>,
    #[serde(default)]
    pub huggingface_repo_id: Option<String>,
    #[serde(default)]
    pub huggingface_filename: Option<String>,
    #[serde(default)]
    pub model_scope_model_id: Option<String>,
    #[serde(default)]
    pub model_scope_file_path: Option<String>,
    pub backend: String,
    #[serde(default)]
    pub backend_version: Option<String>,
    #[serde(default)]
    pub backend_parameters: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Overrides the backend's run command (the "Custom" backend).
    #[serde(default)]
    pub run_command: Option<String>,
    #[serde(default)]
    pub image_name: Option<String>,
    #[serde(default)]
    pub restart_on_error: bool,
}

/// Where an instance was placed and what it was bound to: written by the scheduler in the
/// binding transaction (or by an administrator placing it by hand), not changed after.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Binding {
    #[serde(default)]
    pub worker_id: Option<i64>,
    #[serde(default)]
    pub worker_name: Option<String>,
    #[serde(default)]
    pub worker_ip: Option<String>,
    #[serde(default)]
    pub gpu_indexes: Vec<u32>,
    /// Set when the instance spans several workers.
    #[serde(default)]
    pub distributed_servers: Option<DistributedServers>,
    /// What the scheduler reserved for this instance.
    #[serde(default)]
    pub computed_resource_claim: Option<ResourceClaim>,
    /// For backends configured by a file (MindIE): the file's sections, from the backend
    /// parameters; the worker adds the run-time fields and hands the file to the server.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub backend_config: Option<serde_json::Value>,
    /// The parameters the server added to the backend's command (shown in the UI).
    #[serde(default)]
    pub injected_backend_parameters: Vec<String>,
    /// The backend as the instance was bound to it: its definition with only the version it runs,
    /// frozen when it was scheduled (`backends::render::frozen`). The worker renders the command
    /// from this, so editing the backend changes what instances scheduled afterwards run, never
    /// one already bound (roll the deployment to apply an edit). Absent on instances bound by
    /// older servers: the worker then looks the backend up by name.
    #[serde(default)]
    pub resolved_backend: Option<super::backend::InferenceBackendSpec>,
}

/// How an instance is doing: what its worker reports (`InstanceTransition`) and what the
/// controller marks (draining, parking, restart backoff).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceStatus {
    pub state: InstanceState,
    #[serde(default)]
    pub state_message: Option<String>,
    /// Where the worker found or downloaded the model.
    #[serde(default)]
    pub resolved_path: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// `ports[0]` is the HTTP port; a distributed instance adds its rendezvous port.
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub container_id: Option<String>,
    /// The launch command as run (program and arguments), for the UI.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub download_progress: Option<f64>,
    /// Bytes of the model's files on the worker so far, while downloading.
    #[serde(default)]
    pub downloaded_bytes: Option<u64>,
    #[serde(default)]
    pub restart_count: u32,
    #[serde(default)]
    pub last_restart_time: Option<DateTime<Utc>>,
    /// When the next restart after an error is due (kept here so a worker restart honours it).
    #[serde(default)]
    pub next_restart_time: Option<DateTime<Utc>>,
    /// Failures in a row that the restart backoff counts; back to 0 once a run stays healthy for
    /// the worker's `--backoff-reset` (10 minutes by default, as kubelet does).
    #[serde(default)]
    pub backoff_failures: u32,
    /// When it started draining (state `draining`): it is stopped once no request is in flight on
    /// it, or when its deployment's `drain_timeout` has passed since then.
    #[serde(default)]
    pub drain_started_at: Option<DateTime<Utc>>,
    /// Its deployment's `drain_timeout` when it began draining: what bounds the drain once the
    /// deployment itself is deleted (while the deployment exists, its current value does).
    #[serde(default)]
    pub drain_timeout: Option<u32>,
    /// While parked: since when its engine sleeps (vLLM's sleep mode, level 1: weights in CPU
    /// memory, KV cache freed). Absent while parked awake (the engine has no sleep mode).
    #[serde(default)]
    pub asleep_since: Option<DateTime<Utc>>,
    /// Requests in flight on it, counted by the gateways of every server (answers only; never
    /// stored). Absent when no gateway routes to it.
    #[serde(default)]
    pub in_flight: Option<u64>,
}

pub type ModelInstance = Record<ModelInstanceSpec>;

impl ModelInstanceSpec {
    /// This worker's part if it is a subordinate of the instance.
    pub fn subordinate(&self, worker_id: i64) -> Option<&SubordinateWorker> {
        self.binding.distributed_servers.as_ref()?.subordinate_workers.iter().find(|s| s.worker_id == worker_id)
    }

    /// Whether the worker runs the instance or a part of it.
    pub fn involves(&self, worker_id: i64) -> bool {
        self.binding.worker_id == Some(worker_id) || self.subordinate(worker_id).is_some()
    }

    /// Every worker taking part: the main worker first.
    pub fn subordinate_workers(&self) -> &[SubordinateWorker] {
        self.binding.distributed_servers.as_ref().map(|d| d.subordinate_workers.as_slice()).unwrap_or_default()
    }
}

/// `POST /v2/model-instances`: place an instance by hand on a worker.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelInstanceCreate {
    pub name: String,
    pub model_name: String,
    pub model_path: String,
    pub backend: String,
    #[serde(default)]
    pub backend_version: Option<String>,
    #[serde(default)]
    pub backend_parameters: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub run_command: Option<String>,
    #[serde(default)]
    pub image_name: Option<String>,
    #[serde(default)]
    pub restart_on_error: bool,
    pub worker_id: i64,
    #[serde(default)]
    pub gpu_indexes: Vec<u32>,
}

/// `PUT /v2/model-instances/{id}/subordinate-status`: a subordinate worker's report on its part.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubordinateStatusReport {
    /// The run of the instance this is about (its `restart_count`): a report about an earlier run
    /// is refused with 409.
    pub restart_count: u32,
    pub state: InstanceState,
    #[serde(default)]
    pub state_message: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub container_id: Option<String>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
}
