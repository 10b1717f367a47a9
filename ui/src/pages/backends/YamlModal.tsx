// Add a backend by pasting GPUStack YAML (POST /from-yaml), or edit one as YAML (PUT /{id}/from-yaml).

import { Button, Group, Modal, Stack, Textarea } from "@mantine/core";
import { type FormEvent, useEffect, useState } from "react";
import { postJson, putJson, send } from "../../api/client";
import { useSubmit } from "../../api/hooks";
import type { InferenceBackend, InferenceBackendSaved } from "../../api/types";
import { FormError } from "../../components/FormError";
import { notifySaved } from "./notifySaved";

const EXAMPLE = `backend_name: my-backend-custom
default_version: v1
default_run_command: "-m {{model_path}} --host 0.0.0.0 --port {{port}}"
version_configs:
  v1:
    image_name: example/server:v1
    custom_framework: cpu
`;

export function YamlModal({ backend, onClose }: { backend: InferenceBackend | null; onClose: () => void }) {
  const [content, setContent] = useState(backend ? "" : EXAMPLE);
  const { busy, fieldErrors, formError, run } = useSubmit();

  useEffect(() => {
    if (!backend) return;
    void send(`/v2/inference-backends/${backend.id}/yaml`)
      .then((r) => r.text())
      .then(setContent);
  }, [backend]);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    let saved: InferenceBackendSaved | undefined;
    const ok = await run(async () => {
      saved = backend
        ? await putJson<InferenceBackendSaved>(
            `/v2/inference-backends/${backend.id}/from-yaml?version=${backend.version}`,
            { content },
          )
        : await postJson<InferenceBackendSaved>("/v2/inference-backends/from-yaml", { content });
    });
    if (ok && saved) {
      notifySaved(saved, backend ? `Saved ${backend.backend_name}` : `Imported ${saved.backend_name}`);
      onClose();
    }
  };

  const fieldError = Object.values(fieldErrors)[0];
  return (
    <Modal
      opened
      onClose={onClose}
      size="xl"
      title={backend ? `Edit ${backend.backend_name} as YAML` : "Import backend from YAML"}
    >
      <form onSubmit={submit} aria-label="Backend YAML">
        <Stack>
          <Textarea
            label="Backend YAML"
            name="content"
            autosize
            minRows={12}
            maxRows={30}
            styles={{ input: { fontFamily: "monospace" } }}
            value={content}
            error={fieldError}
            onChange={(e) => setContent(e.currentTarget.value)}
          />
          <FormError message={formError} />
          <Group justify="flex-end">
            <Button type="submit" loading={busy}>
              {backend ? "Save" : "Import"}
            </Button>
          </Group>
        </Stack>
      </form>
    </Modal>
  );
}
