// Wire types of the /v2 management API, as the UI uses them.
//
// Every type that is a schema of the served OpenAPI document is an alias of the type generated from
// the committed docs/openapi.json (./schema.d.ts, written by `npm run gen:api`; scripts/build-ui.sh
// --check fails when it is stale). Only the generic envelopes and the metadata the server flattens
// into every stored resource, which the document spells once per resource, are written here.

import type { components } from "./schema";

type Schemas = components["schemas"];

// --- Written by hand (UI-only: generic forms of what the document spells per resource) ---

/** The metadata of every stored resource (`Record<T>` in src/api, flattened into it). */
export interface Meta {
  id: number;
  version: number;
  created_at: string;
  updated_at: string;
}

/** The list envelope (`ListResponse_<Resource>` in the document). */
export interface ListResponse<T> {
  items: T[];
  pagination: Schemas["Pagination"];
}

/** A `?watch=true` event; `id` is the change sequence, the resource id is `data.id`. */
export interface WatchEvent<T> {
  type: Schemas["EventType"];
  id: number;
  data: T | null;
}

// --- Generated from docs/openapi.json ---

export type User = Schemas["User"];
export type Scope = Schemas["Scope"];
export type ApiKey = Schemas["ApiKey"];
export type Cluster = Schemas["Cluster"];
export type GpuDevice = Schemas["GpuDevice"];
export type GpuDeviceView = Schemas["GpuDeviceView"];
export type WorkerState = Schemas["WorkerState"];
export type Worker = Schemas["Worker"];
export type ModelSource = Schemas["ModelSource"];
export type PlacementStrategy = Schemas["PlacementStrategy"];
export type ModelSpec = Schemas["ModelSpec"];
export type Autoscaling = Schemas["Autoscaling"];
export type ScalingSchedule = Schemas["ScalingSchedule"];
export type Model = Schemas["Model"];
export type InstanceState = Schemas["InstanceState"];
export type ModelInstance = Schemas["ModelInstance"];
export type SubordinateWorker = Schemas["SubordinateWorker"];
export type EvaluationResult = Schemas["EvaluationResult"];
export type BackendSource = Schemas["BackendSource"];
export type VersionConfig = Schemas["VersionConfig"];
export type InferenceBackend = Schemas["InferenceBackend"];
export type InferenceBackendSaved = Schemas["InferenceBackendSaved"];
export type BackendListItem = Schemas["BackendListItem"];
export type LoadBalancing = Schemas["LoadBalancing"];
export type ModelRoute = Schemas["ModelRoute"];
/** One row of GET /v2/usage: a UTC day, user, API key, route and operation. */
export type UsageRow = Schemas["UsageRow"];
export type UsageDay = Schemas["UsageDay"];
export type UsageResponse = Schemas["UsageResponse"];
