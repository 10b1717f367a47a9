// Sign in with username and password (POST /auth/login sets the session cookie).

import { Button, Center, Paper, PasswordInput, Stack, TextInput, Title } from "@mantine/core";
import { type FormEvent, useState } from "react";
import { useLocation, useNavigate } from "react-router-dom";
import { login } from "../api/client";
import { useSubmit } from "../api/hooks";
import { FormError } from "../components/FormError";

export function LoginPage({ onLoggedIn }: { onLoggedIn: () => void }) {
  const [username, setUsername] = useState("admin");
  const [password, setPassword] = useState("");
  const { busy, formError, fieldErrors, run } = useSubmit();
  const navigate = useNavigate();
  const location = useLocation();
  const from = (location.state as { from?: string } | null)?.from ?? "/dashboard";

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (await run(() => login(username, password))) {
      navigate(from, { replace: true });
      onLoggedIn();
    }
  };

  return (
    <Center h="100vh" bg="gray.1">
      <Paper component="form" onSubmit={submit} p="xl" w={360} shadow="md" aria-labelledby="login-title">
        <Stack>
          <Title order={2} id="login-title">
            Sign in to Ferrostack
          </Title>
          <TextInput
            label="Username"
            name="username"
            autoComplete="username"
            required
            value={username}
            error={fieldErrors.username}
            onChange={(e) => setUsername(e.currentTarget.value)}
          />
          <PasswordInput
            label="Password"
            name="password"
            autoComplete="current-password"
            required
            autoFocus
            value={password}
            error={fieldErrors.password}
            onChange={(e) => setPassword(e.currentTarget.value)}
          />
          <FormError message={formError} />
          <Button type="submit" loading={busy}>
            Sign in
          </Button>
        </Stack>
      </Paper>
    </Center>
  );
}
