// The OpenAI-compatible calls the playground makes through the /v1 gateway (session cookie).

import { ApiError, send } from "../../api/client";

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

export interface ChatParams {
  model: string;
  temperature: number;
  max_tokens: number;
  system: string;
}

export function chatBody(params: ChatParams, history: ChatMessage[]) {
  const messages = params.system.trim() ? [{ role: "system", content: params.system }, ...history] : history;
  return {
    model: params.model,
    messages,
    temperature: params.temperature,
    max_tokens: params.max_tokens,
    stream: true,
  };
}

/** A 404 from /v1 means the gateway itself is missing, not the model: say so plainly. */
function explain(e: unknown): never {
  if (e instanceof ApiError && e.code === 404 && e.reason === "NotFound" && e.message.startsWith("no route")) {
    throw new ApiError(404, "GatewayUnavailable", `The /v1 gateway is not available on this server (${e.message}).`);
  }
  throw e;
}

/** Streams a chat completion; calls `onDelta` with each piece of content as it arrives. */
export async function streamChat(body: unknown, onDelta: (text: string) => void, signal: AbortSignal): Promise<void> {
  const res = await send("/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  }).catch(explain);
  const reader = res.body?.getReader();
  if (!reader) return;
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    const events = buffer.split(/\r?\n\r?\n/);
    buffer = events.pop() ?? "";
    for (const event of events) {
      for (const line of event.split(/\r?\n/)) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data) as {
          choices?: { delta?: { content?: string | null } }[];
          error?: { message?: string };
        };
        if (chunk.error) throw new Error(chunk.error.message ?? "the model answered with an error");
        const delta = chunk.choices?.[0]?.delta?.content;
        if (delta) onDelta(delta);
      }
    }
  }
}

export interface EmbeddingResult {
  data: { index: number; embedding: number[] }[];
  usage?: { prompt_tokens: number; total_tokens: number };
}

export async function embed(model: string, input: string[]): Promise<EmbeddingResult> {
  const res = await send("/v1/embeddings", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, input }),
  }).catch(explain);
  return (await res.json()) as EmbeddingResult;
}
