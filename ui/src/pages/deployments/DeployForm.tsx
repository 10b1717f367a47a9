// Deploy a model, or edit a deployment: source, name, backend and version, replicas, scheduling,
// advanced options, and a live compatibility check (POST /v2/model-evaluations) before submitting.

import {
  Button,
  Drawer,
  Fieldset,
  Group,
  MultiSelect,
  NumberInput,
  Radio,
  SegmentedControl,
  Select,
  Stack,
  Switch,
  Text,
  TextInput,
  Textarea,
} from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { type FormEvent, useEffect, useMemo, useRef, useState } from "react";
import { postJson, putJson } from "../../api/client";
import { useFocusInvalid, useGet, useSubmit } from "../../api/hooks";
import type { BackendListItem, GpuDeviceView, ListResponse, Model, ModelSource } from "../../api/types";
import { FormError } from "../../components/FormError";
import { CompatibilityCheck } from "./CompatibilityCheck";
import { BUILT_IN_PLACEHOLDERS, describeParams } from "./command";
import { HubFileInput, HubRepoInput } from "./HubFields";
import type { Hub } from "./hub";
import {
  CUSTOM_BACKEND,
  clientProblems,
  type DeployState,
  EMPTY,
  editBody,
  fromModel,
  isCustom,
  preselectBackend,
  preselectWhy,
  splitFieldErrors,
  suggestName,
  toSpec,
  withDefaultVersion,
} from "./spec";

const CATEGORIES = ["llm", "embedding", "reranker", "image", "speech_to_text", "text_to_speech"];

interface Props {
  /** The deployment being edited; null deploys a new one. */
  editing: Model | null;
  onClose: () => void;
}

/** The deployment fields of each hub source: its repository (or model id) and optional file. */
const HUB_FIELDS = {
  huggingface: {
    repo: "huggingface_repo_id",
    repoLabel: "Repository",
    file: "huggingface_filename",
    fileLabel: "File (GGUF, optional)",
  },
  model_scope: {
    repo: "model_scope_model_id",
    repoLabel: "Model ID",
    file: "model_scope_file_path",
    fileLabel: "File path (GGUF, optional)",
  },
} as const;

/** Repository (or model id) and file of a hub source, with name search where the hub answers. */
function HubSourceFields({
  hub,
  state,
  set,
  errorOf,
}: {
  hub: Hub;
  state: DeployState;
  set: <K extends keyof DeployState>(key: K, value: DeployState[K]) => void;
  errorOf: (field: string) => string | undefined;
}) {
  const f = HUB_FIELDS[hub];
  return (
    <Group grow align="flex-start">
      <HubRepoInput
        hub={hub}
        label={f.repoLabel}
        name={f.repo}
        value={state[f.repo]}
        error={errorOf(f.repo)}
        onChange={(v) => set(f.repo, v)}
      />
      <HubFileInput
        hub={hub}
        label={f.fileLabel}
        name={f.file}
        repo={state[f.repo]}
        value={state[f.file]}
        error={errorOf(f.file)}
        onChange={(v) => set(f.file, v)}
      />
    </Group>
  );
}

