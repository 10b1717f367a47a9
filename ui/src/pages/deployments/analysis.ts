// The line under a deployment's source that says what the server read about its model
// (`analysis`, stored once per source by the server's analysis step).
import type { Model } from "../../api/types";
import { bytes } from "../../format";

/** What the model is, or why that is not known: `null` while it is being read. */
export function analysisText(m: Pick<Model, "analysis">): { text: string; problem: boolean } | null {
  const a = m.analysis;
  if (!a) return null;
  const problems = a.problems ?? [];
  if (problems.length > 0) return { text: problems.join("; "), problem: true };
  const meta = a.model as {
    architecture?: string;
    category?: string;
    context_length?: number | null;
    weight_bytes?: number;
  };
  const parts = [
    meta.architecture || null,
    meta.category ?? null,
    meta.context_length ? `context ${meta.context_length.toLocaleString("en-US")}` : null,
    meta.weight_bytes ? `weights ${bytes(meta.weight_bytes)}` : null,
  ].filter((p): p is string => p !== null);
  return { text: parts.join(" · "), problem: false };
}
