import { Badge } from "@mantine/core";
import { stateColor } from "../format";

/** Never cut to "REA…": the badge keeps its label's width in any table cell or flex row. */
export const WHOLE_LABEL = { root: { flexShrink: 0, overflow: "visible" }, label: { overflow: "visible" } } as const;

export function StateBadge({ state }: { state: string }) {
  return (
    <Badge color={stateColor(state)} variant="light" data-state={state} styles={WHOLE_LABEL}>
      {state.replace("_", " ")}
    </Badge>
  );
}
