import { describe, expect, it } from "vitest";
import type { Model } from "../../api/types";
import { queuedOf, scalingText } from "./scaling";

const model = (over: Partial<Model>): Model => ({ id: 1, name: "m", replicas: 1, ready_replicas: 0, ...over }) as Model;
const auto = { min_replicas: 0, max_replicas: 4, target_requests: 4, scale_down_delay_seconds: 300 };

describe("the scaling line", () => {
  it.each([
    ["not autoscaled", model({}), 3, null],
    ["awake", model({ autoscaling: auto }), null, "autoscaled 0–4"],
    ["asleep", model({ autoscaling: auto, replicas: 0 }), 0, "asleep · autoscaled 0–4"],
    ["asleep with held requests", model({ autoscaling: auto, replicas: 0 }), 3, "asleep · autoscaled 0–4 · 3 queued"],
    ["waking with a held request", model({ autoscaling: auto }), 1, "autoscaled 0–4 · 1 queued"],
  ])("%s", (_, m, queued, want) => {
    expect(scalingText(m, queued)).toBe(want);
  });

  it("takes the count from the polled list", () => {
    const polled = { items: [model({ id: 1, queued: 2 }), model({ id: 2 })] };
    expect(queuedOf(polled, 1)).toBe(2);
    expect(queuedOf(polled, 2)).toBeNull();
    expect(queuedOf(polled, 3)).toBeNull();
    expect(queuedOf(null, 1)).toBeNull();
  });
});
