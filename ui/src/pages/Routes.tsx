// Model routes (the public model names clients call): each with its targets ready over total and
// how it spreads requests over its instances (`load_balancing`, docs/routing.md), which
// administrators change here. The list is live; a change is a PUT with the route's name.

import { Select, Stack, Table, Text } from "@mantine/core";
import { useState } from "react";
import { putJson } from "../api/client";
import { useSubmit, useWatchList } from "../api/hooks";
import type { LoadBalancing, ModelRoute } from "../api/types";
import { FormError } from "../components/FormError";
import { Page } from "../components/Page";
import { useSession } from "../session";
import { balanceBody, explain, newer, POLICIES, targetsLabel } from "./routes";

function RouteRow({ listed, canEdit }: { listed: ModelRoute; canEdit: boolean }) {
  const [saved, setSaved] = useState<ModelRoute | null>(null);
  const { busy, fieldErrors, formError, run } = useSubmit();
  const route = newer(listed, saved);
  // A field error on another field than the select's is still the save's error.
  const otherError = Object.entries(fieldErrors).find(([field]) => field !== "load_balancing");
  const message = formError ?? (otherError ? `${otherError[0]}: ${otherError[1]}` : null);

  const change = (value: string | null) => {
    if (!value || value === route.load_balancing) return;
    void run(async () => {
      setSaved(await putJson<ModelRoute>(`/v2/model-routes/${route.id}`, balanceBody(route, value as LoadBalancing)));
    });
  };

  return (
    <Table.Tr data-route={route.name}>
      <Table.Td>
        <Text fw={500}>{route.name}</Text>
        {route.description && (
          <Text size="xs" c="dimmed">
            {route.description}
          </Text>
        )}
      </Table.Td>
      <Table.Td data-testid="targets" title="Targets with running instances / all targets">
        {targetsLabel(route)}
      </Table.Td>
      <Table.Td maw={460}>
        <Stack gap={6}>
          <Select
            aria-label={`Load balancing of ${route.name}`}
            name="load_balancing"
            allowDeselect={false}
            data={POLICIES.map((p) => ({ value: p.value, label: p.label }))}
            value={route.load_balancing ?? "prefix_aware"}
            disabled={!canEdit || busy}
            description={explain(route.load_balancing ?? "prefix_aware")}
            inputWrapperOrder={["label", "input", "description", "error"]}
            error={fieldErrors.load_balancing}
            onChange={change}
            maw={260}
          />
          <FormError message={message} />
        </Stack>
      </Table.Td>
    </Table.Tr>
  );
}

export function RoutesPage() {
  const routes = useWatchList<ModelRoute>("/v2/model-routes");
  const { user } = useSession();
  return (
    <Page title="Routes">
      <Text size="sm" c="dimmed">
        Each route is a model name clients call through /v1; deploying a model creates one named after it.
        {!user.is_admin && " Administrators choose how a route spreads requests."}
      </Text>
      {routes.error && (
        <Text c="orange" size="sm" role="status">
          {routes.error}
        </Text>
      )}
      {routes.loaded && routes.items.length === 0 ? (
        <Text c="dimmed" data-testid="routes-empty">
          No routes yet. Deploying a model creates its route.
        </Text>
      ) : (
        <Table aria-label="Routes" verticalSpacing="sm">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Name</Table.Th>
              <Table.Th>Targets ready / total</Table.Th>
              <Table.Th>Load balancing</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {routes.items.map((r) => (
              <RouteRow key={r.id} listed={r} canEdit={user.is_admin ?? false} />
            ))}
          </Table.Tbody>
        </Table>
      )}
    </Page>
  );
}
