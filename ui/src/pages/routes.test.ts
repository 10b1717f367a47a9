import { describe, expect, it } from "vitest";
import type { ModelRoute } from "../api/types";
import { balanceBody, explain, newer, POLICIES, targetsLabel } from "./routes";

const route = (over: Partial<ModelRoute> = {}): ModelRoute => ({
  id: 3,
  version: 7,
  created_at: "2026-01-01T00:00:00Z",
  updated_at: "2026-01-01T00:00:00Z",
  name: "smol",
  description: "a small model",
  categories: ["llm"],
  meta: { team: "a" },
  generic_proxy: false,
  created_model_id: 1,
  targets: 2,
  ready_targets: 1,
  access_policy: "public",
  timeout: 600,
  load_balancing: "least_outstanding",
  ...over,
});

describe("policies", () => {
  it("lists the three values the server takes, the default first, each with one line", () => {
    expect(POLICIES.map((p) => p.value)).toEqual(["prefix_aware", "least_outstanding", "round_robin"]);
    for (const p of POLICIES) {
      expect(explain(p.value)).toBe(p.explain);
      expect(p.explain).not.toContain("\n");
    }
    expect(explain("prefix_aware")).toMatch(/prompt cache/);
  });
});

describe("targetsLabel", () => {
  it("shows ready over total", () => {
    expect(targetsLabel(route())).toBe("1 / 2");
    expect(targetsLabel(route({ ready_targets: 0, targets: 0 }))).toBe("0 / 0");
  });
});

describe("balanceBody", () => {
  it("sends the name and the new policy and keeps every other editable field, with the version", () => {
    expect(balanceBody(route(), "prefix_aware")).toEqual({
      name: "smol",
      description: "a small model",
      categories: ["llm"],
      meta: { team: "a" },
      generic_proxy: false,
      access_policy: "public",
      timeout: 600,
      load_balancing: "prefix_aware",
      version: 7,
    });
  });

  it("leaves the targets and the server's counters out", () => {
    const body = balanceBody(route(), "round_robin");
    expect(Object.keys(body)).not.toContain("targets");
    expect(Object.keys(body)).not.toContain("ready_targets");
    expect(Object.keys(body)).not.toContain("created_model_id");
  });
});

describe("newer", () => {
  it("takes a save's answer until the live list catches up", () => {
    const saved = route({ version: 8, load_balancing: "prefix_aware" });
    expect(newer(route(), saved)).toBe(saved);
    const caughtUp = route({ version: 8, load_balancing: "prefix_aware" });
    expect(newer(caughtUp, saved)).toBe(caughtUp);
    expect(newer(route(), null).load_balancing).toBe("least_outstanding");
    expect(newer(route({ id: 4 }), saved).id).toBe(4);
  });
});
