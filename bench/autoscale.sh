#!/usr/bin/env bash
# Scale-from-zero benchmark with real llama.cpp: a `ferrostack start` (SQLite, process runtime) with
# one deployment of SmolLM2-135M autoscaled with min_replicas 0 (max 2, target 20, scale-down delay
# 2 s). Per round, while it sleeps (bench/autoscale.py): the engine's own cold start (LLAMA_SERVER
# started by hand with the same flags: process start -> /v1/models answers, and -> the first byte of
# the same streamed chat); then one streamed
# request through the gateway: wake time = sent -> its first byte, next to the cold start as a ratio
# and as the overhead in seconds; the scale-up decision (sent -> replicas >= 1 in the API) and, from
# the server log, decision -> instance placed -> instance running; then, asleep again, BURST
# requests at once (half streamed): requests lost, and the first byte of the first answer.
# Usage: bench/autoscale.sh   (env: ROUNDS=3 BURST=20 PROFILE=release|debug KEEP_LOG=file: the server log)
# Needs scripts/setup-llm.sh (LLAMA_SERVER, SMOLLM2_GGUF). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-3}"
BURST="${BURST:-20}"
set -a; eval "$(scripts/setup-llm.sh)"; set +a
. bench/lib.sh
bench_binary
WORK="$(mktemp -d)"
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [ -n "${KEEP_LOG:-}" ]; then cp "$WORK/server.log" "$KEEP_LOG" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
start_server 8
call() { curl -sS --fail-with-body -b "$WORK/jar" -H 'content-type: application/json' -X "$1" -d "$3" "$API$2"; }

ENGINE_ARGS="-c 2048 -t 2 -np 2 --threads-http 24"
llama_backend llama-cpp-wake-custom "$ENGINE_ARGS"
MODEL=$(call POST /v2/models "{\"name\":\"smol\",\"source\":\"local_path\",\"local_path\":\"$SMOLLM2_GGUF\",\"backend\":\"llama-cpp-wake-custom\",\"replicas\":0,\"autoscaling\":{\"min_replicas\":0,\"max_replicas\":2,\"target_requests\":20,\"scale_down_delay_seconds\":2}}" | json 'd["id"]')
KEY=$(call POST /v2/api-keys '{"name":"bench","scope":["inference"]}' | json 'd["value"]')
python3 bench/autoscale.py --gateway "127.0.0.1:$PORT" --key "$KEY" --cookie "$COOKIE" --model-id "$MODEL" \
  --model smol --rounds "$ROUNDS" --burst "$BURST" --engine-args "$ENGINE_ARGS" --log "$WORK/server.log" | tee "$WORK/results.jsonl" >&2

echo
echo "SmolLM2-135M Q4_1 (llama.cpp $ENGINE_ARGS), $(nproc) cores; autoscaling min 0, max 2, target 20,"
echo "scale-down delay 2 s; $BURST requests at once per wake (half streamed, max_tokens 8); $PROFILE build"
echo
python3 - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| round | engine: start → healthy, s | engine: start → first byte, s | wake: request → first byte, s | ratio to healthy | overhead over healthy, s | overhead over engine's first byte, s | scale-up decision, s | decision → placed → running, s | burst: first byte, s | answered | lost |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
def row(label, c, f, w, d, stages, b, answered, lost):
    print(f"| {label} | {c:.2f} | {f:.2f} | {w:.2f} | {w / c:.2f} | {w - c:+.2f} | {w - f:+.2f} | {d:.3f} | {stages} | {b:.2f} | {answered} | {lost} |")
for r in rows:
    st = r["stages"]
    stages = f"{st.get('scheduled', float('nan')):.2f} → {st.get('running', float('nan')):.2f}"
    row(r["round"] + 1, r["engine_cold_start"], r["engine_first_byte"], r["wake_first_byte"], r["decision"], stages,
        r["burst_first_byte"], r["answered"], r["lost"])
med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
run = statistics.median(r["stages"].get("running", float("nan")) for r in rows)
row("median", med("engine_cold_start"), med("engine_first_byte"), med("wake_first_byte"), med("decision"),
    f"→ {run:.2f}", med("burst_first_byte"), sum(r["answered"] for r in rows), sum(r["lost"] for r in rows))
for r in rows:
    for e in r["errors"]:
        print(f"\nround {r['round'] + 1}: {e}")
PY
