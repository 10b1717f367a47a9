// "Fits on …" / "doesn't fit because …": asks POST /v2/model-evaluations as the form changes.

import { Alert, List, Loader, Text } from "@mantine/core";
import { useEffect, useState } from "react";
import { messageOf, postJson } from "../../api/client";
import type { EvaluationResult, ModelSpec } from "../../api/types";
import { bytes } from "../../format";

const DEBOUNCE_MS = 600;

export function CompatibilityCheck({ spec }: { spec: ModelSpec }) {
  const key = JSON.stringify(spec);
  const [result, setResult] = useState<EvaluationResult | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [checking, setChecking] = useState(false);
  const hasSource = Boolean(spec.local_path ?? spec.huggingface_repo_id ?? spec.model_scope_model_id);

  useEffect(() => {
    if (!hasSource) return;
    let live = true;
    const timer = setTimeout(() => {
      setChecking(true);
      postJson<{ results: EvaluationResult[] }>("/v2/model-evaluations", { model_specs: [JSON.parse(key)] })
        .then((r) => {
          if (!live) return;
          setResult(r.results[0] ?? null);
          setError(null);
        })
        .catch((e: unknown) => live && setError(messageOf(e)))
        .finally(() => live && setChecking(false));
    }, DEBOUNCE_MS);
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [key, hasSource]);

  if (!hasSource) return null;
  if (error)
    return (
      <Alert color="gray" title="Compatibility check unavailable">
        {error}
      </Alert>
    );
  if (!result) return checking ? <Loader size="sm" aria-label="Checking compatibility" /> : null;
  const estimate = [result.vram ? `VRAM ${bytes(result.vram)}` : null, result.ram ? `RAM ${bytes(result.ram)}` : null]
    .filter(Boolean)
    .join(", ");
  return (
    <Alert
      color={result.compatible ? "green" : "orange"}
      title={result.compatible ? "Compatible" : "Not compatible"}
      aria-live="polite"
      data-testid="compatibility"
    >
      <List size="sm">
        {result.compatibility_messages.map((m) => (
          <List.Item key={m}>{m}</List.Item>
        ))}
      </List>
      {estimate && <Text size="sm">Estimated per replica: {estimate}</Text>}
    </Alert>
  );
}
