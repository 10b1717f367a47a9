// The caller's API keys: create (the secret is shown once), list, revoke.

import {
  Alert,
  Button,
  Code,
  CopyButton,
  Group,
  Modal,
  MultiSelect,
  NumberInput,
  Stack,
  Table,
  Text,
  TextInput,
} from "@mantine/core";
import { modals } from "@mantine/modals";
import { notifications } from "@mantine/notifications";
import { type FormEvent, useState } from "react";
import { del, messageOf, postJson } from "../api/client";
import { useSubmit, useWatchList } from "../api/hooks";
import type { ApiKey, Scope } from "../api/types";
import { FormError } from "../components/FormError";
import { Page } from "../components/Page";
import { when } from "../format";

function CreateKey({ onClose }: { onClose: () => void }) {
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [scope, setScope] = useState<Scope[]>(["*"]);
  const [days, setDays] = useState<number | "">("");
  const [secret, setSecret] = useState<string | null>(null);
  const { busy, fieldErrors, formError, run } = useSubmit();

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    await run(async () => {
      const body = {
        name: name.trim(),
        description: description.trim() || null,
        scope,
        expires_in: days === "" ? null : days * 86400,
      };
      const created = await postJson<{ value: string }>("/v2/api-keys", body);
      setSecret(created.value);
    });
  };

  if (secret) {
    return (
      <Modal opened onClose={onClose} title="API key created">
        <Stack>
          <Alert color="yellow">Copy the key now: it is not shown again.</Alert>
          <Code block data-testid="api-key-secret">
            {secret}
          </Code>
          <Group justify="flex-end">
            <CopyButton value={secret}>
              {({ copied, copy }) => <Button onClick={copy}>{copied ? "Copied" : "Copy"}</Button>}
            </CopyButton>
            <Button variant="default" onClick={onClose}>
              Done
            </Button>
          </Group>
        </Stack>
      </Modal>
    );
  }
  return (
    <Modal opened onClose={onClose} title="Create API key">
      <form onSubmit={submit} aria-label="Create API key" noValidate>
        <Stack>
          <TextInput
            label="Name"
            name="name"
            required
            data-autofocus
            value={name}
            error={fieldErrors.name}
            onChange={(e) => setName(e.currentTarget.value)}
          />
          <TextInput
            label="Description"
            name="description"
            value={description}
            error={fieldErrors.description}
            onChange={(e) => setDescription(e.currentTarget.value)}
          />
          <MultiSelect
            label="Scope"
            name="scope"
            data={[
              { value: "*", label: "Everything" },
              { value: "management", label: "Management API" },
              { value: "inference", label: "Inference (/v1)" },
            ]}
            value={scope}
            error={fieldErrors.scope}
            onChange={(v) => setScope(v as Scope[])}
          />
          <NumberInput
            label="Expires after (days)"
            description="Empty: never"
            name="expires_in"
            min={1}
            value={days}
            error={fieldErrors.expires_in}
            onChange={(v) => setDays(typeof v === "number" ? v : "")}
          />
          <FormError message={formError} />
          <Group justify="flex-end">
            <Button type="submit" loading={busy}>
              Create
            </Button>
          </Group>
        </Stack>
      </form>
    </Modal>
  );
}

function confirmRevoke(k: ApiKey) {
  modals.openConfirmModal({
    title: `Revoke ${k.name}?`,
    children: <Text size="sm">Clients using this key stop working at once.</Text>,
    labels: { confirm: "Revoke", cancel: "Cancel" },
    confirmProps: { color: "red" },
    onConfirm: () =>
      void del(`/v2/api-keys/${k.id}`).catch((e: unknown) =>
        notifications.show({ color: "red", message: messageOf(e) }),
      ),
  });
}

export function ApiKeysPage() {
  const keys = useWatchList<ApiKey>("/v2/api-keys");
  const [creating, setCreating] = useState(false);
  return (
    <Page title="API keys" actions={<Button onClick={() => setCreating(true)}>Create API key</Button>}>
      <Table aria-label="API keys">
        <Table.Thead>
          <Table.Tr>
            <Table.Th>Name</Table.Th>
            <Table.Th>Key</Table.Th>
            <Table.Th>Scope</Table.Th>
            <Table.Th>Expires</Table.Th>
            <Table.Th>Created</Table.Th>
            <Table.Th>Actions</Table.Th>
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {keys.items.map((k) => (
            <Table.Tr key={k.id}>
              <Table.Td>
                {k.name}
                {k.description && (
                  <Text size="xs" c="dimmed">
                    {k.description}
                  </Text>
                )}
              </Table.Td>
              <Table.Td>
                <Code>{k.masked_value}</Code>
              </Table.Td>
              <Table.Td>{k.scope.join(", ")}</Table.Td>
              <Table.Td>{k.expires_at ? when(k.expires_at) : "never"}</Table.Td>
              <Table.Td>{when(k.created_at)}</Table.Td>
              <Table.Td>
                <Button size="xs" variant="subtle" color="red" onClick={() => confirmRevoke(k)}>
                  Revoke
                </Button>
              </Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
      {keys.loaded && keys.items.length === 0 && <Text c="dimmed">No API keys yet.</Text>}
      {creating && <CreateKey onClose={() => setCreating(false)} />}
    </Page>
  );
}
