// The deploy form's state and its conversion to and from the wire ModelSpec.

import type {
  BackendListItem,
  Model,
  ModelSpec,
  ModelSource,
  PlacementStrategy,
  ScalingSchedule,
} from "../../api/types";
import { formatPairs, parsePairs } from "../../format";
import { paramItems, paramText, paramsProblem, runCommandProblem } from "./command";

/** GPUStack's virtual backend for a deployment's own image and run command ("flexible testing mode"). */
export const CUSTOM_BACKEND = "Custom";

export function isCustom(backend: string): boolean {
  return backend.trim().toLowerCase() === CUSTOM_BACKEND.toLowerCase();
}

export interface DeployState {
  source: ModelSource;
  local_path: string;
  huggingface_repo_id: string;
  huggingface_filename: string;
  model_scope_model_id: string;
  model_scope_file_path: string;
  name: string;
  description: string;
  backend: string;
  backend_version: string;
  replicas: number;
  placement_strategy: PlacementStrategy;
  worker_selector: string;
  manual_gpus: boolean;
  gpu_ids: string[];
  gpus_per_replica: number | "auto";
  categories: string[];
  backend_parameters: string;
  env: string;
  /**
   * The Custom backend's image (optional: without one the command runs as a host process); for other
   * backends an optional override of the version's image.
   */
  image_name: string;
  /** The Custom backend's command; for other backends an optional override of theirs. */
  run_command: string;
  cpu_offloading: boolean;
  distributed: boolean;
  restart_on_error: boolean;
  extended_kv_cache: boolean;
  /** "" = the cluster's default. */
  gpu_memory: "" | "reserve" | "fit";
  /** Under fit: full contexts the KV cache holds at once. */
  fit_concurrency: number;
  /** Autoscaling on (the four numbers below are its `autoscaling`). */
  autoscale: boolean;
  min_replicas: number;
  max_replicas: number;
  target_requests: number;
  scale_down_delay_seconds: number;
  /** Seconds the last replica is parked before it stops (min replicas 0); 0: off. */
  park_seconds: number;
  /** Not in the form: carried through an edit unchanged. */
  scaling_schedule: ScalingSchedule | null;
  /** Not in the form: carried through an edit so it keeps the deployment's route settings. */
  access_policy: "public" | "authed" | "allowed_principals";
  generic_proxy: boolean;
}

export const EMPTY: DeployState = {
  source: "local_path",
  local_path: "",
  huggingface_repo_id: "",
  huggingface_filename: "",
  model_scope_model_id: "",
  model_scope_file_path: "",
  name: "",
  description: "",
  backend: "",
  backend_version: "",
  replicas: 1,
  placement_strategy: "spread",
  worker_selector: "",
  manual_gpus: false,
  gpu_ids: [],
  gpus_per_replica: "auto",
  categories: [],
  backend_parameters: "",
  env: "",
  image_name: "",
  run_command: "",
  cpu_offloading: false,
  distributed: false,
  restart_on_error: true,
  extended_kv_cache: false,
  gpu_memory: "",
  fit_concurrency: 1,
  autoscale: false,
  min_replicas: 1,
  max_replicas: 4,
  target_requests: 4,
  scale_down_delay_seconds: 300,
  park_seconds: 0,
  scaling_schedule: null,
  access_policy: "authed",
  generic_proxy: true,
};

const blank = (s: string): string | null => (s.trim() ? s.trim() : null);

export function toSpec(s: DeployState): ModelSpec {
  const custom = isCustom(s.backend);
  return {
    name: s.name.trim(),
    source: s.source,
    local_path: s.source === "local_path" ? blank(s.local_path) : null,
    huggingface_repo_id: s.source === "huggingface" ? blank(s.huggingface_repo_id) : null,
    huggingface_filename: s.source === "huggingface" ? blank(s.huggingface_filename) : null,
    model_scope_model_id: s.source === "model_scope" ? blank(s.model_scope_model_id) : null,
    model_scope_file_path: s.source === "model_scope" ? blank(s.model_scope_file_path) : null,
    description: blank(s.description),
    backend: blank(s.backend),
    backend_version: custom ? null : blank(s.backend_version),
    replicas: s.replicas,
    categories: s.categories,
    placement_strategy: s.placement_strategy,
    worker_selector: parsePairs(s.worker_selector),
    gpu_selector: s.manual_gpus
      ? { gpu_ids: s.gpu_ids, gpus_per_replica: s.gpus_per_replica === "auto" ? null : s.gpus_per_replica }
      : null,
    backend_parameters: paramItems(s.backend_parameters),
    env: parsePairs(s.env),
    cpu_offloading: s.cpu_offloading,
    distributed_inference_across_workers: s.distributed,
    restart_on_error: s.restart_on_error,
    extended_kv_cache: s.extended_kv_cache ? { enabled: true } : null,
    image_name: blank(s.image_name),
    run_command: blank(s.run_command),
    access_policy: s.access_policy,
    generic_proxy: s.generic_proxy,
    gpu_memory: s.gpu_memory || null,
    // Only where it can apply (the server refuses it with reserve), and only when not the default.
    fit_concurrency: s.gpu_memory === "reserve" || s.fit_concurrency <= 1 ? null : s.fit_concurrency,
    autoscaling: s.autoscale
      ? {
          min_replicas: s.min_replicas,
          max_replicas: s.max_replicas,
          target_requests: s.target_requests,
          scale_down_delay_seconds: s.scale_down_delay_seconds,
          // Parking is a level on the way to zero: sent only with min replicas 0.
          ...(s.park_seconds > 0 && s.min_replicas === 0 ? { park_seconds: s.park_seconds } : {}),
        }
      : null,
    scaling_schedule: s.scaling_schedule,
  };
}

