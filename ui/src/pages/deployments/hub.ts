// Model search on the public hubs, straight from the browser: Hugging Face's and ModelScope's public
// APIs. Both are optional comforts: offline, behind a proxy or refused by CORS, every call resolves to
// "unavailable" (never throws, never waits longer than TIMEOUT_MS) and the form keeps its free text.

export type Hub = "huggingface" | "model_scope";

export interface HubModel {
  id: string;
  downloads: number | null;
  /** The repository holds GGUF files (by its tags, library or name). */
  gguf: boolean;
}

export type HubResult<T> = { ok: true; value: T } | { ok: false; reason: string };

export const TIMEOUT_MS = 5000;
export const SEARCH_LIMIT = 20;

const HF = "https://huggingface.co";
const MS = "https://modelscope.cn";

type Fetch = (input: string, init?: RequestInit) => Promise<Response>;

/** A repository name that says it holds GGUF files. */
export function looksGguf(id: string): boolean {
  return /gguf/i.test(id);
}

export function hfSearchUrl(query: string): string {
  return `${HF}/api/models?search=${encodeURIComponent(query.trim())}&limit=${SEARCH_LIMIT}`;
}

export function hfTreeUrl(repo: string): string {
  const path = repo.trim().split("/").map(encodeURIComponent).join("/");
  return `${HF}/api/models/${path}/tree/main?recursive=true`;
}

/** ModelScope's public model search (what modelscope.cn's own search page calls). */
export function msSearchRequest(query: string): { url: string; init: RequestInit } {
  return {
    url: `${MS}/api/v1/dolphin/models`,
    init: {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        Name: query.trim(),
        PageNumber: 1,
        PageSize: SEARCH_LIMIT,
        SortBy: "Default",
        Target: "",
        SingleCriterion: [],
        Criterion: [],
      }),
    },
  };
}

export function msFilesUrl(repo: string): string {
  const path = repo.trim().split("/").map(encodeURIComponent).join("/");
  return `${MS}/api/v1/models/${path}/repo/files?Recursive=true`;
}

const obj = (v: unknown): Record<string, unknown> | null =>
  typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const str = (v: unknown): string | null => (typeof v === "string" && v ? v : null);

/** `GET /api/models?search=`: `[{id, downloads, tags, library_name}, …]`. */
export function parseHfSearch(body: unknown): HubModel[] {
  if (!Array.isArray(body)) throw new Error("unexpected answer");
  return body.flatMap((item) => {
    const m = obj(item);
    const id = str(m?.id) ?? str(m?.modelId);
    if (!m || !id) return [];
    const tags = Array.isArray(m.tags) ? m.tags.filter((t): t is string => typeof t === "string") : [];
    const gguf = looksGguf(id) || tags.includes("gguf") || m.library_name === "gguf";
    return [{ id, downloads: num(m.downloads), gguf }];
  });
}

/** `PUT /api/v1/dolphin/models`: `{Code, Data: {Model: {Models: [{Path, Name, Downloads, Libraries}]}}}`. */
export function parseMsSearch(body: unknown): HubModel[] {
  const models = obj(obj(obj(body)?.Data)?.Model)?.Models;
  if (!Array.isArray(models)) throw new Error("unexpected answer");
  return models.flatMap((item) => {
    const m = obj(item);
    const path = str(m?.Path);
    const name = str(m?.Name);
    if (!m || !path || !name) return [];
    const id = `${path}/${name}`;
    const libraries = Array.isArray(m.Libraries) ? m.Libraries.map(String) : [];
    return [{ id, downloads: num(m.Downloads), gguf: looksGguf(id) || libraries.some((l) => /gguf/i.test(l)) }];
  });
}

/** `GET /api/models/<id>/tree/main`: `[{type: "file", path, size}, …]` → the GGUF files. */
export function parseHfTree(body: unknown): string[] {
  if (!Array.isArray(body)) throw new Error("unexpected answer");
  return ggufFiles(body.map((e) => (obj(e)?.type === "file" ? str(obj(e)?.path) : null)));
}

/** `GET /api/v1/models/<id>/repo/files`: `{Data: {Files: [{Type: "blob", Path}, …]}}` → the GGUF files. */
export function parseMsFiles(body: unknown): string[] {
  const files = obj(obj(body)?.Data)?.Files;
  if (!Array.isArray(files)) throw new Error("unexpected answer");
  return ggufFiles(files.map((f) => (obj(f)?.Type === "tree" ? null : str(obj(f)?.Path))));
}

function ggufFiles(paths: (string | null)[]): string[] {
  return paths.filter((p): p is string => p !== null && p.toLowerCase().endsWith(".gguf")).sort();
}

/** One JSON call that never throws and never outlives TIMEOUT_MS (or `signal`). */
export async function fetchJson<T>(
  url: string,
  parse: (body: unknown) => T,
  init: RequestInit = {},
  signal?: AbortSignal,
  fetchImpl: Fetch = (input, options) => fetch(input, options),
): Promise<HubResult<T>> {
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), TIMEOUT_MS);
  const onAbort = () => timeout.abort();
  signal?.addEventListener("abort", onAbort);
  try {
    // No cookies or credentials go to the hubs; the request is a plain CORS one.
    const res = await fetchImpl(url, { ...init, credentials: "omit", mode: "cors", signal: timeout.signal });
    if (!res.ok) return { ok: false, reason: `HTTP ${res.status}` };
    return { ok: true, value: parse(await res.json()) };
  } catch (e) {
    if (signal?.aborted) return { ok: false, reason: "cancelled" };
    if (timeout.signal.aborted) return { ok: false, reason: "timed out" };
    return { ok: false, reason: e instanceof Error ? e.message : String(e) };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/** Models whose name matches `query` on `hub`. */
export function searchModels(
  hub: Hub,
  query: string,
  signal?: AbortSignal,
  fetchImpl?: Fetch,
): Promise<HubResult<HubModel[]>> {
  if (hub === "huggingface") return fetchJson(hfSearchUrl(query), parseHfSearch, {}, signal, fetchImpl);
  const { url, init } = msSearchRequest(query);
  return fetchJson(url, parseMsSearch, init, signal, fetchImpl);
}

/** The GGUF files of a repository on `hub`. */
export function listGgufFiles(
  hub: Hub,
  repo: string,
  signal?: AbortSignal,
  fetchImpl?: Fetch,
): Promise<HubResult<string[]>> {
  return hub === "huggingface"
    ? fetchJson(hfTreeUrl(repo), parseHfTree, {}, signal, fetchImpl)
    : fetchJson(msFilesUrl(repo), parseMsFiles, {}, signal, fetchImpl);
}

/** A repository id worth asking the hub about: `owner/name`, no spaces. */
export function isRepoId(text: string): boolean {
  return /^[\w.-]+\/[\w.-]+$/.test(text.trim());
}
