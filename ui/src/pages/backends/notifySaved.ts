// Says a backend was saved, and shows each warning the server answered with (a version whose engine
// answers anyone on the worker's network without a key) until the operator dismisses it.

import { notifications } from "@mantine/notifications";
import type { InferenceBackendSaved } from "../../api/types";

export function notifySaved(saved: InferenceBackendSaved, message: string): void {
  notifications.show({ color: "green", message });
  for (const warning of saved.warnings ?? []) {
    notifications.show({
      color: "yellow",
      title: `${saved.backend_name}: open to the worker's network`,
      message: warning,
      autoClose: false,
      closeButtonProps: { "aria-label": "Dismiss warning" },
    });
  }
}
