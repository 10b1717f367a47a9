// Token usage as GET /v2/usage returns it (src/api/gateway.rs UsageRow: one row per UTC day, user,
// API key, route and operation), and the sums the usage page shows: by day, model, key or user.

import type { UsageDay, UsageResponse, UsageRow } from "../api/types";

export type { UsageDay, UsageResponse, UsageRow };

/** The query parameters /v2/usage accepts. */
export interface UsageFilters {
  start_date: string;
  end_date: string;
  /** A model route's name (the name clients send as `model`). */
  model: string | null;
  api_key_id: number | null;
  user_id: number | null;
}

export type GroupBy = "date" | "model" | "key" | "user" | "operation";
export type Metric = "tokens" | "requests";

export interface Totals {
  requests: number;
  prompt: number;
  completion: number;
  total: number;
}

export interface Group extends Totals {
  key: string;
}

const DAY_MS = 86_400_000;

/** A UTC date as `YYYY-MM-DD`. */
export function isoDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

/** `YYYY-MM-DD` shifted by `days` (UTC). */
export function addDays(day: string, days: number): string {
  return isoDay(new Date(Date.parse(`${day}T00:00:00Z`) + days * DAY_MS));
}

/** The last `days` days up to today (UTC), as the server dates its rows. */
export function lastDays(days: number, now: Date = new Date()): { start_date: string; end_date: string } {
  const end = isoDay(now);
  return { start_date: addDays(end, -(days - 1)), end_date: end };
}

/** Every day from `start` to `end`, both included (empty when either is not a date or end < start). */
export function daysBetween(start: string, end: string): string[] {
  const from = Date.parse(`${start}T00:00:00Z`);
  const to = Date.parse(`${end}T00:00:00Z`);
  if (Number.isNaN(from) || Number.isNaN(to) || to < from) return [];
  const out: string[] = [];
  for (let t = from; t <= to && out.length < 3660; t += DAY_MS) out.push(isoDay(new Date(t)));
  return out;
}

/** The `/v2/usage` path for these filters; empty ones are left out. */
export function usagePath(f: UsageFilters): string {
  const q = new URLSearchParams();
  if (f.start_date) q.set("start_date", f.start_date);
  if (f.end_date) q.set("end_date", f.end_date);
  if (f.model) q.set("model", f.model);
  if (f.api_key_id !== null) q.set("api_key_id", String(f.api_key_id));
  if (f.user_id !== null) q.set("user_id", String(f.user_id));
  const query = q.toString();
  return query ? `/v2/usage?${query}` : "/v2/usage";
}

/** The label of a row's group: its day, model (the route clients called), key id, user id or operation. */
export function groupKey(r: UsageRow, by: GroupBy): string {
  switch (by) {
    case "date":
      return r.date;
    case "model":
      return r.route_name || r.model_name;
    case "key":
      return String(r.api_key_id);
    case "user":
      return String(r.user_id);
    case "operation":
      return r.operation;
  }
}

export function totals(rows: UsageRow[]): Totals {
  const t: Totals = { requests: 0, prompt: 0, completion: 0, total: 0 };
  for (const r of rows) {
    t.requests += r.request_count;
    t.prompt += r.prompt_token_count;
    t.completion += r.completion_token_count;
  }
  t.total = t.prompt + t.completion;
  return t;
}

/** Sums per group: days in date order, anything else by total tokens, largest first. */
export function aggregate(rows: UsageRow[], by: GroupBy): Group[] {
  const groups = new Map<string, UsageRow[]>();
  for (const r of rows) {
    const key = groupKey(r, by);
    const list = groups.get(key);
    if (list) list.push(r);
    else groups.set(key, [r]);
  }
  const out = [...groups.entries()].map(([key, list]) => ({ key, ...totals(list) }));
  return by === "date"
    ? out.sort((a, b) => a.key.localeCompare(b.key))
    : out.sort((a, b) => b.total - a.total || b.requests - a.requests || a.key.localeCompare(b.key));
}

export const OTHERS = "others";

export interface Series {
  /** Chart rows: `{date, <series key>: value, …}`, one per day of the range, zero where nothing ran. */
  data: Record<string, string | number>[];
  /** The series keys, largest first (at most `maxSeries`, the rest summed as OTHERS). */
  keys: string[];
}

