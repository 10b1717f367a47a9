// The repository and file inputs for Hugging Face and ModelScope sources: free text that also suggests
// matching repositories (debounced hub search) and, for a GGUF repository, its files. When the hub cannot
// be reached the inputs stay plain text fields with a small hint; nothing waits on the network.

import { Autocomplete, Group, Loader, Text } from "@mantine/core";
import { useEffect, useState } from "react";
import { type Hub, type HubModel, isRepoId, listGgufFiles, searchModels } from "./hub";

const DEBOUNCE_MS = 350;
const HUB_NAMES: Record<Hub, string> = { huggingface: "Hugging Face", model_scope: "ModelScope" };

type Status = "idle" | "loading" | "ok" | "unavailable";

/** Runs `load` for `key` after DEBOUNCE_MS of quiet, cancelling the previous call; null key: idle. */
function useDebouncedHub<T>(
  key: string | null,
  load: (signal: AbortSignal) => Promise<{ ok: true; value: T } | { ok: false; reason: string }>,
): { value: T | null; status: Status } {
  const [value, setValue] = useState<T | null>(null);
  const [status, setStatus] = useState<Status>("idle");
  useEffect(() => {
    if (key === null) {
      setStatus("idle");
      return;
    }
    const abort = new AbortController();
    const timer = setTimeout(() => {
      setStatus("loading");
      void load(abort.signal).then((r) => {
        if (abort.signal.aborted) return;
        if (r.ok) {
          setValue(r.value);
          setStatus("ok");
        } else {
          setStatus("unavailable");
        }
      });
    }, DEBOUNCE_MS);
    return () => {
      clearTimeout(timer);
      abort.abort();
    };
    // `load` is derived from `key`; re-running on its identity would search on every render.
  }, [key]);
  return { value, status };
}

interface RepoProps {
  hub: Hub;
  label: string;
  name: string;
  value: string;
  error?: string;
  onChange: (value: string) => void;
}

/** The repository id, with name search on the hub. */
export function HubRepoInput({ hub, label, name, value, error, onChange }: RepoProps) {
  const query = value.trim();
  const { value: found, status } = useDebouncedHub<HubModel[]>(query.length >= 2 ? `${hub}:${query}` : null, (signal) =>
    searchModels(hub, query, signal),
  );
  const models = status === "ok" || status === "loading" ? (found ?? []) : [];
  const hint =
    status === "unavailable"
      ? `${HUB_NAMES[hub]} search unavailable; type the id as owner/name`
      : `Type to search ${HUB_NAMES[hub]} by name, or enter owner/name`;
  return (
    <Autocomplete
      label={label}
      name={name}
      placeholder="Qwen/Qwen3-0.6B"
      required
      description={hint}
      value={value}
      error={error}
      data={models.map((m) => m.id)}
      filter={({ options }) => options}
      limit={20}
      maxDropdownHeight={280}
      rightSection={status === "loading" ? <Loader size="xs" aria-label={`Searching ${HUB_NAMES[hub]}`} /> : null}
      renderOption={({ option }) => {
        const m = models.find((x) => x.id === option.value);
        return (
          <Group justify="space-between" wrap="nowrap" w="100%">
            <Text size="sm">{option.value}</Text>
            <Text size="xs" c="dimmed">
              {m?.gguf ? "GGUF · " : ""}
              {m?.downloads != null ? `${m.downloads.toLocaleString()} downloads` : ""}
            </Text>
          </Group>
        );
      }}
      onChange={onChange}
      data-hub-status={status}
    />
  );
}

interface FileProps {
  hub: Hub;
  label: string;
  name: string;
  repo: string;
  value: string;
  error?: string;
  onChange: (value: string) => void;
}

/** The GGUF file in the repository, offered from the hub's file list when it answers. */
export function HubFileInput({ hub, label, name, repo, value, error, onChange }: FileProps) {
  const id = repo.trim();
  const { value: files, status } = useDebouncedHub<string[]>(isRepoId(id) ? `${hub}:${id}` : null, (signal) =>
    listGgufFiles(hub, id, signal),
  );
  const list = status === "ok" ? (files ?? []) : [];
  const description =
    status === "unavailable"
      ? "File list unavailable; type the file's path in the repository"
      : status === "ok" && list.length > 0
        ? `${list.length} GGUF file${list.length === 1 ? "" : "s"} in this repository`
        : status === "ok"
          ? "No GGUF files in this repository: leave empty for the whole model"
          : "For a GGUF repository: the file to serve";
  return (
    <Autocomplete
      label={label}
      name={name}
      placeholder="model-Q4_K_M.gguf"
      description={description}
      value={value}
      error={error}
      data={list}
      limit={50}
      maxDropdownHeight={280}
      rightSection={status === "loading" ? <Loader size="xs" aria-label="Listing files" /> : null}
      onChange={onChange}
      data-hub-status={status}
    />
  );
}
