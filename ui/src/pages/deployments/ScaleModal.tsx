// Set a deployment's replicas (0 stops it).

import { Button, Group, Modal, NumberInput, Stack } from "@mantine/core";
import { type FormEvent, useState } from "react";
import { useSubmit } from "../../api/hooks";
import type { Model } from "../../api/types";
import { FormError } from "../../components/FormError";
import { putReplicas } from "./actions";

export function ScaleModal({ model, onClose }: { model: Model; onClose: () => void }) {
  const [replicas, setReplicas] = useState(model.replicas ?? 1);
  const { busy, fieldErrors, formError, run } = useSubmit();

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (await run(() => putReplicas(model, replicas))) onClose();
  };

  return (
    <Modal opened onClose={onClose} title={`Scale ${model.name}`}>
      <form onSubmit={submit} aria-label="Scale deployment">
        <Stack>
          <NumberInput
            label="Replicas"
            name="replicas"
            min={0}
            max={1024}
            data-autofocus
            value={replicas}
            error={fieldErrors.replicas}
            onChange={(v) => setReplicas(typeof v === "number" ? v : 0)}
          />
          <FormError message={formError} />
          <Group justify="flex-end">
            <Button type="submit" loading={busy}>
              Scale
            </Button>
          </Group>
        </Stack>
      </form>
    </Modal>
  );
}
