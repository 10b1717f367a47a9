// Notices for deployments that fail while the page is open, and the backend column's text.

import type { BackendListItem, ModelInstance } from "../../api/types";

/** One notice per run of an instance: its id and restart count. */
export const failureKey = (i: Pick<ModelInstance, "id" | "restart_count">): string => `${i.id}:${i.restart_count}`;

/** Failed runs not noticed yet (`seen` holds the keys already shown). */
export function freshFailures(seen: ReadonlySet<string>, instances: ModelInstance[]): ModelInstance[] {
  return instances.filter((i) => i.state === "error" && !seen.has(failureKey(i)));
}

const NOTICE_LINES = 8;
const NOTICE_CHARS = 600;

/** The failure's message as a notice shows it: its first lines (the reason and the log's last lines). */
export function failureText(message: string | null | undefined): string {
  const lines = (message ?? "").split("\n").filter((l) => l.trim());
  if (lines.length === 0) return "The instance failed; its logs say why.";
  const text = lines.slice(0, NOTICE_LINES).join("\n");
  return text.length > NOTICE_CHARS ? `${text.slice(0, NOTICE_CHARS)}…` : text;
}

/**
 * The backend a deployment runs on, with its version: the one chosen, else the backend's default (the
 * CLI leaves it unset where the deploy form fills it in; both run the same).
 */
export function backendText(
  m: { backend?: string | null; backend_version?: string | null },
  backends: BackendListItem[],
): string {
  const b = backends.find((x) => x.backend_name === m.backend);
  const version = m.backend_version ?? b?.default_version ?? (b?.versions.length === 1 ? b.versions[0]?.version : "");
  return [m.backend ?? "", version ?? ""].filter(Boolean).join(" ");
}
