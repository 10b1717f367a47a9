// Token usage per day (chart) and per model/key (table), from GET /v2/usage when the server has it.
// Rows follow GPUStack's model usage: date, model, API key, prompt/completion token counts, requests.

import { Alert, Card, Loader, Stack, Table, Text, Title } from "@mantine/core";
import { Bar, BarChart, CartesianGrid, Legend, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { useGet } from "../api/hooks";
import type { ListResponse } from "../api/types";
import { Page } from "../components/Page";

interface UsageRow {
  date: string;
  model_name?: string;
  api_key_name?: string;
  prompt_token_count: number;
  completion_token_count: number;
  request_count: number;
}

function byDay(rows: UsageRow[]) {
  const days = new Map<string, { date: string; prompt: number; completion: number }>();
  for (const r of rows) {
    const day = days.get(r.date) ?? { date: r.date, prompt: 0, completion: 0 };
    day.prompt += r.prompt_token_count;
    day.completion += r.completion_token_count;
    days.set(r.date, day);
  }
  return [...days.values()].sort((a, b) => a.date.localeCompare(b.date));
}

export function UsagePage() {
  const usage = useGet<ListResponse<UsageRow>>("/v2/usage?page=-1");

  if (usage.loading) return <Loader aria-label="Loading usage" />;
  if (usage.error?.code === 404) {
    return (
      <Page title="Usage">
        <Card withBorder data-testid="usage-empty">
          <Text>Usage metering is not available on this server yet.</Text>
          <Text size="sm" c="dimmed">
            Token and request counts per key, model and day appear here once the /v1 gateway records them.
          </Text>
        </Card>
      </Page>
    );
  }
  const rows = usage.data?.items ?? [];
  return (
    <Page title="Usage">
      {usage.error && <Alert color="red">{usage.error.message}</Alert>}
      <Card withBorder>
        <Stack>
          <Title order={4}>Tokens per day</Title>
          {rows.length === 0 ? (
            <Text c="dimmed">No requests recorded yet.</Text>
          ) : (
            <div role="img" aria-label="Prompt and completion tokens per day">
              <ResponsiveContainer width="100%" height={260}>
                <BarChart data={byDay(rows)}>
                  <CartesianGrid strokeDasharray="3 3" />
                  <XAxis dataKey="date" />
                  <YAxis width={70} />
                  <Tooltip />
                  <Legend />
                  <Bar dataKey="prompt" stackId="t" name="Prompt tokens" fill="#e8590c" />
                  <Bar dataKey="completion" stackId="t" name="Completion tokens" fill="#1c7ed6" />
                </BarChart>
              </ResponsiveContainer>
            </div>
          )}
        </Stack>
      </Card>
      <Table aria-label="Usage by day, model and key">
        <Table.Thead>
          <Table.Tr>
            <Table.Th>Date</Table.Th>
            <Table.Th>Model</Table.Th>
            <Table.Th>API key</Table.Th>
            <Table.Th>Requests</Table.Th>
            <Table.Th>Prompt tokens</Table.Th>
            <Table.Th>Completion tokens</Table.Th>
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {rows.map((r, i) => (
            <Table.Tr key={i}>
              <Table.Td>{r.date}</Table.Td>
              <Table.Td>{r.model_name ?? "–"}</Table.Td>
              <Table.Td>{r.api_key_name ?? "session"}</Table.Td>
              <Table.Td>{r.request_count}</Table.Td>
              <Table.Td>{r.prompt_token_count}</Table.Td>
              <Table.Td>{r.completion_token_count}</Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
    </Page>
  );
}
