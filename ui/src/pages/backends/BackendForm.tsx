// Add a custom backend, or edit any backend (the name is locked once created). Catalog versions of
// built-in and community backends are shown in "Versions" and kept as they are; this form edits the
// operator's own versions.

import { ActionIcon, Button, Fieldset, Group, Modal, Select, Stack, TextInput, Textarea } from "@mantine/core";
import { IconTrash } from "@tabler/icons-react";
import { type FormEvent, useRef, useState } from "react";
import { postJson, putJson } from "../../api/client";
import { useFocusInvalid, useSubmit } from "../../api/hooks";
import type { InferenceBackend, InferenceBackendSaved, VersionConfig } from "../../api/types";
import { FormError } from "../../components/FormError";
import { formatPairs, parsePairs } from "../../format";
import { notifySaved } from "./notifySaved";

interface VersionRow {
  name: string;
  image_name: string;
  custom_framework: string;
  entrypoint: string;
  run_command: string;
}

const FRAMEWORKS = ["cpu", "cuda", "rocm", "cann", "dtk"];
const NEW_VERSION: VersionRow = { name: "", image_name: "", custom_framework: "cpu", entrypoint: "", run_command: "" };

function ownVersions(b: InferenceBackend | null): VersionRow[] {
  if (!b) return [{ ...NEW_VERSION, name: "v1" }];
  return Object.entries(b.version_configs ?? {})
    .filter(([, v]) => !v.built_in_frameworks?.length)
    .map(([name, v]) => ({
      name,
      image_name: v.image_name ?? "",
      custom_framework: v.custom_framework ?? "cpu",
      entrypoint: v.entrypoint ?? "",
      run_command: v.run_command ?? "",
    }));
}

const opt = (s: string): string | undefined => (s.trim() ? s.trim() : undefined);

