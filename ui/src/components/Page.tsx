// A page's title row (heading plus actions) and its body.

import { Group, Stack, Title } from "@mantine/core";
import type { ReactNode } from "react";

export function Page({ title, actions, children }: { title: string; actions?: ReactNode; children: ReactNode }) {
  return (
    <Stack gap="md">
      <Group justify="space-between">
        <Title order={2}>{title}</Title>
        {actions && <Group>{actions}</Group>}
      </Group>
      {children}
    </Stack>
  );
}
