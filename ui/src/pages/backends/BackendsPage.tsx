// Inference backends as cards, in three groups: built-in, community (enable to use), custom.

import { Badge, Button, Card, Group, Menu, SimpleGrid, Stack, Text, Title } from "@mantine/core";
import { modals } from "@mantine/modals";
import { notifications } from "@mantine/notifications";
import { useState } from "react";
import { del, messageOf, send } from "../../api/client";
import { useWatchList } from "../../api/hooks";
import type { BackendSource, InferenceBackend } from "../../api/types";
import { Page } from "../../components/Page";
import { BackendForm } from "./BackendForm";
import { VersionsModal } from "./VersionsModal";
import { YamlModal } from "./YamlModal";
import { WHOLE_LABEL } from "../../components/StateBadge";

type Dialog =
  | { kind: "form"; backend: InferenceBackend | null }
  | { kind: "yaml"; backend: InferenceBackend | null }
  | { kind: "versions"; backend: InferenceBackend }
  | null;

const GROUPS: { source: BackendSource; title: string; hint: string }[] = [
  {
    source: "built_in",
    title: "Built-in",
    hint: "Maintained with Ferrostack; add your own versions, disable if unused.",
  },
  { source: "community", title: "Community", hint: "From the community catalog: enable one to deploy with it." },
  { source: "custom", title: "Custom", hint: "Your own backends (names end with -custom)." },
];

function act(action: Promise<unknown>, done: string) {
  action
    .then(() => notifications.show({ color: "green", message: done }))
    .catch((e: unknown) => notifications.show({ color: "red", title: "Refused", message: messageOf(e) }));
}

function confirmDelete(b: InferenceBackend) {
  modals.openConfirmModal({
    title: `Delete ${b.backend_name}?`,
    children: <Text size="sm">Deployments still using it must be scaled to 0 or deleted first.</Text>,
    labels: { confirm: "Delete", cancel: "Cancel" },
    confirmProps: { color: "red" },
    onConfirm: () => act(del(`/v2/inference-backends/${b.id}`), `Deleted ${b.backend_name}`),
  });
}

function BackendCard({ b, open }: { b: InferenceBackend; open: (d: Dialog) => void }) {
  const versions = Object.keys(b.version_configs ?? {});
  const toggle = b.enabled ? "disable" : "enable";
  return (
    <Card withBorder data-backend={b.backend_name} component="article" aria-label={b.backend_name}>
      <Stack gap="xs" h="100%">
        <Group justify="space-between" wrap="nowrap">
          <Title order={4}>{b.backend_name}</Title>
          <Badge
            color={b.enabled ? "green" : "gray"}
            styles={WHOLE_LABEL}
            data-state={b.enabled ? "enabled" : "disabled"}
          >
            {b.enabled ? "enabled" : "disabled"}
          </Badge>
        </Group>
        <Text size="sm" c="dimmed" style={{ flexGrow: 1 }}>
          {b.description ?? "No description."}
        </Text>
        <Text size="xs">
          {versions.length} version{versions.length === 1 ? "" : "s"}, default {b.default_version ?? "–"}
        </Text>
        <Group gap="xs">
          <Button
            size="xs"
            variant={b.enabled ? "default" : "filled"}
            onClick={() =>
              act(send(`/v2/inference-backends/${b.id}/${toggle}`, { method: "POST" }), `${b.backend_name}: ${toggle}d`)
            }
          >
            {b.enabled ? "Disable" : "Enable"}
          </Button>
          <Button size="xs" variant="light" onClick={() => open({ kind: "versions", backend: b })}>
            Versions
          </Button>
          <Menu position="bottom-end">
            <Menu.Target>
              <Button size="xs" variant="subtle" aria-label={`More actions for ${b.backend_name}`}>
                More
              </Button>
            </Menu.Target>
            <Menu.Dropdown>
              <Menu.Item onClick={() => open({ kind: "form", backend: b })}>Edit</Menu.Item>
              <Menu.Item onClick={() => open({ kind: "yaml", backend: b })}>Edit YAML</Menu.Item>
              <Menu.Item color="red" disabled={b.backend_source !== "custom"} onClick={() => confirmDelete(b)}>
                Delete
              </Menu.Item>
            </Menu.Dropdown>
          </Menu>
        </Group>
      </Stack>
    </Card>
  );
}

export function BackendsPage() {
  const backends = useWatchList<InferenceBackend>("/v2/inference-backends");
  const [dialog, setDialog] = useState<Dialog>(null);
  const close = () => setDialog(null);

  return (
    <Page
      title="Inference backends"
      actions={
        <>
          <Button variant="default" onClick={() => setDialog({ kind: "yaml", backend: null })}>
            Import YAML
          </Button>
          <Button onClick={() => setDialog({ kind: "form", backend: null })}>Add backend</Button>
        </>
      }
    >
      {GROUPS.map((g) => {
        const items = backends.items.filter((b) => b.backend_source === g.source);
        return (
          <section key={g.source} aria-labelledby={`group-${g.source}`}>
            <Title order={3} id={`group-${g.source}`}>
              {g.title}
            </Title>
            <Text size="sm" c="dimmed" mb="sm">
              {g.hint}
            </Text>
            <SimpleGrid cols={{ base: 1, sm: 2, lg: 3 }}>
              {items.map((b) => (
                <BackendCard key={b.id} b={b} open={setDialog} />
              ))}
            </SimpleGrid>
            {backends.loaded && items.length === 0 && <Text c="dimmed">None.</Text>}
          </section>
        );
      })}
      {dialog?.kind === "form" && <BackendForm backend={dialog.backend} onClose={close} />}
      {dialog?.kind === "yaml" && <YamlModal backend={dialog.backend} onClose={close} />}
      {dialog?.kind === "versions" && <VersionsModal backend={dialog.backend} onClose={close} />}
    </Page>
  );
}
