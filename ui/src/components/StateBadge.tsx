import { Badge } from "@mantine/core";
import { stateColor } from "../format";

export function StateBadge({ state }: { state: string }) {
  return (
    <Badge color={stateColor(state)} variant="light" data-state={state}>
      {state.replace("_", " ")}
    </Badge>
  );
}
