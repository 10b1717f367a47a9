// Counts of workers, GPUs, deployments and instances, GPU memory per worker, the deployments' states,
// and the last 31 days of token usage (GET /v2/dashboard).

import { Anchor, Card, Group, SimpleGrid, Stack, Table, Text, Title } from "@mantine/core";
import { Link } from "react-router-dom";
import { Bar, BarChart, CartesianGrid, Legend, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { useGet, useWatchList } from "../api/hooks";
import type { Model, ModelInstance, Worker } from "../api/types";
import { Page } from "../components/Page";
import { StateBadge } from "../components/StateBadge";
import { gib } from "../format";
import { compact, fillDays, lastDays, type UsageDay } from "./usage";

/**
 * What the GPU count is made of: simulated GPUs (a worker's --simulate-gpus, for planning and tests)
 * schedule like real ones but run nothing on a GPU; "none detected" says why a CPU cluster has 0.
 */
export function simulatedDetail(total: number, simulated: number): string {
  if (total === 0) return "none detected: models run on CPU";
  if (simulated === 0) return "all detected on the workers";
  if (simulated === total) return "all simulated (--simulate-gpus): planning only, nothing runs on them";
  return `${simulated} of them simulated (--simulate-gpus)`;
}

function Stat({ label, value, detail }: { label: string; value: number; detail?: string }) {
  return (
    <Card withBorder role="group" aria-label={label}>
      <Text size="sm" c="dimmed">
        {label}
      </Text>
      <Text fz={32} fw={700}>
        {value}
      </Text>
      {detail && (
        <Text size="xs" c="dimmed">
          {detail}
        </Text>
      )}
    </Card>
  );
}

function GpuMemoryChart({ workers }: { workers: Worker[] }) {
  const data = workers.map((w) => {
    const gpus = w.status?.gpu_devices ?? [];
    const total = gpus.reduce((s, g) => s + g.memory_total, 0);
    const used = gpus.reduce((s, g) => s + g.memory_used, 0);
    return { worker: w.name, used: gib(used), free: gib(total - used) };
  });
  if (data.every((d) => d.used === 0 && d.free === 0)) {
    return <Text c="dimmed">No GPUs reported yet (CPU-only workers, or none joined).</Text>;
  }
  return (
    <div
      role="img"
      aria-label={`GPU memory per worker: ${data.map((d) => `${d.worker} ${d.used} of ${d.used + d.free} GiB used`).join("; ")}`}
    >
      <ResponsiveContainer width="100%" height={260}>
        <BarChart data={data}>
          <CartesianGrid strokeDasharray="3 3" />
          <XAxis dataKey="worker" />
          <YAxis unit=" GiB" width={70} interval={0} />
          <Tooltip />
          <Legend />
          <Bar dataKey="used" stackId="m" name="Used (GiB)" fill="#e8590c" />
          <Bar dataKey="free" stackId="m" name="Free (GiB)" fill="#ced4da" />
        </BarChart>
      </ResponsiveContainer>
    </div>
  );
}

/** Tokens per day over the last 31 days, from the dashboard's summary (the caller's own for non-admins). */
function UsageChart() {
  const dashboard = useGet<{ usage: UsageDay[] }>("/v2/dashboard");
  if (dashboard.error) return <Text c="dimmed">Usage unavailable: {dashboard.error.message}</Text>;
  if (!dashboard.data) return null;
  const days = fillDays(dashboard.data.usage, lastDays(31));
  const prompt = days.reduce((s, d) => s + d.prompt, 0);
  const completion = days.reduce((s, d) => s + d.completion, 0);
  const requests = days.reduce((s, d) => s + d.requests, 0);
  if (requests === 0) return <Text c="dimmed">No requests through the gateway in the last 31 days.</Text>;
  return (
    <div
      role="img"
      aria-label={`Tokens per day, last 31 days: ${requests} requests, ${prompt} prompt and ${completion} completion tokens`}
    >
      <ResponsiveContainer width="100%" height={200}>
        <BarChart data={days}>
          <CartesianGrid strokeDasharray="3 3" />
          <XAxis dataKey="date" />
          <YAxis width={60} interval={0} allowDecimals={false} tickFormatter={(v: number) => compact(v)} />
          <Tooltip />
          <Legend />
          <Bar dataKey="prompt" stackId="t" name="Prompt tokens" fill="#e8590c" isAnimationActive={false} />
          <Bar dataKey="completion" stackId="t" name="Completion tokens" fill="#1c7ed6" isAnimationActive={false} />
        </BarChart>
      </ResponsiveContainer>
    </div>
  );
}

export function DashboardPage() {
  const workers = useWatchList<Worker>("/v2/workers");
  const models = useWatchList<Model>("/v2/models");
  const instances = useWatchList<ModelInstance>("/v2/model-instances");
  const gpus = workers.items.flatMap((w) => w.status?.gpu_devices ?? []);
  const ready = workers.items.filter((w) => w.state === "ready").length;
  const running = instances.items.filter((i) => i.state === "running").length;

  return (
    <Page title="Dashboard">
      <SimpleGrid cols={{ base: 2, md: 4 }}>
        <Stat label="Workers" value={workers.items.length} detail={`${ready} ready`} />
        <Stat
          label="GPUs"
          value={gpus.length}
          detail={simulatedDetail(gpus.length, gpus.filter((g) => g.simulated).length)}
        />
        <Stat label="Deployments" value={models.items.length} />
        <Stat label="Instances" value={instances.items.length} detail={`${running} running`} />
      </SimpleGrid>
      <Card withBorder>
        <Stack>
          <Title order={3} size="h4">
            GPU memory per worker
          </Title>
          <GpuMemoryChart workers={workers.items} />
        </Stack>
      </Card>
      <Card withBorder>
        <Stack>
          <Group justify="space-between">
            <Title order={3} size="h4">
              Tokens, last 31 days
            </Title>
            <Anchor component={Link} to="/usage" size="sm">
              Usage by model and key
            </Anchor>
          </Group>
          <UsageChart />
        </Stack>
      </Card>
      <Card withBorder>
        <Title order={3} size="h4" mb="sm">
          Active deployments
        </Title>
        <Table>
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Name</Table.Th>
              <Table.Th>Backend</Table.Th>
              <Table.Th>Replicas (ready / wanted)</Table.Th>
              <Table.Th>Instances</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {models.items.map((m) => (
              <Table.Tr key={m.id}>
                <Table.Td>{m.name}</Table.Td>
                <Table.Td>{m.backend}</Table.Td>
                <Table.Td>
                  {m.ready_replicas} / {m.replicas}
                </Table.Td>
                <Table.Td>
                  <Group gap={4}>
                    {instances.items
                      .filter((i) => i.model_id === m.id)
                      .map((i) => (
                        <StateBadge key={i.id} state={i.state} />
                      ))}
                  </Group>
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
        {models.loaded && models.items.length === 0 && <Text c="dimmed">No deployments yet.</Text>}
      </Card>
    </Page>
  );
}
