// Workers and their GPUs: state, resources, labels (edit), maintenance, and the command to add one.

import {
  ActionIcon,
  Badge,
  Button,
  Card,
  Code,
  Group,
  Menu,
  Modal,
  Progress,
  Select,
  Stack,
  Table,
  Text,
  Textarea,
  Title,
} from "@mantine/core";
import { modals } from "@mantine/modals";
import { notifications } from "@mantine/notifications";
import { IconDots } from "@tabler/icons-react";
import { type FormEvent, useState } from "react";
import { del, messageOf, postJson, putJson } from "../api/client";
import { useGet, usePoll, useSubmit, useWatchList } from "../api/hooks";
import type { Cluster, ListResponse, ModelInstance, Worker } from "../api/types";
import { FormError } from "../components/FormError";
import { Page } from "../components/Page";
import { StateBadge } from "../components/StateBadge";
import { bytes, formatPairs, parsePairs, workerServerUrl } from "../format";
import { type GpuRef, gpuSegments, share } from "./gpuBars";

const CLAIM_COLORS = ["blue", "teal", "violet", "cyan", "indigo", "lime", "pink", "orange"];

/** One bar per GPU: each instance's claim, memory used outside the cluster, and the free rest. */
function ClaimBar({ gpu, name, instances }: { gpu: GpuRef; name: string; instances: ModelInstance[] }) {
  const segments = gpuSegments(gpu, instances);
  const free = segments.find((s) => s.kind === "free");
  const parts = segments.filter((s) => s.kind !== "free");
  return (
    <Stack gap={2} data-testid={`gpu-claims-${name}`}>
      <Progress.Root size="lg" aria-label={`Claims on GPU ${name}`}>
        {parts.map((s, i) => (
          <Progress.Section
            key={`${s.kind}-${s.label}-${i}`}
            value={share(s.bytes, gpu.memory_total)}
            color={s.kind === "external" ? "gray" : CLAIM_COLORS[i % CLAIM_COLORS.length]}
            aria-label={`${s.label}: ${bytes(s.bytes)}`}
            data-segment={s.kind}
          />
        ))}
      </Progress.Root>
      <Text size="xs">
        {parts.map((s) => `${s.label} ${bytes(s.bytes)}`).join(" · ")}
        {parts.length > 0 ? " · " : ""}free {bytes(free?.bytes ?? 0)}
      </Text>
    </Stack>
  );
}

function LabelsModal({ worker, onClose }: { worker: Worker; onClose: () => void }) {
  const [text, setText] = useState(formatPairs(worker.labels));
  const { busy, fieldErrors, formError, run } = useSubmit();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (await run(() => putJson(`/v2/workers/${worker.id}`, { labels: parsePairs(text) }).then(() => {}))) onClose();
  };
  const labelError = Object.entries(fieldErrors).find(([f]) => f.startsWith("labels"))?.[1];
  return (
    <Modal opened onClose={onClose} title={`Labels of ${worker.name}`}>
      <form onSubmit={submit} aria-label="Worker labels">
        <Stack>
          <Textarea
            label="Labels"
            description="One key=value per line"
            autosize
            minRows={4}
            data-autofocus
            value={text}
            error={labelError}
            onChange={(e) => setText(e.currentTarget.value)}
          />
          <FormError message={formError} />
          <Group justify="flex-end">
            <Button type="submit" loading={busy}>
              Save
            </Button>
          </Group>
        </Stack>
      </form>
    </Modal>
  );
}

