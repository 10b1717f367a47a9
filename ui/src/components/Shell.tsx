// The frame around every signed-in page: navigation, the user menu, a skip link for keyboards.

import { AppShell, Burger, Button, Group, NavLink, Text, Title } from "@mantine/core";
import { useDisclosure } from "@mantine/hooks";
import type { ReactNode } from "react";
import { NavLink as RouterLink, useLocation } from "react-router-dom";
import { useSession } from "../session";

const PAGES = [
  { to: "/dashboard", label: "Dashboard" },
  { to: "/deployments", label: "Deployments" },
  { to: "/routes", label: "Routes" },
  { to: "/backends", label: "Inference backends" },
  { to: "/workers", label: "Workers & GPUs" },
  { to: "/playground", label: "Playground" },
  { to: "/api-keys", label: "API keys" },
  { to: "/users", label: "Users", admin: true },
  { to: "/usage", label: "Usage" },
];

export function Shell({ children }: { children: ReactNode }) {
  const { user, signOut } = useSession();
  const [opened, { toggle, close }] = useDisclosure();
  const location = useLocation();

  return (
    <AppShell
      header={{ height: 56 }}
      navbar={{ width: 220, breakpoint: "sm", collapsed: { mobile: !opened } }}
      padding="md"
    >
      <a href="#main" className="skip-link">
        Skip to content
      </a>
      <AppShell.Header>
        <Group h="100%" px="md" justify="space-between">
          <Group>
            <Burger opened={opened} onClick={toggle} hiddenFrom="sm" size="sm" aria-label="Toggle navigation" />
            <Title order={3} c="orange.8">
              Ferrostack
            </Title>
          </Group>
          <Group>
            <Text size="sm" aria-label="Signed in as">
              {user.username}
            </Text>
            <Button variant="subtle" size="xs" onClick={signOut}>
              Sign out
            </Button>
          </Group>
        </Group>
      </AppShell.Header>
      <AppShell.Navbar p="xs" component="nav" aria-label="Main">
        {PAGES.filter((p) => !p.admin || user.is_admin).map((p) => (
          <NavLink
            key={p.to}
            component={RouterLink}
            to={p.to}
            label={p.label}
            active={location.pathname.startsWith(p.to)}
            onClick={close}
          />
        ))}
      </AppShell.Navbar>
      <AppShell.Main id="main" tabIndex={-1}>
        {children}
      </AppShell.Main>
    </AppShell>
  );
}
