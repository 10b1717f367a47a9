import { describe, expect, it } from "vitest";
import {
  addDays,
  aggregate,
  compact,
  daysBetween,
  fillDays,
  groupLabel,
  lastDays,
  OTHERS,
  timeSeries,
  totals,
  withRowNames,
  type UsageRow,
  usagePath,
} from "./usage";

const row = (over: Partial<UsageRow>): UsageRow => ({
  date: "2025-03-01",
  user_id: 1,
  api_key_id: 0,
  route_id: 1,
  route_name: "smollm2",
  model_name: "smollm2",
  operation: "chat_completions",
  request_count: 1,
  prompt_token_count: 10,
  completion_token_count: 5,
  ...over,
});

const ROWS = [
  row({ date: "2025-03-01", api_key_id: 4, request_count: 2, prompt_token_count: 20, completion_token_count: 10 }),
  row({ date: "2025-03-01", route_name: "qwen", api_key_id: 0 }),
  row({ date: "2025-03-03", route_name: "qwen", user_id: 2, request_count: 3, prompt_token_count: 300 }),
];

describe("dates", () => {
  it("counts days in UTC", () => {
    expect(addDays("2025-02-27", 2)).toBe("2025-03-01");
    expect(addDays("2025-03-01", -1)).toBe("2025-02-28");
    expect(lastDays(7, new Date("2025-03-10T23:30:00Z"))).toEqual({ start_date: "2025-03-04", end_date: "2025-03-10" });
    expect(daysBetween("2025-02-27", "2025-03-01")).toEqual(["2025-02-27", "2025-02-28", "2025-03-01"]);
    expect(daysBetween("2025-03-02", "2025-03-01")).toEqual([]);
    expect(daysBetween("", "2025-03-01")).toEqual([]);
  });
});

describe("usagePath", () => {
  it("sends only the filters that are set, as the server names them", () => {
    expect(usagePath({ start_date: "", end_date: "", model: null, api_key_id: null, user_id: null })).toBe("/v2/usage");
    expect(
      usagePath({ start_date: "2025-03-01", end_date: "2025-03-31", model: "qwen 3", api_key_id: 0, user_id: 2 }),
    ).toBe("/v2/usage?start_date=2025-03-01&end_date=2025-03-31&model=qwen+3&api_key_id=0&user_id=2");
  });
});

describe("aggregate", () => {
  it("sums per model, key, user and day", () => {
    expect(totals(ROWS)).toEqual({ requests: 6, prompt: 330, completion: 20, total: 350 });
    expect(aggregate(ROWS, "model")).toEqual([
      { key: "qwen", requests: 4, prompt: 310, completion: 10, total: 320 },
      { key: "smollm2", requests: 2, prompt: 20, completion: 10, total: 30 },
    ]);
    expect(aggregate(ROWS, "key").map((g) => [g.key, g.requests])).toEqual([
      ["0", 4],
      ["4", 2],
    ]);
    expect(aggregate(ROWS, "user").map((g) => g.key)).toEqual(["2", "1"]);
    expect(aggregate(ROWS, "date").map((g) => [g.key, g.total])).toEqual([
      ["2025-03-01", 45],
      ["2025-03-03", 305],
    ]);
  });

  it("falls back to the model name when a row has no route name", () => {
    expect(aggregate([row({ route_name: "", model_name: "m" })], "model")[0]?.key).toBe("m");
  });
});

