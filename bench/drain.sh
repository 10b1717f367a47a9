#!/usr/bin/env bash
# Draining benchmark with real llama.cpp: 3 replicas of SmolLM2-135M behind a real `ferrostack start`
# (SQLite, process runtime); CONCURRENCY clients send chats back to back through the gateway (half
# plain, half streamed, max_tokens 8) while the deployment is scaled 3 -> 1 -> 3 ROUNDS times
# (bench/drain.py). Run twice: draining on (the deployment's drain_timeout 600 s, the default) and
# off (drain_timeout 0: the instance is deleted at once, as before draining existed and as
# GPUStack does). Prints requests answered, failures, and the time from the scale-down request to
# the moment the stopped engines have exited.
# Usage: bench/drain.sh   (env: CONCURRENCY=4 ROUNDS=3 PROFILE=release|debug)
# Needs scripts/setup-llm.sh (LLAMA_SERVER, SMOLLM2_GGUF). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY="${CONCURRENCY:-4}"
ROUNDS="${ROUNDS:-3}"
set -a; eval "$(scripts/setup-llm.sh)"; set +a
. bench/lib.sh
bench_binary
WORK="$(mktemp -d)"
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
start_server 8
call() { curl -sS --fail-with-body -b "$WORK/jar" -H 'content-type: application/json' -X "$1" -d "$3" "$API$2"; }
get() { curl -sf -b "$WORK/jar" "$API$1"; }

llama_backend llama-cpp-drain-custom "-c 2048 -t 1 -np 2"
MODEL=$(call POST /v2/models "{\"name\":\"smol\",\"source\":\"local_path\",\"local_path\":\"$SMOLLM2_GGUF\",\"backend\":\"llama-cpp-drain-custom\",\"replicas\":3}" | json 'd["id"]')
KEY=$(call POST /v2/api-keys '{"name":"bench","scope":["inference"]}' | json 'd["value"]')
drain_timeout() {
  get "/v2/models/$MODEL" | python3 -c "
import json,sys
d=json.load(sys.stdin)
for k in ('id','version','created_at','updated_at'): d.pop(k,None)
d['drain_timeout']=$1
print(json.dumps(d))" >"$WORK/spec.json"
  curl -sf -b "$WORK/jar" -H 'content-type: application/json' -X PUT --data-binary @"$WORK/spec.json" "$API/v2/models/$MODEL" >/dev/null
}
for mode in on off; do
  if [ "$mode" = on ]; then drain_timeout 600; else drain_timeout 0; fi
  python3 bench/drain.py --gateway "127.0.0.1:$PORT" --key "$KEY" --cookie "$COOKIE" --model "$MODEL" \
    --concurrency "$CONCURRENCY" --rounds "$ROUNDS" --label "$mode" | tee -a "$WORK/results.jsonl" >&2
done

echo
echo "3 × SmolLM2-135M Q4_1 (llama.cpp, -t 1 -np 2 -c 2048), $(nproc) cores shared by all; $CONCURRENCY clients"
echo "back to back (half streamed, max_tokens 8); $ROUNDS × (scale 3 → 1, wait, scale 1 → 3, wait) per row"
echo
python3 - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| draining | requests answered (plain + streamed) | failed | failures by kind | scale-down → engines stopped, s (each; median) |")
print("|---|---|---|---|---|")
for r in rows:
    kinds = ", ".join(f"{k}: {v}" for k, v in r["failures"].items()) or "-"
    each = " / ".join(f"{s:.2f}" for s in r["stopped_after"])
    med = statistics.median(r["stopped_after"])
    label = "on (drain_timeout 600)" if r["label"] == "on" else "off (drain_timeout 0)"
    print(f"| {label} | {r['plain'] + r['streamed']} ({r['plain']} + {r['streamed']}) | {r['failed']} | {kinds} | {each}; {med:.2f} |")
PY
