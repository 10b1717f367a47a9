// The line under a deployment's replicas: whether it sleeps, its autoscaling bounds, and the
// requests held until it wakes.

import type { Model } from "../../api/types";

/** "asleep · autoscaled 0–4 · 3 queued"; null when the deployment is not autoscaled. */
export function scalingText(m: Model, queued?: number | null): string | null {
  if (!m.autoscaling) return null;
  const parts = [`autoscaled ${m.autoscaling.min_replicas}–${m.autoscaling.max_replicas}`];
  if (m.replicas === 0) parts.unshift("asleep");
  if (queued && queued > 0) parts.push(`${queued} queued`);
  return parts.join(" · ");
}

/** The `queued` count of deployment `id` in a polled list (the watch stream does not carry it). */
export function queuedOf(polled: { items: Model[] } | null, id: number): number | null {
  return polled?.items.find((m) => m.id === id)?.queued ?? null;
}
