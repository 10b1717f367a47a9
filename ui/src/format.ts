// Small display helpers.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "–";
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${UNITS[unit]}`;
}

export function gib(n: number): number {
  return Math.round((n / 2 ** 30) * 10) / 10;
}

export function when(iso: string | null | undefined): string {
  return iso ? new Date(iso).toLocaleString() : "–";
}

const STATE_COLORS: Record<string, string> = {
  running: "green",
  ready: "green",
  error: "red",
  unreachable: "orange",
  draining: "grape",
  parked: "indigo",
  not_ready: "gray",
  maintenance: "yellow",
  downloading: "blue",
  starting: "blue",
  initializing: "blue",
  scheduled: "cyan",
  analyzing: "cyan",
  pending: "gray",
};

export function stateColor(state: string): string {
  return STATE_COLORS[state] ?? "gray";
}

/** "k=v" lines ⇄ a map, for labels, selectors and env vars. */
export function parsePairs(text: string, sep = "="): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const trimmed = line.trim();
    if (!trimmed) continue;
    const at = trimmed.indexOf(sep);
    if (at < 0) out[trimmed] = "";
    else out[trimmed.slice(0, at).trim()] = trimmed.slice(at + 1).trim();
  }
  return out;
}

export function formatPairs(map: Record<string, string> | undefined, sep = "="): string {
  return Object.entries(map ?? {})
    .map(([k, v]) => `${k}${sep}${v}`)
    .join("\n");
}

const LRM = "\u200e";

/**
 * Text shown left to right inside an element cut at its start (`truncate="start"`, which sets
 * `direction: rtl`): without the marks, a path's leading `/` is drawn at its end.
 */
export function ltr(text: string): string {
  return `${LRM}${text}${LRM}`;
}

/**
 * The `--server-url` to suggest to a new worker, and whether it must be replaced: the address this
 * browser used works for a worker only when it is not this machine's loopback.
 */
export function workerServerUrl(origin: string): { url: string; replace: boolean } {
  const u = new URL(origin);
  const host = u.hostname.replace(/^\[|\]$/g, "");
  const loopback = host === "localhost" || host === "::1" || /^127\./.test(host) || host === "0.0.0.0";
  if (!loopback) return { url: u.origin, replace: false };
  return { url: `${u.protocol}//SERVER-ADDRESS${u.port ? `:${u.port}` : ""}`, replace: true };
}
