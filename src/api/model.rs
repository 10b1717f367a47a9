//! Wire types for model deployments (`/v2/models`), with GPUStack's field names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Record;
use super::worker::RunSpec;

/// Where a model's files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    Huggingface,
    ModelScope,
    LocalPath,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlacementStrategy {
    #[default]
    Spread,
    Binpack,
}

/// Manual GPU selection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuSelector {
    /// `<worker_name>:<type>:<index>` of each GPU the replicas may use.
    #[serde(default)]
    pub gpu_ids: Vec<String>,
    /// GPUs per replica; absent = the largest power of two that fits the selection.
    #[serde(default)]
    pub gpus_per_replica: Option<u32>,
}

/// Extended KV cache in host memory (LMCache for vLLM, HiCache for SGLang).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendedKvCache {
    #[serde(default)]
    pub enabled: bool,
    /// RAM as a multiple of the VRAM claim.
    #[serde(default)]
    pub ram_ratio: Option<f64>,
    /// RAM in GiB (wins over the ratio).
    #[serde(default)]
    pub ram_size: Option<f64>,
    /// Tokens per chunk.
    #[serde(default)]
    pub chunk_size: Option<u32>,
}

/// How a deployment claims GPU memory (`gpu_memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GpuMemoryPolicy {
    /// GPUStack's rule: an engine that pre-allocates (vLLM, SGLang, MindIE) claims its memory
    /// fraction of every GPU it uses (vLLM 0.9 × the card), whatever the model needs.
    #[default]
    Reserve,
    /// Claim what the model needs (weights, KV cache for the served context × `fit_concurrency`,
    /// activations, the engine's fixed overhead, headroom) and tell the engine that budget, so
    /// small models share a GPU.
    Fit,
}

impl GpuMemoryPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            GpuMemoryPolicy::Reserve => "reserve",
            GpuMemoryPolicy::Fit => "fit",
        }
    }
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

/// A model deployment: what to serve, with which backend, how many replicas, where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Unique; also the name clients send as `model`.
    pub name: String,
    pub source: ModelSource,
    #[serde(default)]
    pub huggingface_repo_id: Option<String>,
    #[serde(default)]
    pub huggingface_filename: Option<String>,
    #[serde(default)]
    pub model_scope_model_id: Option<String>,
    #[serde(default)]
    pub model_scope_file_path: Option<String>,
    /// A directory or a GGUF file on the workers.
    #[serde(default)]
    pub local_path: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub cluster_id: Option<i64>,
    /// Backend name; chosen from the model's type when absent.
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub backend_version: Option<String>,
    #[serde(default = "one")]
    pub replicas: u32,
    /// Running replicas (maintained by the server; ignored on input).
    #[serde(default)]
    pub ready_replicas: u32,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub placement_strategy: PlacementStrategy,
    #[serde(default)]
    pub worker_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub gpu_selector: Option<GpuSelector>,
    #[serde(default)]
    pub backend_parameters: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cpu_offloading: bool,
    #[serde(default)]
    pub distributed_inference_across_workers: bool,
    #[serde(default = "yes")]
    pub restart_on_error: bool,
    #[serde(default)]
    pub extended_kv_cache: Option<ExtendedKvCache>,
    /// `reserve` (GPUStack's rule) or `fit` (claim the estimate and tell the engine so); absent:
    /// the cluster's `gpu_memory` (whose default is `reserve`).
    #[serde(default)]
    pub gpu_memory: Option<GpuMemoryPolicy>,
    /// Under `fit`: how many full contexts the KV cache holds at once (default 1, at most 1024).
    #[serde(default)]
    pub fit_concurrency: Option<u32>,
    /// Image for the "Custom" flexible backend.
    #[serde(default)]
    pub image_name: Option<String>,
    /// Command for the "Custom" flexible backend (or to override a backend's).
    #[serde(default)]
    pub run_command: Option<String>,
    /// Free-form metadata (GPUStack's field), kept as given.
    #[serde(default)]
    pub meta: Option<serde_json::Value>,
    /// What the server read about the model, once per source (maintained by the server; ignored
    /// on input). Absent while it is being read: the replicas are `analyzing` meanwhile.
    #[serde(default)]
    pub analysis: Option<ModelAnalysis>,
    /// Whether a model route named after the deployment is created with it.
    #[serde(default = "yes")]
    pub enable_model_route: bool,
    /// Who may call the model route created with the deployment (kept in step with it).
    #[serde(default)]
    pub access_policy: super::AccessPolicy,
    /// Whether that route also serves the generic proxy (`/model/proxy/…`).
    #[serde(default = "yes")]
    pub generic_proxy: bool,
    /// `pending`, `partial`, `running` or `error`; null while no replica is wanted (maintained by the server).
    #[serde(default)]
    pub state: Option<ModelState>,
    #[serde(default)]
    pub state_message: Option<String>,
    /// Fingerprint of the run-affecting fields (maintained by the server; instances carry the one
    /// they were made from).
    #[serde(default)]
    pub spec_digest: Option<String>,
    /// Set by an edit with `?rolling=true`: instances with an older fingerprint are replaced one at
    /// a time until all run this one. Without it an edit leaves running instances on their spec, as
    /// in GPUStack (maintained by the server).
    #[serde(default)]
    pub rollout_digest: Option<String>,
    /// Seconds an instance this deployment stops (scale-down, rolling replace, delete, restart)
    /// may drain: it gets no new requests and stops once those in flight finished, or when this
    /// time has passed. 0: stopped at once, requests in flight cut (docs/draining.md).
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: u32,
    /// Scale `replicas` with demand, down to zero if `min_replicas` is 0 (docs/autoscaling.md).
    /// Absent: off. While on, `replicas` is the scaler's, and a user's `replicas` is clamped into
    /// the bounds.
    #[serde(default)]
    pub autoscaling: Option<super::autoscale::Autoscaling>,
    /// GPUStack's cron windows of replicas.
    #[serde(default)]
    pub scaling_schedule: Option<super::autoscale::ScalingSchedule>,
    /// Why the autoscaler or the schedule last set `replicas` (maintained by the server).
    #[serde(default)]
    pub scaling_message: Option<String>,
    /// Requests held for it in the wake queues of every server until a replica is ready, when
    /// autoscaling is on (computed when answered; ignored on input, never stored, watch events do
    /// not carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
}

