// Deployments, live from the watch streams: expand a row for its instances; deploy, edit, scale,
// stop/start and delete.

import { ActionIcon, Alert, Button, Group, Menu, Table, Text } from "@mantine/core";
import { modals } from "@mantine/modals";
import { notifications } from "@mantine/notifications";
import { IconChevronDown, IconChevronRight, IconDots } from "@tabler/icons-react";
import { Fragment, useEffect, useRef, useState } from "react";
import { del, messageOf } from "../../api/client";
import { useGet, usePoll, useWatchList } from "../../api/hooks";
import type { BackendListItem, ListResponse, Model, ModelInstance } from "../../api/types";
import { Page } from "../../components/Page";
import { StateBadge } from "../../components/StateBadge";
import { ltr } from "../../format";
import { putReplicas } from "./actions";
import { backendText, failureKey, failureText, freshFailures } from "./failures";
import { queuedOf, scalingText } from "./scaling";
import { sourceText } from "./spec";
import { DeployForm } from "./DeployForm";
import { analysisText } from "./analysis";
import { InstancesTable } from "./InstancesTable";
import { LogsModal } from "./LogsModal";
import { ScaleModal } from "./ScaleModal";

type Dialog =
  | { kind: "deploy"; id: number | null }
  | { kind: "scale"; id: number }
  | { kind: "logs"; instance: ModelInstance }
  | null;

function report(action: Promise<void>) {
  action.catch((e: unknown) => notifications.show({ color: "red", title: "Failed", message: messageOf(e) }));
}

function deploymentState(m: Model, instances: ModelInstance[]): string {
  const replicas = m.replicas ?? 1;
  if (replicas === 0) return "stopped";
  if ((m.ready_replicas ?? 0) >= replicas) return "running";
  if (instances.some((i) => i.state === "error")) return "error";
  return instances[0]?.state ?? "pending";
}

function confirmDelete(m: Model) {
  modals.openConfirmModal({
    title: `Delete ${m.name}?`,
    children: <Text size="sm">The deployment and all its instances are removed.</Text>,
    labels: { confirm: "Delete", cancel: "Cancel" },
    confirmProps: { color: "red" },
    onConfirm: () => report(del(`/v2/models/${m.id}`)),
  });
}

/**
 * A notice for every run that fails while the page is open (failures already there when it opened
 * show as red badges): a deploy that cannot start says why without opening its instances.
 */
function useFailureNotices(models: Model[], instances: ModelInstance[], loaded: boolean) {
  const seen = useRef<Set<string> | null>(null);
  useEffect(() => {
    if (!loaded) return;
    const fresh = freshFailures(seen.current ?? new Set(), instances);
    if (seen.current === null) {
      seen.current = new Set(fresh.map(failureKey));
      return;
    }
    for (const i of fresh) {
      seen.current.add(failureKey(i));
      const name = models.find((m) => m.id === i.model_id)?.name ?? i.model_name;
      notifications.show({
        color: "red",
        title: `${name} failed to start`,
        message: failureText(i.state_message),
        autoClose: 15_000,
        style: { whiteSpace: "pre-wrap" },
        "data-testid": "failure-notice",
      } as Parameters<typeof notifications.show>[0]);
    }
  }, [models, instances, loaded]);
}