export function BackendForm({ backend, onClose }: { backend: InferenceBackend | null; onClose: () => void }) {
  const [name, setName] = useState(backend?.backend_name ?? "");
  const [description, setDescription] = useState(backend?.description ?? "");
  const [defaultVersion, setDefaultVersion] = useState(backend?.default_version ?? "v1");
  const [runCommand, setRunCommand] = useState(backend?.default_run_command ?? "");
  const [entrypoint, setEntrypoint] = useState(backend?.default_entrypoint ?? "");
  const [healthPath, setHealthPath] = useState(backend ? (backend.health_check_path ?? "") : "/v1/models");
  const [format, setFormat] = useState<string>(backend?.parameter_format ?? "space");
  const [params, setParams] = useState((backend?.default_backend_param ?? []).join("\n"));
  const [env, setEnv] = useState(formatPairs(backend?.default_env));
  const [versions, setVersions] = useState<VersionRow[]>(() => ownVersions(backend));
  const { busy, fieldErrors, formError, run } = useSubmit();
  const formRef = useRef<HTMLFormElement>(null);
  useFocusInvalid(formRef, fieldErrors);

  const setVersion = (i: number, patch: Partial<VersionRow>) =>
    setVersions((rows) => rows.map((r, j) => (j === i ? { ...r, ...patch } : r)));
  const versionError = (row: VersionRow, key: string): string | undefined =>
    fieldErrors[`version_configs.${row.name}.${key}`] ??
    (key === "name" ? fieldErrors[`version_configs.${row.name}`] : undefined);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const version_configs: Record<string, VersionConfig> = {};
    for (const v of versions) {
      version_configs[v.name.trim()] = {
        image_name: opt(v.image_name),
        custom_framework: opt(v.custom_framework),
        entrypoint: opt(v.entrypoint),
        run_command: opt(v.run_command),
      };
    }
    const spec = {
      ...(backend
        ? { enabled: backend.enabled, backend_source: backend.backend_source, is_built_in: backend.is_built_in }
        : {}),
      common_parameters: backend?.common_parameters ?? [],
      icon: backend?.icon,
      backend_name: name.trim(),
      description: opt(description),
      default_version: opt(defaultVersion),
      default_run_command: opt(runCommand),
      default_entrypoint: opt(entrypoint),
      health_check_path: opt(healthPath) ?? null,
      parameter_format: format,
      default_backend_param: params
        .split("\n")
        .map((l) => l.trim())
        .filter(Boolean),
      default_env: parsePairs(env),
      version_configs,
    };
    let saved: InferenceBackendSaved | undefined;
    const ok = await run(async () => {
      saved = backend
        ? await putJson<InferenceBackendSaved>(`/v2/inference-backends/${backend.id}?version=${backend.version}`, spec)
        : await postJson<InferenceBackendSaved>("/v2/inference-backends", spec);
    });
    if (ok && saved) {
      notifySaved(saved, `Saved ${spec.backend_name}`);
      onClose();
    }
  };

  const known = new Set(["backend_name", "default_version", "default_run_command", "health_check_path"]);
  const other = Object.entries(fieldErrors).find(([f]) => !known.has(f) && !f.startsWith("version_configs."));
  const versionsError = Object.entries(fieldErrors).find(
    ([f]) => f.startsWith("version_configs.") && !versions.some((r) => f.startsWith(`version_configs.${r.name}`)),
  );

  return (
    <Modal opened onClose={onClose} size="xl" title={backend ? `Edit ${backend.backend_name}` : "Add a custom backend"}>
      <form ref={formRef} onSubmit={submit} aria-label="Backend" noValidate>
        <Stack>
          <TextInput
            label="Name"
            description={backend ? "Names cannot change" : "Custom backend names end with -custom"}
            name="backend_name"
            required
            disabled={backend !== null}
            value={name}
            error={fieldErrors.backend_name}
            onChange={(e) => setName(e.currentTarget.value)}
          />
          <TextInput label="Description" value={description} onChange={(e) => setDescription(e.currentTarget.value)} />
          <Group grow align="flex-start">
            <TextInput
              label="Default version"
              name="default_version"
              value={defaultVersion}
              error={fieldErrors.default_version}
              onChange={(e) => setDefaultVersion(e.currentTarget.value)}
            />
            <TextInput
              label="Health check path"
              name="health_check_path"
              value={healthPath}
              error={fieldErrors.health_check_path}
              onChange={(e) => setHealthPath(e.currentTarget.value)}
            />
            <Select
              allowDeselect={false}
              label="Parameter format"
              data={["space", "equal"]}
              value={format}
              onChange={(v) => setFormat(v ?? "space")}
            />
          </Group>
          <TextInput
            label="Default run command"
            description="Placeholders: {{model_path}} {{port}} {{worker_ip}} {{model_name}}"
            name="default_run_command"
            value={runCommand}
            error={fieldErrors.default_run_command}
            onChange={(e) => setRunCommand(e.currentTarget.value)}
          />
          <TextInput
            label="Default entrypoint"
            value={entrypoint}
            onChange={(e) => setEntrypoint(e.currentTarget.value)}
          />
          <Group grow align="flex-start">
            <Textarea
              label="Default backend parameters"
              description="One per line"
              autosize
              minRows={2}
              value={params}
              onChange={(e) => setParams(e.currentTarget.value)}
            />
            <Textarea
              label="Default environment"
              description="NAME=value per line"
              autosize
              minRows={2}
              value={env}
              onChange={(e) => setEnv(e.currentTarget.value)}
            />
          </Group>
          <Fieldset legend="Versions">
            <Stack>
              {versions.map((row, i) => (
                <Group key={i} align="flex-start" grow wrap="nowrap">
                  <TextInput
                    label="Version"
                    value={row.name}
                    error={versionError(row, "name")}
                    onChange={(e) => setVersion(i, { name: e.currentTarget.value })}
                  />
                  <TextInput
                    label="Image"
                    value={row.image_name}
                    error={versionError(row, "image_name")}
                    onChange={(e) => setVersion(i, { image_name: e.currentTarget.value })}
                  />
                  <Select
                    allowDeselect={false}
                    label="Framework"
                    data={FRAMEWORKS}
                    value={row.custom_framework}
                    onChange={(v) => setVersion(i, { custom_framework: v ?? "cpu" })}
                  />
                  <TextInput
                    label="Entrypoint"
                    value={row.entrypoint}
                    error={versionError(row, "entrypoint")}
                    onChange={(e) => setVersion(i, { entrypoint: e.currentTarget.value })}
                  />
                  <ActionIcon
                    mt={28}
                    variant="subtle"
                    color="red"
                    style={{ flexGrow: 0 }}
                    aria-label={`Remove version ${row.name}`}
                    onClick={() => setVersions((rows) => rows.filter((_, j) => j !== i))}
                  >
                    <IconTrash size={16} />
                  </ActionIcon>
                </Group>
              ))}
              <Button variant="light" onClick={() => setVersions((rows) => [...rows, { ...NEW_VERSION }])}>
                Add version
              </Button>
            </Stack>
          </Fieldset>
          <FormError message={formError ?? (other ?? versionsError)?.[1] ?? null} />
          <Group justify="flex-end">
            <Button type="submit" loading={busy}>
              Save
            </Button>
          </Group>
        </Stack>
      </form>
    </Modal>
  );
}
