import { describe, expect, it } from "vitest";
import { bytes, formatPairs, gib, ltr, parsePairs, stateColor, when, workerServerUrl } from "./format";

describe("format", () => {
  it("shows byte counts in binary units", () => {
    expect(bytes(null)).toBe("–");
    expect(bytes(undefined)).toBe("–");
    expect(bytes(512)).toBe("512 B");
    expect(bytes(1536)).toBe("1.5 KiB");
    expect(bytes(8 * 2 ** 30)).toBe("8.0 GiB");
    expect(bytes(3 * 2 ** 50)).toBe("3072.0 TiB");
    expect(gib(1.25 * 2 ** 30)).toBe(1.3);
  });

  it("reads and writes key=value lines", () => {
    expect(parsePairs(" a = 1 \n\nb=x=y\nflag\n")).toEqual({ a: "1", b: "x=y", flag: "" });
    expect(parsePairs("k: v", ":")).toEqual({ k: "v" });
    expect(formatPairs({ a: "1", b: "x=y" })).toBe("a=1\nb=x=y");
    expect(formatPairs(undefined)).toBe("");
    expect(parsePairs(formatPairs({ HF_TOKEN: "t", X: "" }))).toEqual({ HF_TOKEN: "t", X: "" });
  });

  it("colours states and shows missing times", () => {
    expect(stateColor("running")).toBe("green");
    expect(stateColor("error")).toBe("red");
    expect(stateColor("draining")).toBe("grape");
    expect(stateColor("parked")).toBe("indigo");
    expect(stateColor("something-new")).toBe("gray");
    expect(when(null)).toBe("–");
    expect(when("2025-03-01T00:00:00Z")).not.toBe("–");
  });

  it("keeps a path's slashes in place when it is cut at the start", () => {
    expect(ltr("/data/m.gguf")).toBe("\u200e/data/m.gguf\u200e");
    expect(ltr("/data/m.gguf").startsWith("\u200e/")).toBe(true);
  });

  it.each([
    ["http://10.0.0.5:8080", "http://10.0.0.5:8080", false],
    ["https://ferro.example.com", "https://ferro.example.com", false],
    ["http://127.0.0.1:8080", "http://SERVER-ADDRESS:8080", true],
    ["http://localhost:8080", "http://SERVER-ADDRESS:8080", true],
    ["http://[::1]:9000", "http://SERVER-ADDRESS:9000", true],
    ["http://localhost", "http://SERVER-ADDRESS", true],
  ])("suggests a server URL a worker can reach (%s)", (origin, url, replace) => {
    expect(workerServerUrl(origin)).toEqual({ url, replace });
  });
});
