// The Routes page's pure parts: the load-balancing policies with a line on each (docs/routing.md),
// the targets figure, and the PUT body that changes a route's policy and nothing else.

import type { LoadBalancing, ModelRoute } from "../api/types";

export interface Policy {
  value: LoadBalancing;
  label: string;
  /** One line: what it picks, and when to choose it. */
  explain: string;
}

/** In the order docs/routing.md lists them; `prefix_aware` is the default. */
export const POLICIES: Policy[] = [
  {
    value: "prefix_aware",
    label: "Prefix-aware (default)",
    explain:
      "The instance whose prompt cache most likely holds the request's prefix, unless it is busy; a new prefix goes to the least busy: for most chat traffic, and above all requests that share long leading content (a system prompt, a document, a chat history).",
  },
  {
    value: "least_outstanding",
    label: "Least outstanding",
    explain:
      "The instance with the fewest requests in flight on this server: for requests whose service times vary widely, or to spread one hot prompt over every instance at once.",
  },
  {
    value: "round_robin",
    label: "Round robin",
    explain:
      "Each instance in turn, whatever it holds: for equal, short requests where counting requests in flight adds nothing; as a baseline.",
  },
];

/** The line under the select for `policy`. */
export function explain(policy: LoadBalancing): string {
  return POLICIES.find((p) => p.value === policy)?.explain ?? "";
}

/** "ready / total" targets: a target is ready while its deployment has running instances. */
export function targetsLabel(route: Pick<ModelRoute, "ready_targets" | "targets">): string {
  return `${route.ready_targets} / ${route.targets}`;
}

/**
 * The body of `PUT /v2/model-routes/{id}` that sets `load_balancing`. A PUT replaces the route's
 * other editable fields with the body's, so they go back as the route has them, with its version (a
 * change made meanwhile is refused, not lost); without `targets` the route's targets stay.
 */
export function balanceBody(route: ModelRoute, policy: LoadBalancing) {
  return {
    name: route.name,
    description: route.description,
    categories: route.categories,
    meta: route.meta,
    generic_proxy: route.generic_proxy,
    access_policy: route.access_policy,
    timeout: route.timeout,
    load_balancing: policy,
    version: route.version,
  };
}

/** Of the route from the live list and the one a save answered, the newer (a save can outrun the stream). */
export function newer(listed: ModelRoute, saved: ModelRoute | null): ModelRoute {
  return saved && saved.id === listed.id && saved.version > listed.version ? saved : listed;
}
