import { describe, expect, it } from "vitest";
import { bytes, formatPairs, gib, parsePairs, stateColor, when } from "./format";

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
    expect(stateColor("something-new")).toBe("gray");
    expect(when(null)).toBe("–");
    expect(when("2025-03-01T00:00:00Z")).not.toBe("–");
  });
});
