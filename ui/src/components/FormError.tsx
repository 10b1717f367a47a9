// A form-level error (one that names no field), announced to screen readers.

import { Alert } from "@mantine/core";

export function FormError({ message }: { message: string | null }) {
  if (!message) return null;
  return (
    <Alert color="red" role="alert" title="Not saved">
      {message}
    </Alert>
  );
}