export function fromModel(m: Model): DeployState {
  return {
    source: m.source,
    local_path: m.local_path ?? "",
    huggingface_repo_id: m.huggingface_repo_id ?? "",
    huggingface_filename: m.huggingface_filename ?? "",
    model_scope_model_id: m.model_scope_model_id ?? "",
    model_scope_file_path: m.model_scope_file_path ?? "",
    name: m.name,
    description: m.description ?? "",
    backend: m.backend ?? "",
    backend_version: m.backend_version ?? "",
    replicas: m.replicas ?? 1,
    placement_strategy: m.placement_strategy ?? "spread",
    worker_selector: formatPairs(m.worker_selector),
    manual_gpus: Boolean(m.gpu_selector),
    gpu_ids: m.gpu_selector?.gpu_ids ?? [],
    gpus_per_replica: m.gpu_selector?.gpus_per_replica ?? "auto",
    categories: m.categories ?? [],
    backend_parameters: paramText(m.backend_parameters),
    env: formatPairs(m.env),
    cpu_offloading: m.cpu_offloading ?? false,
    distributed: m.distributed_inference_across_workers ?? false,
    restart_on_error: m.restart_on_error ?? true,
    extended_kv_cache: m.extended_kv_cache?.enabled ?? false,
    image_name: m.image_name ?? "",
    run_command: m.run_command ?? "",
    access_policy: m.access_policy ?? "authed",
    generic_proxy: m.generic_proxy ?? true,
    gpu_memory: m.gpu_memory ?? "",
    fit_concurrency: m.fit_concurrency ?? 1,
    autoscale: Boolean(m.autoscaling),
    min_replicas: m.autoscaling?.min_replicas ?? EMPTY.min_replicas,
    max_replicas: m.autoscaling?.max_replicas ?? EMPTY.max_replicas,
    target_requests: m.autoscaling?.target_requests ?? EMPTY.target_requests,
    scale_down_delay_seconds: m.autoscaling?.scale_down_delay_seconds ?? EMPTY.scale_down_delay_seconds,
    park_seconds: m.autoscaling?.park_seconds ?? EMPTY.park_seconds,
    scaling_schedule: m.scaling_schedule ?? null,
  };
}

/** A stored deployment's spec without its metadata, for PUT (the server refuses unknown fields). */
export function specOf(m: Model): ModelSpec {
  const { id: _id, version: _version, created_at: _c, updated_at: _u, ...spec } = m;
  return spec;
}

/**
 * The body of an edit: the stored deployment with the form's fields laid over it, so fields this
 * form does not show (`drain_timeout`, a newer server's fields) are sent back as they are instead of
 * being reset to their defaults by a PUT that replaces the whole spec.
 */
export function editBody(m: Model, s: DeployState): ModelSpec {
  return { ...specOf(m), ...toSpec(s) };
}

/** The name a deployment gets from its source when the user has not typed one. */
export function suggestName(s: DeployState): string {
  const from =
    s.source === "local_path"
      ? s.local_path
      : s.source === "huggingface"
        ? s.huggingface_repo_id
        : s.model_scope_model_id;
  const last = from.split("/").filter(Boolean).pop() ?? "";
  return last
    .replace(/\.gguf$/i, "")
    .replace(/[^A-Za-z0-9._-]+/g, "-")
    .slice(0, 63);
}

/** Where a deployment's model comes from, file name included (`repo · file.gguf` for hub files). */
export function sourceText(m: {
  local_path?: string | null;
  huggingface_repo_id?: string | null;
  huggingface_filename?: string | null;
  model_scope_model_id?: string | null;
  model_scope_file_path?: string | null;
}): string {
  if (m.local_path) return m.local_path;
  const [repo, file] = m.huggingface_repo_id
    ? [m.huggingface_repo_id, m.huggingface_filename]
    : [m.model_scope_model_id ?? "", m.model_scope_file_path];
  return file ? `${repo} · ${file}` : repo;
}

