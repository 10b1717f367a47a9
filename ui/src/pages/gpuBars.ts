// What each GPU holds: one segment per instance's memory claim, the memory used outside the
// cluster, and the free rest (the scheduler's view: claims + external never exceed the total).

import type { ModelInstance } from "../api/types";

export interface Segment {
  kind: "claim" | "external" | "free";
  /** The instance's name for a claim. */
  label: string;
  bytes: number;
}

export interface GpuRef {
  worker_id: number;
  index: number;
  memory_total: number;
  memory_external?: number;
}

/** The claims placed on `gpu` (main and subordinate parts), what is used outside, and the free rest. */
export function gpuSegments(gpu: GpuRef, instances: ModelInstance[]): Segment[] {
  const key = String(gpu.index);
  const out: Segment[] = [];
  for (const i of instances) {
    const parts = [
      { worker: i.worker_id, claim: i.computed_resource_claim },
      ...(i.distributed_servers?.subordinate_workers ?? []).map((s) => ({
        worker: s.worker_id,
        claim: s.computed_resource_claim,
      })),
    ];
    for (const p of parts) {
      const bytes = p.worker === gpu.worker_id ? (p.claim?.vram?.[key] ?? 0) : 0;
      if (bytes > 0) out.push({ kind: "claim", label: i.name, bytes });
    }
  }
  const external = gpu.memory_external ?? 0;
  if (external > 0) out.push({ kind: "external", label: "used outside the cluster", bytes: external });
  const taken = out.reduce((sum, s) => sum + s.bytes, 0);
  out.push({ kind: "free", label: "free", bytes: Math.max(gpu.memory_total - taken, 0) });
  return out;
}

/** Percent of the total, for a bar section. */
export function share(bytes: number, total: number): number {
  return total > 0 ? Math.min((bytes / total) * 100, 100) : 0;
}
