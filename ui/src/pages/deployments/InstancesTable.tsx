// A deployment's instances: state and message, command as run, worker, GPUs, restarts; delete one or view its logs.

import { Badge, Button, Code, Group, Table, Text, Tooltip } from "@mantine/core";
import { modals } from "@mantine/modals";
import { notifications } from "@mantine/notifications";
import { del, messageOf } from "../../api/client";
import type { ModelInstance } from "../../api/types";
import { StateBadge } from "../../components/StateBadge";
import { shellJoin } from "./command";

interface Props {
  instances: ModelInstance[];
  onLogs: (instance: ModelInstance) => void;
  /** The deployment's current fingerprint: instances made from another run an older spec. */
  specDigest?: string | null;
}

function confirmDelete(instance: ModelInstance) {
  modals.openConfirmModal({
    title: `Delete instance ${instance.name}?`,
    children: <Text size="sm">The deployment's controller will create a replacement if replicas need it.</Text>,
    labels: { confirm: "Delete instance", cancel: "Cancel" },
    confirmProps: { color: "red" },
    onConfirm: () =>
      void del(`/v2/model-instances/${instance.id}`).catch((e: unknown) =>
        notifications.show({ color: "red", message: messageOf(e) }),
      ),
  });
}

export function InstancesTable({ instances, onLogs, specDigest }: Props) {
  if (instances.length === 0) return <Text c="dimmed">No instances (replicas 0, or not created yet).</Text>;
  return (
    <Table aria-label="Instances">
      <Table.Thead>
        <Table.Tr>
          <Table.Th>Instance</Table.Th>
          <Table.Th>State</Table.Th>
          <Table.Th>Worker</Table.Th>
          <Table.Th>GPUs</Table.Th>
          <Table.Th>Restarts</Table.Th>
          <Table.Th>Actions</Table.Th>
        </Table.Tr>
      </Table.Thead>
      <Table.Tbody>
        {instances.map((i) => (
          <Table.Tr key={i.id} data-instance={i.name}>
            <Table.Td>
              {i.name}
              {i.command && i.command.length > 0 && (
                <Code
                  block
                  fz="xs"
                  mt={4}
                  maw={520}
                  data-testid="instance-command"
                  style={{ whiteSpace: "pre-wrap", wordBreak: "break-all" }}
                >
                  {shellJoin(i.command)}
                </Code>
              )}
            </Table.Td>
            <Table.Td>
              <StateBadge state={i.state} />
              {specDigest && i.spec_hash && i.spec_hash !== specDigest && (
                <Tooltip label="Made before the last edit; it keeps its spec until replaced (edit with rolling, or delete it)">
                  <Badge ml={4} color="gray" variant="outline" data-testid="older-spec">
                    older spec
                  </Badge>
                </Tooltip>
              )}
              {i.download_progress != null && i.state === "downloading" && ` ${Math.round(i.download_progress * 100)}%`}
              {i.state === "parked" && (
                <Text size="xs" data-testid="parked">
                  {i.asleep_since ? "engine asleep" : "engine awake"}
                </Text>
              )}
              {i.state === "draining" && typeof i.in_flight === "number" && (
                <Text size="xs" data-testid="in-flight">
                  {i.in_flight} in flight
                </Text>
              )}
              {i.state_message && (
                <Text size="xs" c="dimmed" maw={360}>
                  {i.state_message}
                </Text>
              )}
            </Table.Td>
            <Table.Td>
              {i.worker_name ?? "–"}
              {i.port ? `:${i.port}` : ""}
              {(i.distributed_servers?.subordinate_workers ?? []).map((p) => (
                <Text
                  component="div"
                  size="xs"
                  key={p.worker_id}
                  data-testid="subordinate-worker"
                  title={p.state_message ?? undefined}
                >
                  + {p.worker_name ?? `worker ${p.worker_id}`} (GPU {(p.gpu_indexes ?? []).join(", ") || "–"}):{" "}
                  <StateBadge state={p.state ?? "pending"} />
                </Text>
              ))}
            </Table.Td>
            <Table.Td>
              {i.gpu_indexes?.length ? i.gpu_indexes.join(", ") : "CPU"}
              {!!i.injected_backend_parameters?.length && (
                <Tooltip label={i.injected_backend_parameters.join(" ")}>
                  <Text size="xs" c="dimmed" span>
                    {" "}
                    (+params)
                  </Text>
                </Tooltip>
              )}
            </Table.Td>
            <Table.Td>{i.restart_count}</Table.Td>
            <Table.Td>
              <Group gap="xs">
                <Button size="xs" variant="light" onClick={() => onLogs(i)}>
                  Logs
                </Button>
                <Button size="xs" variant="subtle" color="red" onClick={() => confirmDelete(i)}>
                  Delete
                </Button>
              </Group>
            </Table.Td>
          </Table.Tr>
        ))}
      </Table.Tbody>
    </Table>
  );
}
