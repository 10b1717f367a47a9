// An instance's log: the last lines, and with "Follow" the stream as it grows (logs?tail&follow).

import { Alert, Group, Modal, NumberInput, Switch } from "@mantine/core";
import { useEffect, useRef, useState } from "react";
import { messageOf, send } from "../../api/client";
import type { ModelInstance } from "../../api/types";

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
      <pre className="log-view" ref={view} data-testid="log-view" tabIndex={0} aria-label="Log output">
        {text}
      </pre>
    </Modal>
  );
}
