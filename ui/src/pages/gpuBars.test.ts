import { describe, expect, it } from "vitest";
import type { ModelInstance } from "../api/types";
import { gpuSegments, share } from "./gpuBars";

const GIB = 2 ** 30;

function inst(
  name: string,
  worker: number,
  vram: Record<string, number>,
  subs: ModelInstance["distributed_servers"] = null,
) {
  return {
    name,
    worker_id: worker,
    gpu_indexes: Object.keys(vram).map(Number),
    computed_resource_claim: { vram, ram: 0 },
    distributed_servers: subs,
  } as unknown as ModelInstance;
}

describe("gpuSegments", () => {
  it("one segment per claim on this GPU, then what is used outside, then the free rest", () => {
    const instances = [
      inst("a", 1, { "0": 7 * GIB }),
      inst("b", 1, { "0": 7 * GIB, "1": 7 * GIB }),
      inst("other-gpu", 1, { "1": 9 * GIB }),
      inst("other-worker", 2, { "0": 9 * GIB }),
    ];
    const got = gpuSegments({ worker_id: 1, index: 0, memory_total: 80 * GIB, memory_external: 20 * GIB }, instances);
    expect(got.map((s) => [s.kind, s.label, s.bytes / GIB])).toEqual([
      ["claim", "a", 7],
      ["claim", "b", 7],
      ["external", "used outside the cluster", 20],
      ["free", "free", 46],
    ]);
  });

  it("counts a subordinate part on its own worker, and never shows negative free memory", () => {
    const sub = {
      subordinate_workers: [{ worker_id: 2, computed_resource_claim: { vram: { "0": 70 * GIB }, ram: 0 } }],
    };
    const instances = [inst("big", 1, { "0": 70 * GIB }, sub as unknown as ModelInstance["distributed_servers"])];
    const got = gpuSegments({ worker_id: 2, index: 0, memory_total: 24 * GIB }, instances);
    expect(got.map((s) => [s.kind, s.bytes / GIB])).toEqual([
      ["claim", 70],
      ["free", 0],
    ]);
  });

  it("shares are percents of the total", () => {
    expect(share(GIB, 4 * GIB)).toBe(25);
    expect(share(GIB, 0)).toBe(0);
    expect(share(8 * GIB, 4 * GIB)).toBe(100);
  });
});