export function DeployForm({ editing, onClose }: Props) {
  const [s, setState] = useState<DeployState>(() => (editing ? fromModel(editing) : EMPTY));
  const [nameTouched, setNameTouched] = useState(editing !== null);
  // On by default here (an edit that leaves running instances alone surprises people); the API's
  // default is GPUStack's: without ?rolling=true running instances keep their spec.
  const [rolling, setRolling] = useState(true);
  const [backendTouched, setBackendTouched] = useState(editing !== null);
  const backends = useGet<{ items: BackendListItem[] }>("/v2/inference-backends/list");
  const gpus = useGet<ListResponse<GpuDeviceView>>("/v2/gpu-devices?page=-1");
  // A cluster whose workers report no GPU runs models on CPU: the preselection says so.
  const cpuOnly = gpus.data != null && gpus.data.items.length === 0;
  const { busy, fieldErrors, formError, run, clear } = useSubmit();
  const formRef = useRef<HTMLFormElement>(null);
  // What the server would refuse, checked here first: live while typing, "required" after a submit.
  const [tried, setTried] = useState(false);
  const [refused, setRefused] = useState<Record<string, string>>({});
  useFocusInvalid(formRef, fieldErrors);
  useFocusInvalid(formRef, refused);
  const set = <K extends keyof DeployState>(key: K, value: DeployState[K]) =>
    setState((prev) => ({ ...prev, [key]: value }));

  const backendItems = backends.data?.items ?? [];
  const backendNames = backendItems.map((b) => b.backend_name);
  const backend = backendItems.find((b) => b.backend_name === s.backend);
  const custom = isCustom(s.backend);
  const problems = useMemo(() => clientProblems(s), [s]);
  const server = useMemo(() => splitFieldErrors(fieldErrors), [fieldErrors]);
  /** The message next to an input: the server's, else what the server would say. */
  const errorOf = (field: string): string | undefined => {
    const problem = problems[field];
    const live = problem && (tried || !problem.startsWith("required")) ? problem : undefined;
    return server.byField[field] ?? live;
  };

  // Pre-select the backend from the model type and the version from the backend, until the user picks.
  useEffect(() => {
    if (backendTouched || backendNames.length === 0) return;
    const pick = preselectBackend(s, backendNames, cpuOnly);
    if (pick !== s.backend) setState((prev) => ({ ...prev, backend: pick, backend_version: "" }));
  }, [s, backendTouched, backendNames.join(","), cpuOnly]);
  useEffect(() => {
    if (backend && !s.backend_version) setState((prev) => withDefaultVersion(prev, backendItems));
  }, [backend, s.backend_version]);
  useEffect(() => {
    if (!nameTouched) set("name", suggestName(s));
  }, [s.local_path, s.huggingface_repo_id, s.model_scope_model_id, s.source, nameTouched]);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setTried(true);
    if (Object.keys(problems).length > 0) {
      clear();
      setRefused({ ...problems });
      return;
    }
    const ok = await run(async () => {
      if (editing) {
        await putJson(`/v2/models/${editing.id}?version=${editing.version}&rolling=${rolling}`, editBody(editing, s));
      } else {
        await postJson("/v2/models", toSpec(s));
      }
    });
    if (ok) {
      notifications.show({ message: editing ? `Updated ${s.name}` : `Deploying ${s.name}`, color: "green" });
      onClose();
    }
  };

  const otherFieldError = server.other[0];

  return (
    <Drawer
      opened
      onClose={onClose}
      position="right"
      size="xl"
      title={editing ? `Edit ${editing.name}` : "Deploy a model"}
    >
      <form ref={formRef} onSubmit={submit} aria-label={editing ? "Edit deployment" : "Deploy a model"} noValidate>
        <Stack>
          {editing && (
            <Switch
              label="Apply to running instances (rolling)"
              description={
                rolling
                  ? "Instances whose command or placement changes are replaced one at a time."
                  : "Running instances keep their current spec; new instances get the new one."
              }
              checked={rolling}
              onChange={(e) => setRolling(e.currentTarget.checked)}
            />
          )}
          <Fieldset legend="Model">
            <Stack>
              <SegmentedControl
                aria-label="Source"
                value={s.source}
                onChange={(v) => set("source", v as ModelSource)}
                data={[
                  { value: "local_path", label: "Local path" },
                  { value: "huggingface", label: "Hugging Face" },
                  { value: "model_scope", label: "ModelScope" },
                ]}
              />
              {s.source === "local_path" && (
                <TextInput
                  label="Model path"
                  description="A GGUF file or a model directory on the workers (absolute path)"
                  name="local_path"
                  required
                  value={s.local_path}
                  error={errorOf("local_path")}
                  onChange={(e) => set("local_path", e.currentTarget.value)}
                />
              )}
              {(s.source === "huggingface" || s.source === "model_scope") && (
                <HubSourceFields hub={s.source} state={s} set={set} errorOf={errorOf} />
              )}
              <TextInput
                label="Name"
                description="Clients call the model by this name"
                name="name"
                required
                disabled={editing !== null}
                value={s.name}
                error={errorOf("name")}
                onChange={(e) => {
                  setNameTouched(true);
                  set("name", e.currentTarget.value);
                }}
              />
              <Group grow align="flex-start">
                <Select
                  allowDeselect={false}
                  label="Backend"
                  name="backend"
                  description={backendTouched ? undefined : preselectWhy(s, backendNames, cpuOnly)}
                  data={[
                    ...backendNames.filter((b) => !isCustom(b)),
                    { value: CUSTOM_BACKEND, label: "Custom (own image and command)" },
                  ]}
                  value={s.backend || null}
                  error={errorOf("backend") ?? backends.error?.message}
                  onChange={(v) => {
                    setBackendTouched(true);
                    setState((prev) => ({ ...prev, backend: v ?? "", backend_version: "" }));
                  }}
                />
                {!custom && (
                  <Select
                    allowDeselect={false}
                    label="Backend version"
                    name="backend_version"
                    data={backend?.versions.map((v) => v.version) ?? []}
                    value={s.backend_version || null}
                    error={errorOf("backend_version")}
                    onChange={(v) => set("backend_version", v ?? "")}
                  />
                )}
                <NumberInput
                  label="Replicas"
                  name="replicas"
                  min={0}
                  max={1024}
                  value={s.replicas}
                  error={errorOf("replicas")}
                  onChange={(v) => set("replicas", typeof v === "number" ? v : 0)}
                />
              </Group>
              <Switch
                label="Autoscale with demand"
                description="The server sets replicas between the bounds from the requests in flight; with minimum 0 it sleeps when idle and wakes on the first request"
                name="autoscale"
                checked={s.autoscale}
                onChange={(e) => set("autoscale", e.currentTarget.checked)}
              />
              {s.autoscale && (
                <Group grow align="flex-start" data-testid="autoscaling">
                  <NumberInput
                    label="Min replicas"
                    name="autoscaling.min_replicas"
                    min={0}
                    max={1024}
                    value={s.min_replicas}
                    error={errorOf("autoscaling.min_replicas")}
                    onChange={(v) => set("min_replicas", typeof v === "number" ? v : 0)}
                  />
                  <NumberInput
                    label="Max replicas"
                    name="autoscaling.max_replicas"
                    min={1}
                    max={1024}
                    value={s.max_replicas}
                    error={errorOf("autoscaling.max_replicas")}
                    onChange={(v) => set("max_replicas", typeof v === "number" ? v : 1)}
                  />
                  <NumberInput
                    label="Target requests per replica"
                    name="autoscaling.target_requests"
                    min={1}
                    value={s.target_requests}
                    error={errorOf("autoscaling.target_requests")}
                    onChange={(v) => set("target_requests", typeof v === "number" ? v : 1)}
                  />
                  <NumberInput
                    label="Scale-down delay (s)"
                    name="autoscaling.scale_down_delay_seconds"
                    min={0}
                    value={s.scale_down_delay_seconds}
                    error={errorOf("autoscaling.scale_down_delay_seconds")}
                    onChange={(v) => set("scale_down_delay_seconds", typeof v === "number" ? v : 0)}
                  />
                  <NumberInput
                    label="Park before stopping (s)"
                    description="Min 0: keep the last replica parked this long (vLLM asleep); a request wakes it in about a second. 0: off"
                    name="autoscaling.park_seconds"
                    min={0}
                    disabled={s.min_replicas !== 0}
                    value={s.park_seconds}
                    error={errorOf("autoscaling.park_seconds")}
                    onChange={(v) => set("park_seconds", typeof v === "number" ? v : 0)}
                  />
                </Group>
              )}
              {custom && (
                <Fieldset legend="Custom backend" variant="filled" data-testid="custom-backend">
                  <Stack>
                    <TextInput
                      label="Image name"
                      description="The container image to run; leave empty to run the command as a process on the worker (process runtime)"
                      placeholder="ghcr.io/ggml-org/llama.cpp:server"
                      name="image_name"
                      value={s.image_name}
                      error={errorOf("image_name")}
                      onChange={(e) => set("image_name", e.currentTarget.value)}
                    />
                    <Textarea
                      label="Run command"
                      description={`Split like a shell line (quotes kept whole). Placeholders: ${BUILT_IN_PLACEHOLDERS.map(
                        (p) => `{{${p}}}`,
                      ).join(" ")}, or {{NAME}} of an environment variable below. Serve on {{port}}.`}
                      placeholder="llama-server -m {{model_path}} --host 0.0.0.0 --port {{port}}"
                      name="run_command"
                      required
                      autosize
                      minRows={2}
                      value={s.run_command}
                      error={errorOf("run_command")}
                      onChange={(e) => set("run_command", e.currentTarget.value)}
                    />
                    <Text size="xs" c="dimmed">
                      A Custom backend names no GPU framework and has no health check: its instances are running once
                      started. On CPU-only workers, turn on "Allow CPU offloading" under Advanced.
                    </Text>
                  </Stack>
                </Fieldset>
              )}
            </Stack>
          </Fieldset>

          <Fieldset legend="Scheduling">
            <Stack>
              <Radio.Group
                label="Placement strategy"
                value={s.placement_strategy}
                onChange={(v) => set("placement_strategy", v === "binpack" ? "binpack" : "spread")}
              >
                <Group mt={4}>
                  <Radio value="spread" label="Spread (balance load)" />
                  <Radio value="binpack" label="Binpack (fill GPUs first)" />
                </Group>
              </Radio.Group>
              <Radio.Group
                label="GPU memory"
                description="Reserve: the engine's share of each GPU (GPUStack's rule). Fit: what a replica needs, told to its engine, so small models share a GPU."
                value={s.gpu_memory || "default"}
                onChange={(v) => set("gpu_memory", v === "reserve" || v === "fit" ? v : "")}
              >
                <Group mt={4}>
                  <Radio value="default" label="Cluster default" />
                  <Radio value="reserve" label="Reserve" />
                  <Radio value="fit" label="Fit" />
                </Group>
              </Radio.Group>
              {s.gpu_memory !== "reserve" && (
                <NumberInput
                  label="Full contexts at once"
                  description="Under fit, how many full contexts the KV cache holds"
                  name="fit_concurrency"
                  min={1}
                  max={1024}
                  value={s.fit_concurrency}
                  error={errorOf("fit_concurrency")}
                  onChange={(v) => set("fit_concurrency", typeof v === "number" ? v : 1)}
                />
              )}
              <Textarea
                label="Worker selector"
                description="Labels a worker must have, one key=value per line"
                name="worker_selector"
                autosize
                minRows={1}
                value={s.worker_selector}
                error={errorOf("worker_selector")}
                onChange={(e) => set("worker_selector", e.currentTarget.value)}
              />
              <Switch
                label="Select GPUs manually"
                checked={s.manual_gpus}
                onChange={(e) => set("manual_gpus", e.currentTarget.checked)}
              />
              {s.manual_gpus && (
                <Group grow align="flex-start">
                  <MultiSelect
                    label="GPUs"
                    name="gpu_ids"
                    data={(gpus.data?.items ?? []).map((g) => ({
                      value: g.id,
                      label: `${g.id} (${g.name}${g.simulated ? ", simulated" : ""})`,
                    }))}
                    value={s.gpu_ids}
                    error={errorOf("gpu_selector.gpu_ids")}
                    onChange={(v) => set("gpu_ids", v)}
                  />
                  <Select
                    allowDeselect={false}
                    label="GPUs per replica"
                    data={["auto", "1", "2", "4", "8"]}
                    value={String(s.gpus_per_replica)}
                    error={errorOf("gpu_selector.gpus_per_replica")}
                    onChange={(v) => set("gpus_per_replica", !v || v === "auto" ? "auto" : Number(v))}
                  />
                </Group>
              )}
            </Stack>
          </Fieldset>

          <Fieldset legend="Advanced">
            <Stack>
              <MultiSelect
                label="Categories"
                name="categories"
                data={CATEGORIES}
                error={errorOf("categories")}
                value={s.categories}
                onChange={(v) => set("categories", v)}
              />
              <Textarea
                label="Backend parameters"
                description={`One per line, in any of the forms the server reads: --flag value, --flag=value, or --flag alone with its value on the next line. Quotes and JSON values stay whole.${
                  backend?.common_parameters.length ? ` Common: ${backend.common_parameters.join(" ")}` : ""
                }`}
                placeholder={"--ctx-size 4096\n--threads=2"}
                name="backend_parameters"
                autosize
                minRows={2}
                value={s.backend_parameters}
                error={errorOf("backend_parameters")}
                onChange={(e) => set("backend_parameters", e.currentTarget.value)}
              />
              {s.backend_parameters.trim() && !errorOf("backend_parameters") && (
                <Text size="xs" c="dimmed" data-testid="params-reading">
                  Read as: {describeParams(s.backend_parameters)}
                </Text>
              )}
              <Textarea
                label="Environment variables"
                description="One NAME=value per line"
                name="env"
                autosize
                minRows={1}
                value={s.env}
                error={errorOf("env")}
                onChange={(e) => set("env", e.currentTarget.value)}
              />
              {!custom && (
                <Group grow align="flex-start">
                  <TextInput
                    label="Run command override"
                    description="Replaces the backend's command (same placeholders); empty keeps it"
                    name="run_command"
                    value={s.run_command}
                    error={errorOf("run_command")}
                    onChange={(e) => set("run_command", e.currentTarget.value)}
                  />
                  <TextInput
                    label="Image override"
                    description="Replaces the version's container image; empty keeps it"
                    name="image_name"
                    value={s.image_name}
                    error={errorOf("image_name")}
                    onChange={(e) => set("image_name", e.currentTarget.value)}
                  />
                </Group>
              )}
              <Group>
                <Switch
                  label="Extended KV cache"
                  checked={s.extended_kv_cache}
                  onChange={(e) => set("extended_kv_cache", e.currentTarget.checked)}
                />
                <Switch
                  label="Allow CPU offloading"
                  checked={s.cpu_offloading}
                  onChange={(e) => set("cpu_offloading", e.currentTarget.checked)}
                />
                <Switch
                  label="Distributed across workers"
                  checked={s.distributed}
                  onChange={(e) => set("distributed", e.currentTarget.checked)}
                />
                <Switch
                  label="Restart on error"
                  checked={s.restart_on_error}
                  onChange={(e) => set("restart_on_error", e.currentTarget.checked)}
                />
              </Group>
            </Stack>
          </Fieldset>

          <CompatibilityCheck spec={toSpec(s)} />
          <FormError message={formError ?? otherFieldError ?? null} />
          <Group justify="flex-end">
            <Button variant="default" onClick={onClose}>
              Cancel
            </Button>
            <Button type="submit" loading={busy}>
              {editing ? "Save" : "Deploy"}
            </Button>
          </Group>
        </Stack>
      </form>
    </Drawer>
  );
}