function AddWorker() {
  const clusters = useGet<ListResponse<Cluster>>("/v2/clusters?page=-1");
  const [clusterId, setClusterId] = useState<string | null>(null);
  const [token, setToken] = useState<string | null>(null);
  const items = clusters.data?.items ?? [];
  const cluster = items.find((c) => String(c.id) === clusterId) ?? items.find((c) => c.is_default) ?? items[0];

  const regenerate = () =>
    modals.openConfirmModal({
      title: "Generate a new registration token?",
      children: (
        <Text size="sm">The current token stops working for new workers. Joined workers are not affected.</Text>
      ),
      labels: { confirm: "Generate", cancel: "Cancel" },
      onConfirm: () =>
        void postJson<{ registration_token: string }>(`/v2/clusters/${cluster?.id}/registration-token`, {})
          .then((r) => setToken(r.registration_token))
          .catch((e: unknown) => notifications.show({ color: "red", message: messageOf(e) })),
    });

  const server = workerServerUrl(window.location.origin);
  // The token goes in the environment, not on a command line that `ps` shows.
  const command = `FERROSTACK_TOKEN=${token ?? "<cluster token>"} ferrostack worker --server-url ${server.url}`;
  return (
    <Card withBorder>
      <Stack>
        <Title order={4}>Add a worker</Title>
        <Group align="flex-end">
          <Select
            allowDeselect={false}
            label="Cluster"
            data={items.map((c) => ({ value: String(c.id), label: c.name }))}
            value={cluster ? String(cluster.id) : null}
            onChange={(v) => {
              setClusterId(v);
              setToken(null);
            }}
          />
          <Button variant="light" onClick={regenerate} disabled={!cluster}>
            Generate new token
          </Button>
        </Group>
        <Text size="sm">Run on the GPU machine:</Text>
        <Code block data-testid="add-worker-command" style={{ whiteSpace: "pre-wrap", wordBreak: "break-all" }}>
          {command}
        </Code>
        <Text size="xs" c="dimmed" data-testid="add-worker-server-url">
          {server.replace
            ? `This browser reaches the server at ${window.location.origin}, which is only this machine: replace SERVER-ADDRESS with an address of the server that the worker's machine reaches.`
            : `--server-url is the address this browser uses; replace it if the worker's machine reaches the server at another address.`}
        </Text>
        <Text size="xs" c="dimmed">
          {token
            ? "This token is shown once; copy it now."
            : `The default cluster's token is in <data-dir>/cluster_token on the server (it starts with ${cluster?.token_hint ?? "…"}), or generate a new one.`}
        </Text>
      </Stack>
    </Card>
  );
}

function setMaintenance(w: Worker, enabled: boolean) {
  putJson(`/v2/workers/${w.id}`, { maintenance: { enabled, message: enabled ? "set in the UI" : null } }).catch(
    (e: unknown) => notifications.show({ color: "red", message: messageOf(e) }),
  );
}

function confirmDelete(w: Worker) {
  modals.openConfirmModal({
    title: `Remove worker ${w.name}?`,
    children: <Text size="sm">Its instances are deleted; it can join again with the cluster token.</Text>,
    labels: { confirm: "Remove", cancel: "Cancel" },
    confirmProps: { color: "red" },
    onConfirm: () =>
      void del(`/v2/workers/${w.id}`).catch((e: unknown) =>
        notifications.show({ color: "red", message: messageOf(e) }),
      ),
  });
}

/** The worker with the polled status when that one is newer. */
function withFigures(w: Worker, polled: ListResponse<Worker> | null): Worker {
  const p = polled?.items.find((x) => x.id === w.id);
  if (!p || (p.heartbeat_time ?? "") < (w.heartbeat_time ?? "")) return w;
  return { ...w, status: p.status, heartbeat_time: p.heartbeat_time };
}

