// Wire types of the /v2 management API (src/api/*.rs), as the UI uses them.

export interface Meta {
  id: number;
  version: number;
  created_at: string;
  updated_at: string;
}

export interface ListResponse<T> {
  items: T[];
  pagination: { page: number; perPage: number; total: number; totalPage: number };
}

export interface User extends Meta {
  username: string;
  full_name: string | null;
  is_admin: boolean;
  is_active: boolean;
  require_password_change: boolean;
}

export type Scope = "*" | "management" | "inference";

export interface ApiKey extends Meta {
  name: string;
  description: string | null;
  user_id: number;
  access_key: string;
  masked_value: string;
  scope: Scope[];
  allowed_model_names: string[] | null;
  expires_at: string | null;
}

export interface Cluster extends Meta {
  name: string;
  description: string | null;
  is_default: boolean;
  token_hint: string;
}

export interface GpuDevice {
  index: number;
  name: string;
  vendor: string;
  type: string;
  uuid?: string;
  memory_total: number;
  memory_used: number;
  memory_utilization_rate: number;
  core_utilization_rate?: number;
  temperature?: number;
  simulated: boolean;
  /** Bytes used by processes the worker did not start (never booked by the scheduler). */
  memory_external?: number;
}

export interface GpuDeviceView extends GpuDevice {
  id: string;
  worker_id: number;
  worker_name: string;
}

export type WorkerState = "not_ready" | "ready" | "unreachable" | "maintenance";

export interface Worker extends Meta {
  name: string;
  cluster_id: number;
  labels: Record<string, string>;
  maintenance: { enabled: boolean; message: string | null };
  hostname: string;
  ip: string;
  /** The network interface that has `ip` (empty when unknown). */
  ifname?: string;
  port: number;
  runtime: "process" | "container";
  state: WorkerState;
  state_message: string | null;
  heartbeat_time: string | null;
  status: {
    cpu: { total: number; utilization_rate: number };
    memory: { total: number; used: number; utilization_rate: number };
    gpu_devices: GpuDevice[];
  };
  worker_version: string;
}

export type ModelSource = "huggingface" | "model_scope" | "local_path";
export type PlacementStrategy = "spread" | "binpack";

export interface ModelSpec {
  name: string;
  source: ModelSource;
  huggingface_repo_id?: string | null;
  huggingface_filename?: string | null;
  model_scope_model_id?: string | null;
  model_scope_file_path?: string | null;
  local_path?: string | null;
  description?: string | null;
  backend?: string | null;
  backend_version?: string | null;
  replicas: number;
  categories?: string[];
  placement_strategy?: PlacementStrategy;
  worker_selector?: Record<string, string>;
  gpu_selector?: { gpu_ids: string[]; gpus_per_replica?: number | null } | null;
  backend_parameters?: string[];
  env?: Record<string, string>;
  cpu_offloading?: boolean;
  distributed_inference_across_workers?: boolean;
  restart_on_error?: boolean;
  extended_kv_cache?: { enabled: boolean } | null;
  image_name?: string | null;
  run_command?: string | null;
  access_policy?: "public" | "authed" | "allowed_principals";
  generic_proxy?: boolean;
  /** `reserve` (an engine's share of each GPU) or `fit` (what a replica needs); null: the cluster's. */
  gpu_memory?: "reserve" | "fit" | null;
  /** Under `fit`: full contexts the KV cache holds at once (default 1). */
  fit_concurrency?: number | null;
  /** Scale replicas with demand, down to zero with min_replicas 0 (docs/autoscaling.md); null: off. */
  autoscaling?: Autoscaling | null;
  /** GPUStack 2.3's cron windows of replicas (the form carries it through an edit unchanged). */
  scaling_schedule?: ScalingSchedule | null;
}

export interface Autoscaling {
  min_replicas: number;
  max_replicas: number;
  target_requests: number;
  scale_down_delay_seconds: number;
  /** With min_replicas 0: the last replica is parked this long before it stops; a request wakes it in place. */
  park_seconds?: number | null;
}

export interface ScalingSchedule {
  enabled: boolean;
  paused?: boolean;
  baseline_replicas?: number | null;
  rules: { name?: string | null; start_cron: string; duration_seconds?: number | null; replicas: number }[];
}

export interface Model extends Meta, ModelSpec {
  ready_replicas: number;
  /** GPUStack's deployment state, maintained by the server. */
  state?: "pending" | "partial" | "running" | "error" | null;
  state_message?: string | null;
  /** Fingerprint of the run-affecting fields; an instance with another `spec_hash` runs an older spec. */
  spec_digest?: string | null;
  /** Why the autoscaler or the schedule last set `replicas`. */
  scaling_message?: string | null;
  /** Requests held until a replica is ready, on every server (autoscaled deployments; GET answers, not watch events). */
  queued?: number | null;
}

