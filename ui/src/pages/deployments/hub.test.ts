import { describe, expect, it, vi } from "vitest";
import {
  fetchJson,
  hfSearchUrl,
  hfTreeUrl,
  isRepoId,
  listGgufFiles,
  msSearchRequest,
  parseHfSearch,
  parseHfTree,
  parseMsFiles,
  parseMsSearch,
  searchModels,
  TIMEOUT_MS,
} from "./hub";

const json = (body: unknown, status = 200) =>
  Promise.resolve(new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } }));

describe("hub URLs", () => {
  it("builds the public API calls", () => {
    expect(hfSearchUrl(" qwen 3 ")).toBe("https://huggingface.co/api/models?search=qwen%203&limit=20");
    expect(hfTreeUrl("unsloth/Qwen3-0.6B-GGUF")).toBe(
      "https://huggingface.co/api/models/unsloth/Qwen3-0.6B-GGUF/tree/main?recursive=true",
    );
    const ms = msSearchRequest("qwen");
    expect(ms.init.method).toBe("PUT");
    expect(JSON.parse(String(ms.init.body))).toMatchObject({ Name: "qwen", PageSize: 20, PageNumber: 1 });
    expect(isRepoId("Qwen/Qwen3-0.6B")).toBe(true);
    expect(isRepoId("qwen")).toBe(false);
    expect(isRepoId("a/b c")).toBe(false);
  });
});

describe("hub answers", () => {
  it("reads Hugging Face search results and marks GGUF repositories", () => {
    expect(
      parseHfSearch([
        { id: "Qwen/Qwen3-0.6B", downloads: 10, tags: ["transformers"] },
        { id: "someone/tiny", downloads: 1, tags: ["gguf"] },
        { modelId: "x/y-GGUF" },
        { nothing: true },
      ]),
    ).toEqual([
      { id: "Qwen/Qwen3-0.6B", downloads: 10, gguf: false },
      { id: "someone/tiny", downloads: 1, gguf: true },
      { id: "x/y-GGUF", downloads: null, gguf: true },
    ]);
    expect(() => parseHfSearch({ error: "x" })).toThrow();
  });

  it("reads ModelScope search results", () => {
    const body = { Code: 200, Data: { Model: { Models: [{ Path: "Qwen", Name: "Qwen3-0.6B-GGUF", Downloads: 5 }] } } };
    expect(parseMsSearch(body)).toEqual([{ id: "Qwen/Qwen3-0.6B-GGUF", downloads: 5, gguf: true }]);
    expect(() => parseMsSearch({ Code: 400 })).toThrow();
  });

  it("lists only GGUF files", () => {
    expect(
      parseHfTree([
        { type: "file", path: "b-Q8_0.gguf" },
        { type: "file", path: "README.md" },
        { type: "directory", path: "sub.gguf" },
        { type: "file", path: "sub/a-Q4_K_M.GGUF" },
      ]),
    ).toEqual(["b-Q8_0.gguf", "sub/a-Q4_K_M.GGUF"]);
    expect(
      parseMsFiles({
        Data: { Files: [{ Type: "blob", Path: "m.gguf" }, { Type: "tree", Path: "d.gguf" }, { Path: "x" }] },
      }),
    ).toEqual(["m.gguf"]);
  });
});

describe("degrading without the network", () => {
  it("answers unavailable instead of throwing", async () => {
    const offline = () => Promise.reject(new TypeError("Failed to fetch"));
    expect(await searchModels("huggingface", "qwen", undefined, offline)).toEqual({
      ok: false,
      reason: "Failed to fetch",
    });
    expect(await searchModels("model_scope", "qwen", undefined, () => json({}, 403))).toEqual({
      ok: false,
      reason: "HTTP 403",
    });
    expect(await listGgufFiles("huggingface", "a/b", undefined, () => json({ unexpected: 1 }))).toEqual({
      ok: false,
      reason: "unexpected answer",
    });
  });

  it("sends no credentials and returns parsed results", async () => {
    const calls: RequestInit[] = [];
    const result = await searchModels("huggingface", "tiny", undefined, (_url, init) => {
      calls.push(init ?? {});
      return json([{ id: "a/tiny" }]);
    });
    expect(result).toEqual({ ok: true, value: [{ id: "a/tiny", downloads: null, gguf: false }] });
    expect(calls[0]?.credentials).toBe("omit");
  });

  it("gives up after the timeout and when cancelled", async () => {
    vi.useFakeTimers();
    try {
      const hang = (_url: string, init?: RequestInit) =>
        new Promise<Response>((_resolve, reject) =>
          init?.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))),
        );
      const timedOut = fetchJson("https://x", (b) => b, {}, undefined, hang);
      await vi.advanceTimersByTimeAsync(TIMEOUT_MS);
      expect(await timedOut).toEqual({ ok: false, reason: "timed out" });

      const abort = new AbortController();
      const cancelled = fetchJson("https://x", (b) => b, {}, abort.signal, hang);
      abort.abort();
      expect(await cancelled).toEqual({ ok: false, reason: "cancelled" });
    } finally {
      vi.useRealTimers();
    }
  });
});