describe("timeSeries", () => {
  const range = { start_date: "2025-03-01", end_date: "2025-03-03" };

  it("has every day of the range, zeros included", () => {
    const s = timeSeries(ROWS, "model", "tokens", range);
    expect(s.keys).toEqual(["qwen", "smollm2"]);
    expect(s.data).toEqual([
      { date: "2025-03-01", qwen: 15, smollm2: 30 },
      { date: "2025-03-02", qwen: 0, smollm2: 0 },
      { date: "2025-03-03", qwen: 305, smollm2: 0 },
    ]);
  });

  it("splits into prompt and completion, or counts requests", () => {
    expect(timeSeries(ROWS, "date", "tokens", range).data[0]).toEqual({
      date: "2025-03-01",
      prompt: 30,
      completion: 15,
    });
    const requests = timeSeries(ROWS, "key", "requests", range);
    expect(requests.keys).toEqual(["0", "4"]);
    expect(requests.data[2]).toEqual({ date: "2025-03-03", "0": 3, "4": 0 });
  });

  it("folds the smallest series into others", () => {
    const many = ["a", "b", "c", "d"].map((m, i) =>
      row({ route_name: m, prompt_token_count: 100 - i, completion_token_count: 0 }),
    );
    const s = timeSeries(many, "model", "tokens", { start_date: "2025-03-01", end_date: "2025-03-01" }, 3);
    expect(s.keys).toEqual(["a", "b", OTHERS]);
    expect(s.data[0]).toEqual({ date: "2025-03-01", a: 100, b: 99, [OTHERS]: 98 + 97 });
  });

  it("uses the rows' own days when no range is set", () => {
    expect(timeSeries(ROWS, "date", "requests", { start_date: "", end_date: "" }).data.map((d) => d.date)).toEqual([
      "2025-03-01",
      "2025-03-02",
      "2025-03-03",
    ]);
  });
});

describe("labels", () => {
  it("names keys and users where known", () => {
    const names = { keys: new Map([[4, "ci"]]), users: new Map([[1, "admin"]]) };
    expect(groupLabel("key", "0", names)).toBe("session (no API key)");
    expect(groupLabel("key", "4", names)).toBe("ci");
    expect(groupLabel("key", "9", names)).toBe("key #9");
    expect(groupLabel("key", OTHERS, names)).toBe("others");
    expect(groupLabel("user", "1", names)).toBe("admin");
    expect(groupLabel("user", "2", names)).toBe("user #2");
    expect(groupLabel("model", "qwen", names)).toBe("qwen");
    expect(compact(950)).toBe("950");
    expect(compact(1200)).toBe("1.2k");
    expect(compact(3_000_000)).toBe("3M");
  });
});

describe("fillDays", () => {
  it("spreads per-day totals over the whole range", () => {
    const perDay = [{ date: "2025-03-02", request_count: 2, prompt_token_count: 7, completion_token_count: 3 }];
    expect(fillDays(perDay, { start_date: "2025-03-01", end_date: "2025-03-03" })).toEqual([
      { date: "2025-03-01", prompt: 0, completion: 0, requests: 0 },
      { date: "2025-03-02", prompt: 7, completion: 3, requests: 2 },
      { date: "2025-03-03", prompt: 0, completion: 0, requests: 0 },
    ]);
    expect(fillDays(perDay, { start_date: "", end_date: "" }).map((d) => d.date)).toEqual(["2025-03-02"]);
  });
});

describe("withRowNames", () => {
  it("names keys and users from the rows, over what the caller could list", () => {
    const row = (api_key_id: number, api_key_name: string | null, user_id: number, user_name: string | null) => ({
      date: "2026-11-24",
      user_id,
      api_key_id,
      route_id: 1,
      route_name: "m",
      model_name: "m",
      operation: "chat_completion",
      request_count: 1,
      prompt_token_count: 1,
      completion_token_count: 1,
      api_key_name,
      user_name,
    });
    const base = { keys: new Map([[1, "mine"]]), users: new Map([[1, "admin"]]) };
    const names = withRowNames(base, [row(2, "alice-ci", 2, "alice"), row(3, null, 3, null)]);
    expect(groupLabel("key", "2", names)).toBe("alice-ci");
    expect(groupLabel("key", "1", names)).toBe("mine");
    expect(groupLabel("key", "3", names)).toBe("key #3");
    expect(groupLabel("user", "2", names)).toBe("alice");
    expect(base.keys.has(2)).toBe(false);
  });
});
