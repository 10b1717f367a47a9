// A backend's versions: the catalog's built-in ones (with their frameworks) and the operator's own.

import { Badge, Modal, Table } from "@mantine/core";
import type { InferenceBackend } from "../../api/types";

export function VersionsModal({ backend, onClose }: { backend: InferenceBackend; onClose: () => void }) {
  const versions = Object.entries(backend.version_configs ?? {});
  return (
    <Modal opened onClose={onClose} size="lg" title={`Versions of ${backend.backend_name}`}>
      <Table aria-label="Versions">
        <Table.Thead>
          <Table.Tr>
            <Table.Th>Version</Table.Th>
            <Table.Th>Kind</Table.Th>
            <Table.Th>Frameworks</Table.Th>
            <Table.Th>Image</Table.Th>
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {versions.map(([name, v]) => (
            <Table.Tr key={name}>
              <Table.Td>
                {name} {name === backend.default_version && <Badge size="xs">default</Badge>}
              </Table.Td>
              <Table.Td>{v.built_in_frameworks?.length ? "built-in" : "custom"}</Table.Td>
              <Table.Td>
                {(v.built_in_frameworks?.length ? v.built_in_frameworks : [v.custom_framework]).join(", ")}
              </Table.Td>
              <Table.Td>{v.image_name ?? "(catalog image)"}</Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
    </Modal>
  );
}
