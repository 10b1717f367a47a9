// Token usage from GET /v2/usage: filters the server applies (date range, model, API key, user), a chart
// per day split by model, key, user or operation, and a table of the same sums. Administrators see
// everyone's usage; other users only their own (the server enforces it).

import {
  Alert,
  Button,
  Card,
  Group,
  Loader,
  SegmentedControl,
  Select,
  SimpleGrid,
  Stack,
  Table,
  Text,
  TextInput,
  Title,
} from "@mantine/core";
import { useMemo, useState } from "react";
import { Bar, BarChart, CartesianGrid, Legend, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { useGet } from "../api/hooks";
import type { ApiKey, ListResponse, User } from "../api/types";
import { Page } from "../components/Page";
import { useSession } from "../session";
import {
  aggregate,
  compact,
  type GroupBy,
  groupLabel,
  lastDays,
  type Metric,
  type Names,
  timeSeries,
  totals,
  type UsageFilters,
  type UsageResponse,
  usagePath,
  withRowNames,
} from "./usage";

const COLORS = ["#e8590c", "#1c7ed6", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599", "#868e96"];
const RANGES = [7, 30, 90];

const GROUP_LABELS: Record<GroupBy, string> = {
  date: "Day",
  model: "Model",
  key: "API key",
  user: "User",
  operation: "Operation",
};

function Stat({ label, value }: { label: string; value: number }) {
  return (
    <Card withBorder role="group" aria-label={label} padding="sm">
      <Text size="sm" c="dimmed">
        {label}
      </Text>
      <Text fz={24} fw={700} title={value.toLocaleString()}>
        {value.toLocaleString()}
      </Text>
    </Card>
  );
}

export function UsagePage() {
  const { user } = useSession();
  const [filters, setFilters] = useState<UsageFilters>(() => ({
    ...lastDays(30),
    model: null,
    api_key_id: null,
    user_id: null,
  }));
  const [by, setBy] = useState<GroupBy>("model");
  const [metric, setMetric] = useState<Metric>("tokens");
  const usage = useGet<UsageResponse>(usagePath(filters));
  const routes = useGet<ListResponse<{ id: number; name: string }>>("/v2/model-routes?page=-1");
  const keys = useGet<ListResponse<ApiKey>>("/v2/api-keys?page=-1");
  const users = useGet<ListResponse<User>>(user.is_admin ? "/v2/users?page=-1" : null);
  const set = <K extends keyof UsageFilters>(key: K, value: UsageFilters[K]) =>
    setFilters((prev) => ({ ...prev, [key]: value }));

  const rows = usage.data?.items ?? [];
  const names: Names = useMemo(
    () =>
      withRowNames(
        {
          keys: new Map((keys.data?.items ?? []).map((k) => [k.id, k.name])),
          users: new Map(
            user.is_admin ? (users.data?.items ?? []).map((u) => [u.id, u.username]) : [[user.id, user.username]],
          ),
        },
        rows,
      ),
    [keys.data, users.data, user, rows],
  );
  const series = useMemo(() => timeSeries(rows, by, metric, filters), [rows, by, metric, filters]);
  const groups = useMemo(() => aggregate(rows, by), [rows, by]);
  const sum = totals(rows);

  const modelOptions = [
    ...new Set([...(routes.data?.items ?? []).map((r) => r.name), ...rows.map((r) => r.route_name)]),
    ...(filters.model ? [filters.model] : []),
  ]
    .filter((v, i, all) => v && all.indexOf(v) === i)
    .sort();
  const keyOptions = [
    { value: "0", label: "session (no API key)" },
    ...[...new Set([...(keys.data?.items ?? []).map((k) => k.id), ...rows.map((r) => r.api_key_id)])]
      .filter((id) => id !== 0)
      .sort((a, b) => a - b)
      .map((id) => ({ value: String(id), label: groupLabel("key", String(id), names) })),
  ];
  const userOptions = (users.data?.items ?? []).map((u) => ({ value: String(u.id), label: u.username }));
  const groupings: GroupBy[] = user.is_admin
    ? ["date", "model", "key", "user", "operation"]
    : ["date", "model", "key", "operation"];
  const seriesName = (key: string) =>
    by === "date"
      ? ({ prompt: "Prompt tokens", completion: "Completion tokens", requests: "Requests" }[key] ?? key)
      : groupLabel(by, key, names);
  const dateError = usage.error?.field === "start_date" || usage.error?.field === "end_date" ? usage.error : null;

  return (
    <Page title="Usage">
      <Card withBorder>
        <form aria-label="Usage filters" onSubmit={(e) => e.preventDefault()}>
          <Stack gap="sm">
            <Group align="flex-end" wrap="wrap">
              <TextInput
                type="date"
                label="From"
                name="start_date"
                value={filters.start_date}
                max={filters.end_date || undefined}
                error={usage.error?.field === "start_date" ? usage.error.message : undefined}
                onChange={(e) => set("start_date", e.currentTarget.value)}
              />
              <TextInput
                type="date"
                label="To"
                name="end_date"
                value={filters.end_date}
                min={filters.start_date || undefined}
                error={usage.error?.field === "end_date" ? usage.error.message : undefined}
                onChange={(e) => set("end_date", e.currentTarget.value)}
              />
              <Group gap="xs" role="group" aria-label="Quick date ranges">
                {RANGES.map((days) => (
                  <Button
                    key={days}
                    variant="default"
                    size="sm"
                    onClick={() => setFilters((p) => ({ ...p, ...lastDays(days) }))}
                  >
                    Last {days} days
                  </Button>
                ))}
              </Group>
            </Group>
            <Group align="flex-end" wrap="wrap">
              <Select
                label="Model"
                placeholder="All models"
                clearable
                searchable
                data={modelOptions}
                value={filters.model}
                onChange={(v) => set("model", v)}
              />
              <Select
                label="API key"
                placeholder="All keys"
                clearable
                data={keyOptions}
                value={filters.api_key_id === null ? null : String(filters.api_key_id)}
                onChange={(v) => set("api_key_id", v === null ? null : Number(v))}
              />
              {user.is_admin && (
                <Select
                  label="User"
                  placeholder="All users"
                  clearable
                  searchable
                  data={userOptions}
                  value={filters.user_id === null ? null : String(filters.user_id)}
                  onChange={(v) => set("user_id", v === null ? null : Number(v))}
                />
              )}
            </Group>
          </Stack>
        </form>
      </Card>

      {usage.error && !dateError && (
        <Alert color="red" role="alert" title="Usage could not be loaded">
          {usage.error.message}
        </Alert>
      )}

      <SimpleGrid cols={{ base: 2, md: 4 }}>
        <Stat label="Requests" value={sum.requests} />
        <Stat label="Prompt tokens" value={sum.prompt} />
        <Stat label="Completion tokens" value={sum.completion} />
        <Stat label="Total tokens" value={sum.total} />
      </SimpleGrid>

      <Card withBorder>
        <Stack>
          <Group justify="space-between" wrap="wrap">
            <Title order={3} size="h4">
              {metric === "tokens" ? "Tokens" : "Requests"} per day
            </Title>
            <Group>
              <SegmentedControl
                aria-label="Split by"
                value={by}
                onChange={(v) => setBy(v as GroupBy)}
                data={groupings.map((g) => ({ value: g, label: GROUP_LABELS[g] }))}
              />
              <SegmentedControl
                aria-label="Measure"
                value={metric}
                onChange={(v) => setMetric(v as Metric)}
                data={[
                  { value: "tokens", label: "Tokens" },
                  { value: "requests", label: "Requests" },
                ]}
              />
            </Group>
          </Group>
          {usage.loading && !usage.data ? (
            <Loader aria-label="Loading usage" />
          ) : rows.length === 0 ? (
            <Text c="dimmed" data-testid="usage-empty">
              No requests recorded for these filters. Calls through the /v1 gateway (API keys or the playground) appear
              here, counted per day (UTC).
            </Text>
          ) : (
            <div
              role="img"
              aria-label={`${metric === "tokens" ? "Tokens" : "Requests"} per day from ${filters.start_date || "the first day"} to ${
                filters.end_date || "today"
              }, by ${by === "date" ? "prompt and completion" : GROUP_LABELS[by].toLowerCase()}: ${groups
                .slice(0, 6)
                .map(
                  (g) =>
                    `${by === "date" ? g.key : groupLabel(by, g.key, names)} ${metric === "tokens" ? g.total : g.requests}`,
                )
                .join("; ")}`}
            >
              <ResponsiveContainer width="100%" height={280}>
                <BarChart data={series.data}>
                  <CartesianGrid strokeDasharray="3 3" />
                  <XAxis dataKey="date" />
                  <YAxis width={60} interval={0} allowDecimals={false} tickFormatter={(v: number) => compact(v)} />
                  <Tooltip formatter={(v, name) => [Number(v).toLocaleString(), String(name)]} />
                  <Legend />
                  {series.keys.map((k, i) => (
                    <Bar
                      key={k}
                      dataKey={k}
                      stackId="u"
                      name={seriesName(k)}
                      fill={COLORS[i % COLORS.length]}
                      isAnimationActive={false}
                    />
                  ))}
                </BarChart>
              </ResponsiveContainer>
            </div>
          )}
        </Stack>
      </Card>

      {rows.length > 0 && (
        <Card withBorder>
          <Table aria-label={`Usage by ${GROUP_LABELS[by].toLowerCase()}`} data-testid="usage-table" striped>
            <Table.Thead>
              <Table.Tr>
                <Table.Th scope="col">{by === "date" ? "Day" : GROUP_LABELS[by]}</Table.Th>
                <Table.Th scope="col" ta="right">
                  Requests
                </Table.Th>
                <Table.Th scope="col" ta="right">
                  Prompt tokens
                </Table.Th>
                <Table.Th scope="col" ta="right">
                  Completion tokens
                </Table.Th>
                <Table.Th scope="col" ta="right">
                  Total tokens
                </Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {groups.map((g) => (
                <Table.Tr key={g.key} data-group={g.key}>
                  <Table.Th scope="row" fw={400}>
                    {groupLabel(by, g.key, names)}
                  </Table.Th>
                  <Table.Td ta="right">{g.requests.toLocaleString()}</Table.Td>
                  <Table.Td ta="right">{g.prompt.toLocaleString()}</Table.Td>
                  <Table.Td ta="right">{g.completion.toLocaleString()}</Table.Td>
                  <Table.Td ta="right">{g.total.toLocaleString()}</Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
            <Table.Tfoot>
              <Table.Tr>
                <Table.Th scope="row">Total</Table.Th>
                <Table.Th ta="right">{sum.requests.toLocaleString()}</Table.Th>
                <Table.Th ta="right">{sum.prompt.toLocaleString()}</Table.Th>
                <Table.Th ta="right">{sum.completion.toLocaleString()}</Table.Th>
                <Table.Th ta="right">{sum.total.toLocaleString()}</Table.Th>
              </Table.Tr>
            </Table.Tfoot>
          </Table>
        </Card>
      )}
    </Page>
  );
}