/**
 * The state with its backend's default version filled in, when none is chosen yet. It reads the
 * backend from the state it is given, never from an earlier render: a default computed for the
 * backend the form showed a moment ago must not land on the one the user has just picked.
 */
export function withDefaultVersion(s: DeployState, backends: BackendListItem[]): DeployState {
  if (s.backend_version || isCustom(s.backend)) return s;
  const backend = backends.find((b) => b.backend_name === s.backend);
  const version = backend ? (backend.default_version ?? backend.versions[0]?.version ?? "") : "";
  return version ? { ...s, backend_version: version } : s;
}

/**
 * GPUStack's pre-selection, the server's rule (`backends::catalog::preselect`): GGUF files go to
 * llama.cpp, speech to VoxBox, image models to SGLang, the rest to vLLM.
 */
export function preselectBackend(s: DeployState, available: string[], cpuOnly = false): string {
  return preselect(s, available, cpuOnly).backend;
}

/** Why the form picked its backend (shown under the field). */
export function preselectWhy(s: DeployState, available: string[], cpuOnly = false): string {
  return preselect(s, available, cpuOnly).why;
}

function preselect(s: DeployState, available: string[], cpuOnly: boolean): { backend: string; why: string } {
  const file =
    s.source === "local_path"
      ? s.local_path
      : s.source === "huggingface"
        ? s.huggingface_filename
        : s.model_scope_file_path;
  const gguf = file.toLowerCase().endsWith(".gguf");
  const speech = s.categories.some((c) => c === "text_to_speech" || c === "speech_to_text");
  const image = s.categories.includes("image");
  const llamas = ["llama.cpp", ...available.filter((b) => /llama/i.test(b))];
  // The server's rule first; on a cluster without GPUs, llama.cpp (it runs on CPU) before vLLM.
  const [wanted, why]: [string[], string] = gguf
    ? [llamas, "a GGUF file: llama.cpp serves GGUF"]
    : speech
      ? [["VoxBox"], "a speech model: VoxBox serves text-to-speech and speech-to-text"]
      : image
        ? [["SGLang"], "an image model: SGLang serves diffusion models"]
        : cpuOnly
          ? [[...llamas, "vLLM"], "the cluster has no GPU: llama.cpp runs on CPU"]
          : [["vLLM"], "the default for language models on GPUs"];
  const backend = wanted.find((b) => available.includes(b)) ?? available[0] ?? "";
  return {
    backend,
    why: wanted.includes(backend) ? `Preselected: ${why}.` : "Preselected: the first backend enabled.",
  };
}

/** Server field names the form shows next to an input; an error on any other field is shown form-level. */
export const FORM_FIELDS = new Set([
  "name",
  "local_path",
  "huggingface_repo_id",
  "huggingface_filename",
  "model_scope_model_id",
  "model_scope_file_path",
  "backend",
  "backend_version",
  "replicas",
  "autoscaling.min_replicas",
  "autoscaling.max_replicas",
  "autoscaling.target_requests",
  "autoscaling.scale_down_delay_seconds",
  "autoscaling.park_seconds",
  "worker_selector",
  "gpu_selector.gpu_ids",
  "gpu_selector.gpus_per_replica",
  "categories",
  "backend_parameters",
  "env",
  "image_name",
  "run_command",
]);

/**
 * The form input a server error's `field` belongs to: the field itself, or the nearest enclosing one
 * the form shows (`backend_parameters[2]` → `backend_parameters`, `env.HF_TOKEN` → `env`); null when
 * the form has no input for it (then the message is shown form-level).
 */
export function formFieldOf(field: string): string | null {
  let f = field.trim().replace(/^\$\.?/, "");
  for (;;) {
    if (FORM_FIELDS.has(f)) return f;
    const cut = Math.max(f.lastIndexOf("."), f.lastIndexOf("["));
    if (cut <= 0) return null;
    f = f.slice(0, cut);
  }
}

/** Server field errors split into those shown next to an input and the rest (shown form-level). */
export function splitFieldErrors(errors: Record<string, string>): { byField: Record<string, string>; other: string[] } {
  const byField: Record<string, string> = {};
  const other: string[] = [];
  for (const [field, message] of Object.entries(errors)) {
    const target = formFieldOf(field);
    if (target) byField[target] ??= message;
    else other.push(`${field}: ${message}`);
  }
  return { byField, other };
}

/**
 * What the server (or, for the run command, the worker that renders it) would refuse, found before
 * submitting: the same messages, by field.
 */
export function clientProblems(s: DeployState): Record<string, string> {
  const problems: Record<string, string> = {};
  const params = paramsProblem(s.backend_parameters);
  if (params) problems.backend_parameters = params;
  if (isCustom(s.backend) || s.run_command.trim()) {
    const command = runCommandProblem(s.run_command, parsePairs(s.env));
    if (command) problems.run_command = command;
  }
  return problems;
}