export type InstanceState =
  | "pending"
  | "analyzing"
  | "scheduled"
  | "initializing"
  | "downloading"
  | "starting"
  | "running"
  | "error"
  | "unreachable"
  /** Gets no new requests; stops once those in flight finished (docs/draining.md). */
  | "draining"
  /** Kept on the way to zero replicas, withdrawn; a request wakes it in place (docs/autoscaling.md). */
  | "parked";

export interface ModelInstance extends Meta {
  name: string;
  /** The fingerprint of the deployment spec it was made from (see `Model.spec_digest`). */
  spec_hash?: string | null;
  model_id: number | null;
  model_name: string;
  backend: string;
  backend_version: string | null;
  worker_id: number | null;
  worker_name: string | null;
  worker_ip: string | null;
  gpu_indexes: number[];
  /** What the scheduler booked: bytes per GPU index, and RAM. */
  computed_resource_claim?: { vram: Record<string, number>; ram: number } | null;
  port: number | null;
  injected_backend_parameters: string[];
  /** The launch command as run (program and arguments). */
  command?: string[];
  /** 0..1 while the worker downloads the model files. */
  download_progress: number | null;
  state: InstanceState;
  state_message: string | null;
  restart_count: number;
  /** When it began draining (state `draining`). */
  drain_started_at?: string | null;
  /** Requests in flight on it across every server's gateway (running or draining; never stored). */
  in_flight?: number | null;
  /** While parked: since when its engine sleeps (vLLM's sleep mode); absent while parked awake. */
  asleep_since?: string | null;
  /** The other workers of an instance spread across workers. */
  distributed_servers?: { subordinate_workers: SubordinateWorker[] } | null;
}

/** One subordinate worker's part of a distributed instance. */
export interface SubordinateWorker {
  worker_id: number;
  worker_name: string | null;
  gpu_indexes: number[];
  computed_resource_claim?: { vram: Record<string, number>; ram: number } | null;
  state: InstanceState;
  state_message: string | null;
}

export interface EvaluationResult {
  name: string;
  compatible: boolean;
  compatibility_messages: string[];
  backend: string | null;
  vram: number | null;
  ram: number | null;
  injected_parameters: string[];
}

export type BackendSource = "built_in" | "community" | "custom";

export interface VersionConfig {
  image_name?: string;
  run_command?: string;
  entrypoint?: string;
  custom_framework?: string;
  built_in_frameworks?: string[];
  env?: Record<string, string>;
}

export interface InferenceBackend extends Meta {
  backend_name: string;
  description?: string;
  health_check_path: string | null;
  default_version?: string;
  default_backend_param?: string[];
  default_run_command?: string;
  default_entrypoint?: string;
  default_env?: Record<string, string>;
  parameter_format?: "space" | "equal";
  common_parameters?: string[];
  enabled: boolean;
  backend_source: BackendSource;
  is_built_in: boolean;
  icon?: string;
  version_configs: Record<string, VersionConfig>;
}

/** What creating or updating a backend answers: the backend and what its operator should know. */
export interface InferenceBackendSaved extends InferenceBackend {
  warnings?: string[];
}

export interface BackendListItem {
  backend_name: string;
  enabled: boolean;
  default_version: string | null;
  default_backend_param: string[];
  common_parameters: string[];
  versions: { version: string; frameworks: string[] }[];
}

/** How a route spreads requests over its instances (docs/routing.md). */
export type LoadBalancing = "prefix_aware" | "least_outstanding" | "round_robin";

/** A model route (`/v2/model-routes`): the public model name clients call, and its targets. */
export interface ModelRoute extends Meta {
  name: string;
  description: string | null;
  categories: string[];
  meta: unknown;
  generic_proxy: boolean | null;
  /** The deployment the route was created with (it goes when the deployment goes). */
  created_model_id: number | null;
  /** Targets, and those with running instances (kept by the server). */
  targets: number;
  ready_targets: number;
  access_policy: "public" | "authed" | "allowed_principals";
  /** Seconds to wait for the upstream's response headers; null: no limit. */
  timeout: number | null;
  load_balancing: LoadBalancing;
}

/** A `?watch=true` event; `id` is the change sequence, the resource id is `data.id`. */
export interface WatchEvent<T> {
  type: "CREATED" | "UPDATED" | "DELETED" | "RESET";
  id: number;
  data: T | null;
}