export function WorkersPage() {
  const watched = useWatchList<Worker>("/v2/workers");
  // The watch carries state changes; utilisation figures are not written (so not watched): poll them.
  const polled = usePoll<ListResponse<Worker>>("/v2/workers?page=-1", 15_000);
  const workers = { ...watched, items: watched.items.map((w) => withFigures(w, polled)) };
  const [editing, setEditing] = useState<Worker | null>(null);
  const gpus = workers.items.flatMap((w) =>
    (w.status?.gpu_devices ?? []).map((g) => ({ ...g, worker: w.name, worker_id: w.id })),
  );
  const instances = useWatchList<ModelInstance>("/v2/model-instances");

  return (
    <Page title="Workers & GPUs">
      <Table aria-label="Workers">
        <Table.Thead>
          <Table.Tr>
            <Table.Th>Name</Table.Th>
            <Table.Th>State</Table.Th>
            <Table.Th>Address</Table.Th>
            <Table.Th>CPU</Table.Th>
            <Table.Th>Memory</Table.Th>
            <Table.Th>GPUs</Table.Th>
            <Table.Th>Labels</Table.Th>
            <Table.Th w={60}>Actions</Table.Th>
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {workers.items.map((w) => (
            <Table.Tr key={w.id} data-worker={w.name}>
              <Table.Td>{w.name}</Table.Td>
              <Table.Td>
                <StateBadge state={w.state} />
                {w.state_message && (
                  <Text size="xs" c="dimmed" maw={240}>
                    {w.state_message}
                  </Text>
                )}
              </Table.Td>
              <Table.Td>
                {w.ip}
                {w.ifname ? ` on ${w.ifname}` : ""} ({w.runtime})
              </Table.Td>
              <Table.Td>
                {w.status?.cpu.total ?? 0} cores, {Math.round(w.status?.cpu.utilization_rate ?? 0)}%
              </Table.Td>
              <Table.Td>
                {bytes(w.status?.memory.used ?? 0)} / {bytes(w.status?.memory.total ?? 0)}
              </Table.Td>
              <Table.Td>
                {w.status?.gpu_devices?.length ?? 0}
                {w.status?.gpu_devices?.some((g) => g.simulated) && " (simulated)"}
              </Table.Td>
              <Table.Td maw={240}>
                {/* Chips wrap inside the column: a long label is shown whole, never cut. */}
                <Group gap={4}>
                  {Object.entries(w.labels ?? {}).map(([k, v]) => (
                    <Badge
                      key={k}
                      variant="outline"
                      size="sm"
                      tt="none"
                      h="auto"
                      maw="100%"
                      data-label={k}
                      styles={{ label: { whiteSpace: "normal", overflowWrap: "anywhere", overflow: "visible" } }}
                    >
                      {k}={v}
                    </Badge>
                  ))}
                </Group>
              </Table.Td>
              <Table.Td>
                <Menu position="bottom-end">
                  <Menu.Target>
                    <ActionIcon variant="subtle" aria-label={`Actions for worker ${w.name}`}>
                      <IconDots size={16} />
                    </ActionIcon>
                  </Menu.Target>
                  <Menu.Dropdown>
                    <Menu.Item onClick={() => setEditing(w)}>Edit labels</Menu.Item>
                    <Menu.Item onClick={() => setMaintenance(w, !w.maintenance?.enabled)}>
                      {w.maintenance?.enabled ? "End maintenance" : "Start maintenance"}
                    </Menu.Item>
                    <Menu.Item color="red" onClick={() => confirmDelete(w)}>
                      Remove
                    </Menu.Item>
                  </Menu.Dropdown>
                </Menu>
              </Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
      {workers.loaded && workers.items.length === 0 && <Text c="dimmed">No workers have joined yet.</Text>}

      <Title order={3}>GPUs</Title>
      <Table aria-label="GPUs">
        <Table.Thead>
          <Table.Tr>
            <Table.Th>GPU</Table.Th>
            <Table.Th>Worker</Table.Th>
            <Table.Th>Memory: in use, then claimed</Table.Th>
            <Table.Th>Utilization</Table.Th>
            <Table.Th>Temperature</Table.Th>
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {gpus.map((g) => (
            <Table.Tr key={`${g.worker}:${g.type}:${g.index}`}>
              <Table.Td>
                {g.index}: {g.name}{" "}
                {g.simulated && (
                  <Badge color="grape" size="sm">
                    SIMULATED
                  </Badge>
                )}
              </Table.Td>
              <Table.Td>{g.worker}</Table.Td>
              <Table.Td miw={200}>
                <Progress value={g.memory_utilization_rate} aria-label={`Memory of GPU ${g.index} on ${g.worker}`} />
                <Text size="xs">
                  {bytes(g.memory_used)} / {bytes(g.memory_total)}
                </Text>
                <ClaimBar gpu={g} name={`${g.worker}:${g.type}:${g.index}`} instances={instances.items} />
              </Table.Td>
              <Table.Td>{g.core_utilization_rate == null ? "–" : `${Math.round(g.core_utilization_rate)}%`}</Table.Td>
              {/* The API sends null where the vendor tool reports nothing (simulated GPUs). */}
              <Table.Td>{g.temperature == null ? "–" : `${g.temperature} °C`}</Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
      {workers.loaded && gpus.length === 0 && <Text c="dimmed">No GPUs reported (CPU-only workers).</Text>}

      <AddWorker />
      {editing && <LabelsModal worker={editing} onClose={() => setEditing(null)} />}
    </Page>
  );
}
