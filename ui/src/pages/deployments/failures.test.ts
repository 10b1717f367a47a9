import { describe, expect, it } from "vitest";
import type { BackendListItem, ModelInstance } from "../../api/types";
import { backendText, failureKey, failureText, freshFailures } from "./failures";

const instance = (over: Partial<ModelInstance>): ModelInstance =>
  ({ id: 1, state: "running", restart_count: 0, ...over }) as ModelInstance;

const backend = (over: Partial<BackendListItem>): BackendListItem => ({
  backend_name: "llama-cpp-custom",
  backend_source: "custom",
  is_built_in: false,
  default_env: {},
  enabled: true,
  default_version: "cpu",
  default_backend_param: [],
  common_parameters: [],
  versions: [{ version: "cpu", frameworks: ["cpu"] }],
  ...over,
});

describe("failure notices", () => {
  it("notices each failed run once", () => {
    const failed = instance({ id: 7, state: "error", restart_count: 2 });
    const items = [instance({ id: 1 }), failed, instance({ id: 8, state: "starting" })];
    expect(freshFailures(new Set(), items)).toEqual([failed]);
    expect(freshFailures(new Set([failureKey(failed)]), items)).toEqual([]);
    // The next run failing again is a new notice.
    expect(freshFailures(new Set([failureKey(failed)]), [{ ...failed, restart_count: 3 }])).toHaveLength(1);
  });

  it.each([
    [null, "The instance failed; its logs say why."],
    ["", "The instance failed; its logs say why."],
    [
      "the inference server exited with status 1; last log lines:\n\nerror: invalid argument: --no-such-flag\n",
      "the inference server exited with status 1; last log lines:\nerror: invalid argument: --no-such-flag",
    ],
    [
      Array.from({ length: 20 }, (_, n) => `line ${n}`).join("\n"),
      Array.from({ length: 8 }, (_, n) => `line ${n}`).join("\n"),
    ],
    ["x".repeat(700), `${"x".repeat(600)}…`],
  ])("shows the reason of %j", (message, want) => {
    expect(failureText(message)).toBe(want);
  });
});

describe("backendText", () => {
  const backends = [
    backend({}),
    backend({ backend_name: "vLLM", default_version: null, versions: [{ version: "0.11.0", frameworks: ["cuda"] }] }),
    backend({
      backend_name: "two",
      default_version: null,
      versions: [
        { version: "a", frameworks: [] },
        { version: "b", frameworks: [] },
      ],
    }),
  ];
  it.each([
    ["made in the form", { backend: "llama-cpp-custom", backend_version: "cpu" }, "llama-cpp-custom cpu"],
    ["made with the CLI", { backend: "llama-cpp-custom", backend_version: null }, "llama-cpp-custom cpu"],
    ["the only version", { backend: "vLLM", backend_version: null }, "vLLM 0.11.0"],
    ["a chosen version", { backend: "vLLM", backend_version: "0.10.0" }, "vLLM 0.10.0"],
    ["no default among several", { backend: "two", backend_version: null }, "two"],
    ["an unknown backend", { backend: "gone", backend_version: null }, "gone"],
  ])("%s", (_, m, want) => {
    expect(backendText(m, backends)).toBe(want);
  });
});