export function DeploymentsPage() {
  const models = useWatchList<Model>("/v2/models");
  const instances = useWatchList<ModelInstance>("/v2/model-instances");
  // Requests held until a deployment wakes are not written (so not watched): poll them.
  const polled = usePoll<ListResponse<Model>>("/v2/models?page=-1", 5_000);
  const backends = useGet<{ items: BackendListItem[] }>("/v2/inference-backends/list");
  useFailureNotices(models.items, instances.items, instances.loaded);
  const [expanded, setExpanded] = useState<Set<number>>(new Set());
  const [dialog, setDialog] = useState<Dialog>(null);
  const close = () => setDialog(null);
  // Dialogs read the live row, so a save carries the version the server has now.
  const live = (id: number | null) => models.items.find((m) => m.id === id) ?? null;
  const target = dialog && dialog.kind !== "logs" ? live(dialog.id) : null;

  const toggle = (id: number) =>
    setExpanded((prev) => {
      const next = new Set(prev);
      if (!next.delete(id)) next.add(id);
      return next;
    });

  return (
    <Page
      title="Deployments"
      actions={<Button onClick={() => setDialog({ kind: "deploy", id: null })}>Deploy model</Button>}
    >
      {(models.error ?? instances.error) && <Alert color="yellow">{models.error ?? instances.error}</Alert>}
      <Table aria-label="Deployments" highlightOnHover>
        <Table.Thead>
          <Table.Tr>
            <Table.Th w={40} />
            <Table.Th>Name</Table.Th>
            <Table.Th>State</Table.Th>
            <Table.Th>Source</Table.Th>
            <Table.Th>Backend</Table.Th>
            <Table.Th>Replicas</Table.Th>
            <Table.Th>Actions</Table.Th>
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {models.items.map((m) => {
            const mine = instances.items.filter((i) => i.model_id === m.id);
            const open = expanded.has(m.id);
            const scaling = scalingText(m, queuedOf(polled, m.id));
            const analysis = analysisText(m);
            return (
              <Fragment key={m.id}>
                <Table.Tr data-deployment={m.name}>
                  <Table.Td>
                    <ActionIcon
                      variant="subtle"
                      aria-expanded={open}
                      aria-label={`${open ? "Hide" : "Show"} instances of ${m.name}`}
                      onClick={() => toggle(m.id)}
                    >
                      {open ? <IconChevronDown size={16} /> : <IconChevronRight size={16} />}
                    </ActionIcon>
                  </Table.Td>
                  <Table.Td>{m.name}</Table.Td>
                  <Table.Td>
                    <StateBadge state={deploymentState(m, mine)} />
                  </Table.Td>
                  <Table.Td>
                    {/* Cut at the start: the file name at the end is what tells models apart. */}
                    <Text
                      size="sm"
                      maw={{ base: 220, xl: 320 }}
                      truncate="start"
                      title={sourceText(m)}
                      data-testid="source"
                    >
                      {ltr(sourceText(m))}
                    </Text>
                    {analysis && (
                      <Text
                        size="xs"
                        c={analysis.problem ? "yellow.8" : "dimmed"}
                        maw={{ base: 220, xl: 320 }}
                        truncate="end"
                        title={analysis.text}
                        data-testid="analysis"
                      >
                        {analysis.text}
                      </Text>
                    )}
                  </Table.Td>
                  <Table.Td data-testid="backend">{backendText(m, backends.data?.items ?? [])}</Table.Td>
                  <Table.Td data-testid="replicas" title={m.scaling_message ?? undefined}>
                    {m.ready_replicas} / {m.replicas}
                    {scaling && (
                      <Text size="xs" c="dimmed" data-testid="autoscaling">
                        {scaling}
                      </Text>
                    )}
                  </Table.Td>
                  <Table.Td>
                    <Group gap="xs">
                      {m.replicas === 0 ? (
                        <Button size="xs" variant="light" onClick={() => report(putReplicas(m, 1))}>
                          Start
                        </Button>
                      ) : (
                        <Button size="xs" variant="light" onClick={() => report(putReplicas(m, 0))}>
                          Stop
                        </Button>
                      )}
                      <Menu position="bottom-end">
                        <Menu.Target>
                          <ActionIcon variant="subtle" aria-label={`More actions for ${m.name}`}>
                            <IconDots size={16} />
                          </ActionIcon>
                        </Menu.Target>
                        <Menu.Dropdown>
                          <Menu.Item onClick={() => setDialog({ kind: "deploy", id: m.id })}>Edit</Menu.Item>
                          <Menu.Item onClick={() => setDialog({ kind: "scale", id: m.id })}>Scale</Menu.Item>
                          <Menu.Item color="red" onClick={() => confirmDelete(m)}>
                            Delete
                          </Menu.Item>
                        </Menu.Dropdown>
                      </Menu>
                    </Group>
                  </Table.Td>
                </Table.Tr>
                {open && (
                  <Table.Tr>
                    <Table.Td colSpan={7} bg="gray.0">
                      <InstancesTable
                        instances={mine}
                        specDigest={m.spec_digest}
                        onLogs={(instance) => setDialog({ kind: "logs", instance })}
                      />
                    </Table.Td>
                  </Table.Tr>
                )}
              </Fragment>
            );
          })}
        </Table.Tbody>
      </Table>
      {models.loaded && models.items.length === 0 && <Text c="dimmed">Nothing deployed yet.</Text>}
      {dialog?.kind === "deploy" && <DeployForm editing={target} onClose={close} />}
      {dialog?.kind === "scale" && target && <ScaleModal model={target} onClose={close} />}
      {dialog?.kind === "logs" && <LogsModal instance={dialog.instance} onClose={close} />}
    </Page>
  );
}