/// What the server read about a deployment's model (`control::analysis`): the scheduler places
/// its replicas from this without reading the model again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelAnalysis {
    /// Fingerprint of the source fields it was read from; when they change, the model is read again.
    pub source_digest: String,
    pub analyzed_at: chrono::DateTime<chrono::Utc>,
    /// The model's metadata: architecture, category, context length, attention shape, weight bytes.
    #[schema(value_type = Object)]
    pub model: serde_json::Value,
    /// What could not be read. The replicas are placed on estimates meanwhile, and the model is
    /// read again after a while.
    #[serde(default)]
    pub problems: Vec<String>,
}

impl ModelSpec {
    /// What an instance of this deployment runs (the instance's [`RunSpec`]).
    pub fn run_spec(&self) -> RunSpec {
        RunSpec {
            source: Some(self.source),
            local_path: self.local_path.clone(),
            huggingface_repo_id: self.huggingface_repo_id.clone(),
            huggingface_filename: self.huggingface_filename.clone(),
            model_scope_model_id: self.model_scope_model_id.clone(),
            model_scope_file_path: self.model_scope_file_path.clone(),
            backend: self.backend.clone().unwrap_or_default(),
            backend_version: self.backend_version.clone(),
            backend_parameters: self.backend_parameters.clone(),
            env: self.env.clone(),
            run_command: self.run_command.clone(),
            image_name: self.image_name.clone(),
            restart_on_error: self.restart_on_error,
        }
    }
}

/// How long a stopping instance may drain unless its deployment says otherwise: long enough for
/// long streamed answers.
pub const DEFAULT_DRAIN_TIMEOUT: u32 = 600;

fn default_drain_timeout() -> u32 {
    DEFAULT_DRAIN_TIMEOUT
}

/// GPUStack's deployment states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    Pending,
    Partial,
    Running,
    Error,
}

pub type Model = Record<ModelSpec>;

/// `POST /v2/model-evaluations`: would these deployments fit, where, and why not.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationRequest {
    /// Evaluate against this cluster's workers (GPUStack's field); a spec that names no cluster
    /// is evaluated for this one. Absent: each spec's cluster, else the default one.
    #[serde(default)]
    pub cluster_id: Option<i64>,
    pub model_specs: Vec<ModelSpec>,
}

/// The answer for one spec: GPUStack's `ModelEvaluationResult` fields plus what we compute.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvaluationResult {
    /// The spec's own name.
    pub name: String,
    pub compatible: bool,
    /// Everything said about the spec: what could not be read, where it goes or why not.
    pub compatibility_messages: Vec<String>,
    /// Where one replica would go, or per worker and GPU why it fits nowhere.
    pub scheduling_messages: Vec<String>,
    /// The spec as it would be stored (backend, categories and cluster filled in).
    pub default_spec: Option<ModelSpec>,
    /// Bytes one replica would claim where it fits: what the scheduler reserves (a fraction
    /// claim is that fraction of the GPUs chosen, as GPUStack's: 72 GiB for a small vLLM model on
    /// an 80 GiB GPU); where nothing fits, the estimate. GPUStack's shape.
    pub resource_claim: Option<EvaluationClaim>,
    /// True when the spec itself was refused (then `error_message` says why).
    pub error: Option<bool>,
    pub error_message: Option<String>,
    pub backend: Option<String>,
    pub categories: Vec<String>,
    /// Our estimate of what one replica uses (weights + KV cache + overhead), in bytes: what
    /// `resource_claim` is where the claim is the estimate.
    pub vram: Option<u64>,
    pub ram: Option<u64>,
    pub meta: Option<serde_json::Value>,
    /// The parameters the server would inject for the placement found.
    pub injected_parameters: Vec<String>,
    /// The tensor-parallel size the engine would run with (None on CPU or when nothing fits).
    pub tensor_parallel_size: Option<u32>,
}

/// GPUStack's `ResourceClaim` of an evaluation: bytes of RAM and VRAM per replica.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct EvaluationClaim {
    pub ram: u64,
    pub vram: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvaluationResponse {
    pub results: Vec<EvaluationResult>,
}
