// Users (administrators): create, edit (name, admin, active, password), delete.

import { Badge, Button, Checkbox, Group, Modal, PasswordInput, Stack, Table, Text, TextInput } from "@mantine/core";
import { modals } from "@mantine/modals";
import { notifications } from "@mantine/notifications";
import { type FormEvent, useState } from "react";
import { del, messageOf, postJson, putJson } from "../api/client";
import { useSubmit, useWatchList } from "../api/hooks";
import type { User } from "../api/types";
import { FormError } from "../components/FormError";
import { Page } from "../components/Page";
import { when } from "../format";
import { useSession } from "../session";

function UserForm({ user, onClose }: { user: User | null; onClose: () => void }) {
  const [username, setUsername] = useState(user?.username ?? "");
  const [fullName, setFullName] = useState(user?.full_name ?? "");
  const [password, setPassword] = useState("");
  const [isAdmin, setIsAdmin] = useState(user?.is_admin ?? false);
  const [isActive, setIsActive] = useState(user?.is_active ?? true);
  const { busy, fieldErrors, formError, run } = useSubmit();

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const full_name = fullName.trim() || null;
    const ok = await run(async () => {
      if (user) {
        await putJson(`/v2/users/${user.id}`, {
          full_name,
          is_admin: isAdmin,
          is_active: isActive,
          version: user.version,
          ...(password ? { password } : {}),
        });
      } else {
        await postJson("/v2/users", {
          username: username.trim(),
          password,
          full_name,
          is_admin: isAdmin,
          is_active: isActive,
        });
      }
    });
    if (ok) onClose();
  };

  return (
    <Modal opened onClose={onClose} title={user ? `Edit ${user.username}` : "Create user"}>
      <form onSubmit={submit} aria-label="User" noValidate>
        <Stack>
          <TextInput
            label="Username"
            name="username"
            required
            disabled={user !== null}
            value={username}
            error={fieldErrors.username}
            onChange={(e) => setUsername(e.currentTarget.value)}
          />
          <TextInput
            label="Full name"
            name="full_name"
            value={fullName}
            error={fieldErrors.full_name}
            onChange={(e) => setFullName(e.currentTarget.value)}
          />
          <PasswordInput
            label={user ? "New password (optional)" : "Password"}
            name="password"
            required={user === null}
            autoComplete="new-password"
            value={password}
            error={fieldErrors.password}
            onChange={(e) => setPassword(e.currentTarget.value)}
          />
          <Checkbox label="Administrator" checked={isAdmin} onChange={(e) => setIsAdmin(e.currentTarget.checked)} />
          <Checkbox label="Active" checked={isActive} onChange={(e) => setIsActive(e.currentTarget.checked)} />
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

function confirmDelete(u: User) {
  modals.openConfirmModal({
    title: `Delete ${u.username}?`,
    children: <Text size="sm">Their sessions and API keys stop working.</Text>,
    labels: { confirm: "Delete", cancel: "Cancel" },
    confirmProps: { color: "red" },
    onConfirm: () =>
      void del(`/v2/users/${u.id}`).catch((e: unknown) => notifications.show({ color: "red", message: messageOf(e) })),
  });
}

export function UsersPage() {
  const users = useWatchList<User>("/v2/users");
  const me = useSession().user;
  const [dialog, setDialog] = useState<{ user: User | null } | null>(null);
  return (
    <Page title="Users" actions={<Button onClick={() => setDialog({ user: null })}>Create user</Button>}>
      <Table aria-label="Users">
        <Table.Thead>
          <Table.Tr>
            <Table.Th>Username</Table.Th>
            <Table.Th>Full name</Table.Th>
            <Table.Th>Role</Table.Th>
            <Table.Th>Status</Table.Th>
            <Table.Th>Created</Table.Th>
            <Table.Th>Actions</Table.Th>
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {users.items.map((u) => (
            <Table.Tr key={u.id}>
              <Table.Td>{u.username}</Table.Td>
              <Table.Td>{u.full_name ?? "–"}</Table.Td>
              <Table.Td>{u.is_admin ? <Badge>admin</Badge> : "user"}</Table.Td>
              <Table.Td>{u.is_active ? "active" : <Badge color="gray">inactive</Badge>}</Table.Td>
              <Table.Td>{when(u.created_at)}</Table.Td>
              <Table.Td>
                <Group gap="xs">
                  <Button size="xs" variant="light" onClick={() => setDialog({ user: u })}>
                    Edit
                  </Button>
                  <Button
                    size="xs"
                    variant="subtle"
                    color="red"
                    disabled={u.id === me.id}
                    onClick={() => confirmDelete(u)}
                  >
                    Delete
                  </Button>
                </Group>
              </Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
      {dialog && <UserForm user={dialog.user} onClose={() => setDialog(null)} />}
    </Page>
  );
}
