// Chat with a deployed model, streamed token by token; parameters on the side.

import {
  Alert,
  Button,
  Grid,
  Group,
  NumberInput,
  Paper,
  ScrollArea,
  Select,
  Slider,
  Stack,
  Text,
  Textarea,
} from "@mantine/core";
import { type FormEvent, useRef, useState } from "react";
import { messageOf } from "../../api/client";
import { CodeView } from "./CodeView";
import { type ChatMessage, type ChatParams, chatBody, streamChat } from "./openai";

export function Chat({ models }: { models: string[] }) {
  const [params, setParams] = useState<ChatParams>({ model: "", temperature: 0.7, max_tokens: 256, system: "" });
  const [history, setHistory] = useState<ChatMessage[]>([]);
  const [input, setInput] = useState("");
  const [answer, setAnswer] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [showCode, setShowCode] = useState(false);
  const abort = useRef<AbortController | null>(null);
  const model = params.model || models[0] || "";
  const set = <K extends keyof ChatParams>(k: K, v: ChatParams[K]) => setParams((p) => ({ ...p, [k]: v }));
  const pending: ChatMessage[] = input.trim() ? [...history, { role: "user", content: input }] : history;

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!input.trim() || !model) return;
    const turn = [...history, { role: "user" as const, content: input }];
    setHistory(turn);
    setInput("");
    setError(null);
    setAnswer("");
    const controller = new AbortController();
    abort.current = controller;
    let text = "";
    try {
      await streamChat(chatBody({ ...params, model }, turn), (d) => setAnswer((text += d)), controller.signal);
      setHistory([...turn, { role: "assistant", content: text }]);
    } catch (err) {
      if (!controller.signal.aborted) setError(messageOf(err));
      if (text) setHistory([...turn, { role: "assistant", content: text }]);
    } finally {
      setAnswer(null);
      abort.current = null;
    }
  };

  return (
    <Grid>
      <Grid.Col span={{ base: 12, md: 8 }}>
        <Stack>
          <ScrollArea h={420} type="auto">
            <Stack gap="xs" aria-live="polite" data-testid="chat-log">
              {history.length === 0 && answer === null && <Text c="dimmed">Send a message to start.</Text>}
              {history.map((m, i) => (
                <Paper key={i} p="sm" withBorder bg={m.role === "user" ? "gray.0" : undefined} data-role={m.role}>
                  <Text size="xs" c="dimmed">
                    {m.role}
                  </Text>
                  <Text style={{ whiteSpace: "pre-wrap" }}>{m.content}</Text>
                </Paper>
              ))}
              {answer !== null && (
                <Paper p="sm" withBorder data-role="assistant" data-streaming="true">
                  <Text size="xs" c="dimmed">
                    assistant (streaming…)
                  </Text>
                  <Text style={{ whiteSpace: "pre-wrap" }}>{answer}</Text>
                </Paper>
              )}
            </Stack>
          </ScrollArea>
          {error && (
            <Alert color="red" role="alert" title="Chat failed" data-testid="chat-error">
              {error}
            </Alert>
          )}
          <form onSubmit={submit} aria-label="Chat">
            <Stack gap="xs">
              <Textarea
                label="Message"
                name="message"
                autosize
                minRows={2}
                value={input}
                onChange={(e) => setInput(e.currentTarget.value)}
                onKeyDown={(e) => {
                  if (e.key === "Enter" && !e.shiftKey) {
                    e.preventDefault();
                    e.currentTarget.form?.requestSubmit();
                  }
                }}
              />
              <Group justify="space-between">
                <Group>
                  <Button variant="default" onClick={() => setHistory([])} disabled={answer !== null}>
                    Clear
                  </Button>
                  <Button variant="subtle" onClick={() => setShowCode(true)}>
                    View code
                  </Button>
                </Group>
                {answer !== null ? (
                  <Button color="red" onClick={() => abort.current?.abort()}>
                    Stop
                  </Button>
                ) : (
                  <Button type="submit" disabled={!model}>
                    Send
                  </Button>
                )}
              </Group>
            </Stack>
          </form>
        </Stack>
      </Grid.Col>
      <Grid.Col span={{ base: 12, md: 4 }}>
        <Stack>
          <Select
            allowDeselect={false}
            label="Model"
            data={models}
            value={model || null}
            onChange={(v) => set("model", v ?? "")}
          />
          <Textarea
            label="System prompt"
            autosize
            minRows={2}
            value={params.system}
            onChange={(e) => set("system", e.currentTarget.value)}
          />
          <div>
            <Text size="sm" id="temperature-label">
              Temperature: {params.temperature}
            </Text>
            <Slider
              min={0}
              max={2}
              step={0.1}
              value={params.temperature}
              onChange={(v) => set("temperature", v)}
              thumbProps={{ "aria-labelledby": "temperature-label" }}
            />
          </div>
          <NumberInput
            label="Max tokens"
            min={1}
            max={32768}
            value={params.max_tokens}
            onChange={(v) => set("max_tokens", typeof v === "number" ? v : 256)}
          />
        </Stack>
      </Grid.Col>
      {showCode && (
        <CodeView
          path="/v1/chat/completions"
          body={chatBody({ ...params, model }, pending)}
          onClose={() => setShowCode(false)}
        />
      )}
    </Grid>
  );
}