/**
 * Values per day, split by `by` (model, key, user or operation) or, for `by` "date", into prompt and
 * completion tokens (or requests). Days of the range with no usage are present with zeros.
 */
export function timeSeries(
  rows: UsageRow[],
  by: GroupBy,
  metric: Metric,
  range: { start_date: string; end_date: string },
  maxSeries = 6,
): Series {
  const value = (r: UsageRow) =>
    metric === "requests" ? r.request_count : r.prompt_token_count + r.completion_token_count;
  const rowDays = rows.map((r) => r.date).sort();
  const start = range.start_date || rowDays[0] || "";
  const end = range.end_date || rowDays[rowDays.length - 1] || "";
  const days = daysBetween(start, end);
  for (const d of rowDays) if (!days.includes(d)) days.push(d);
  days.sort();

  let keys: string[];
  let split: (r: UsageRow) => [string, number][];
  if (by === "date") {
    keys = metric === "requests" ? ["requests"] : ["prompt", "completion"];
    split = (r) =>
      metric === "requests"
        ? [["requests", r.request_count]]
        : [
            ["prompt", r.prompt_token_count],
            ["completion", r.completion_token_count],
          ];
  } else {
    const ranked = aggregate(rows, by)
      .map((g) => ({ key: g.key, v: metric === "requests" ? g.requests : g.total }))
      .sort((a, b) => b.v - a.v || a.key.localeCompare(b.key))
      .map((g) => g.key);
    const shown = ranked.length > maxSeries ? ranked.slice(0, maxSeries - 1) : ranked;
    keys = ranked.length > maxSeries ? [...shown, OTHERS] : shown;
    const kept = new Set(shown);
    split = (r) => {
      const k = groupKey(r, by);
      return [[kept.has(k) ? k : OTHERS, value(r)]];
    };
  }

  const byDay = new Map<string, Record<string, string | number>>();
  for (const d of days) byDay.set(d, Object.fromEntries([["date", d], ...keys.map((k) => [k, 0])]));
  for (const r of rows) {
    const day = byDay.get(r.date);
    if (!day) continue;
    for (const [k, v] of split(r)) day[k] = (Number(day[k]) || 0) + v;
  }
  return { data: days.map((d) => byDay.get(d) as Record<string, string | number>), keys };
}

/** Compact counts for axes and totals: 950, 1.2k, 3.4M. */
export function compact(n: number): string {
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(1).replace(/\.0$/, "")}G`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(1).replace(/\.0$/, "")}M`;
  if (abs >= 1e3) return `${(n / 1e3).toFixed(1).replace(/\.0$/, "")}k`;
  return String(n);
}

/** Names for the ids in usage rows, from the lists the caller may read. */
export interface Names {
  keys: Map<number, string>;
  users: Map<number, string>;
}

/** `base` plus the names the rows carry (rows win: they name keys the caller cannot list). */
export function withRowNames(base: Names, rows: UsageRow[]): Names {
  const keys = new Map(base.keys);
  const users = new Map(base.users);
  for (const r of rows) {
    if (r.api_key_name) keys.set(r.api_key_id, r.api_key_name);
    if (r.user_name) users.set(r.user_id, r.user_name);
  }
  return { keys, users };
}

/** How a group is shown: a key's or user's name where known, else its id. */
export function groupLabel(by: GroupBy, key: string, names: Names): string {
  if (key === OTHERS && by !== "date" && by !== "model" && by !== "operation") return "others";
  if (by === "key") {
    const id = Number(key);
    if (id === 0) return "session (no API key)";
    return names.keys.get(id) ?? `key #${id}`;
  }
  if (by === "user") return names.users.get(Number(key)) ?? `user #${key}`;
  return key;
}

/** Per-day totals (GET /v2/dashboard `usage`, /v2/usage `per_day`) over every day of the range, zeros included. */
export function fillDays(
  perDay: UsageDay[],
  range: { start_date: string; end_date: string },
): { date: string; prompt: number; completion: number; requests: number }[] {
  const known = new Map(perDay.map((d) => [d.date, d]));
  const days = daysBetween(range.start_date, range.end_date);
  for (const d of perDay) if (!days.includes(d.date)) days.push(d.date);
  return days.sort().map((date) => {
    const d = known.get(date);
    return {
      date,
      prompt: d?.prompt_token_count ?? 0,
      completion: d?.completion_token_count ?? 0,
      requests: d?.request_count ?? 0,
    };
  });
}
