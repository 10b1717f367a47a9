import { describe, expect, it } from "vitest";
import type { Model } from "../../api/types";
import { analysisText } from "./analysis";

const at = "2026-12-06T00:00:00Z";
const analyzed = (model: object, problems: string[] = []): Pick<Model, "analysis"> => ({
  analysis: { source_digest: "d", analyzed_at: at, model: model as Record<string, never>, problems },
});

describe("the analysis line", () => {
  it.each([
    ["not read yet", { analysis: null }, null],
    [
      "read",
      analyzed({ architecture: "LlamaForCausalLM", category: "llm", context_length: 8192, weight_bytes: 3 << 29 }),
      { text: "LlamaForCausalLM · llm · context 8,192 · weights 1.5 GiB", problem: false },
    ],
    [
      "little known",
      analyzed({ architecture: "", category: "llm", context_length: null }),
      { text: "llm", problem: false },
    ],
    [
      "read with problems",
      analyzed({ category: "llm" }, ["cannot read the model's metadata: hub unreachable"]),
      { text: "cannot read the model's metadata: hub unreachable", problem: true },
    ],
  ])("%s", (_what, m, expected) => {
    expect(analysisText(m as Pick<Model, "analysis">)).toEqual(expected);
  });
});
