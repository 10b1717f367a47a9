// Deployment actions shared by the list and its modals.

import { putJson } from "../../api/client";
import type { Model } from "../../api/types";
import { specOf } from "./spec";

/** Scales (0 stops, >0 starts) with the version read, so a concurrent edit answers 409. */
export async function putReplicas(model: Model, replicas: number): Promise<void> {
  await putJson(`/v2/models/${model.id}?version=${model.version}`, { ...specOf(model), replicas });
}
