// An instance's log: the last lines, and with "Follow" the stream as it grows (logs?tail&follow).
// An instance that has not started an engine yet has no log: the view says why instead.

import { Alert, Group, Modal, NumberInput, Switch } from "@mantine/core";
import { useEffect, useRef, useState } from "react";
import { messageOf, send } from "../../api/client";
import type { ModelInstance } from "../../api/types";

/** Why an instance has no log yet, from its state; null when it has started an engine. */
export function noLogReason(instance: ModelInstance): string | null {
  const first = instance.state_message?.split("\n")[0]?.replace(/\.$/, "");
  const why = first ? `: ${first}` : "";
  switch (instance.state) {
    case "pending":
      return `Not placed on a worker yet${why || " (the scheduler is looking for room)"}.`;
    case "analyzing":
    case "scheduled":
    case "initializing":
      return `Placed on ${instance.worker_name ?? "a worker"}, not started yet${why}. The log begins when the engine starts.`;
    case "downloading":
      return `Downloading the model (${Math.round((instance.download_progress ?? 0) * 100)} %). The log begins when the engine starts.`;
    case "error":
      return `Failed${why || " before its engine wrote anything"}.`;
    default:
      return null;
  }
}

export function LogsModal({ instance, onClose }: { instance: ModelInstance; onClose: () => void }) {
  const [follow, setFollow] = useState(true);
  const [tail, setTail] = useState(200);
  const [text, setText] = useState("");
  const [error, setError] = useState<string | null>(null);
  const view = useRef<HTMLPreElement>(null);

  useEffect(() => {
    const abort = new AbortController();
    setText("");
    setError(null);
    (async () => {
      const res = await send(`/v2/model-instances/${instance.id}/logs?tail=${tail}&follow=${follow}`, {
        signal: abort.signal,
      });
      const reader = res.body?.getReader();
      if (!reader) return;
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        setText((t) => t + decoder.decode(value, { stream: true }));
      }
    })().catch((e: unknown) => {
      if (!abort.signal.aborted) setError(messageOf(e));
    });
    return () => abort.abort();
  }, [instance.id, follow, tail]);

  useEffect(() => {
    if (follow && view.current) view.current.scrollTop = view.current.scrollHeight;
  }, [text, follow]);

  return (
    <Modal opened onClose={onClose} size="90%" title={`Logs of ${instance.name}`}>
      <Group mb="sm">
        <Switch label="Follow" checked={follow} onChange={(e) => setFollow(e.currentTarget.checked)} />
        <NumberInput
          label="Last lines"
          size="xs"
          w={120}
          min={0}
          value={tail}
          onChange={(v) => setTail(typeof v === "number" ? v : 200)}
        />
      </Group>
      {error && (
        <Alert color="red" role="alert" mb="sm">
          {error}
        </Alert>
      )}
      {!text && noLogReason(instance) && (
        <Alert color="blue" mb="sm" data-testid="no-log-reason">
          {noLogReason(instance)}
        </Alert>
      )}
      <pre className="log-view" ref={view} data-testid="log-view" tabIndex={0} aria-label="Log output">
        {text}
      </pre>
    </Modal>
  );
}
