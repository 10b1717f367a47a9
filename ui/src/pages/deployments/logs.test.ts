import { describe, expect, it } from "vitest";
import type { ModelInstance } from "../../api/types";
import { simulatedDetail } from "../Dashboard";
import { noLogReason } from "./LogsModal";

const instance = (over: Partial<ModelInstance>): ModelInstance => ({ state: "running", ...over }) as ModelInstance;

describe("noLogReason", () => {
  it("says why an instance that never started has no log", () => {
    expect(noLogReason(instance({ state: "pending", state_message: "No suitable workers.\n- w1: 2 GiB short" }))).toBe(
      "Not placed on a worker yet: No suitable workers.",
    );
    expect(noLogReason(instance({ state: "pending", state_message: null }))).toContain("looking for room");
    expect(noLogReason(instance({ state: "scheduled", worker_name: "gpu-7", state_message: null }))).toContain(
      "Placed on gpu-7, not started yet",
    );
    expect(noLogReason(instance({ state: "downloading", download_progress: 0.42 }))).toContain("42 %");
    expect(noLogReason(instance({ state: "error", state_message: "model_path does not exist" }))).toBe(
      "Failed: model_path does not exist.",
    );
    expect(noLogReason(instance({ state: "running" }))).toBeNull();
    expect(noLogReason(instance({ state: "starting" }))).toBeNull();
  });
});

describe("simulatedDetail", () => {
  it("explains what the GPU count is made of", () => {
    expect(simulatedDetail(0, 0)).toContain("run on CPU");
    expect(simulatedDetail(2, 0)).toBe("all detected on the workers");
    expect(simulatedDetail(2, 2)).toContain("planning only");
    expect(simulatedDetail(3, 1)).toBe("1 of them simulated (--simulate-gpus)");
  });
});
