#!/usr/bin/env bash
# Prefix-aware routing benchmark with real llama.cpp: 3 replicas of SmolLM2-135M behind a real
# `ferrostack start` (SQLite, process runtime), streamed chat completions with Poisson arrivals
# (bench/prefix_routing.py), the route's `load_balancing` switched between runs:
#   shared  — TENANTS tenants, each a ~PREFIX-word system prompt, plus a short question;
#             prefix_aware, least_outstanding, round_robin, and an oracle (tenant t sent straight to
#             replica t mod 3: the hit rate of a perfect router);
#   unique  — every request its own system prompt of the same length (no prefix to share).
# Each run salts its prompts, so every run starts with caches that have never seen them.
# Reported per run: TTFT p50/p90 (first content byte), throughput, prefix-hit rate (cached prompt
# tokens / prompt tokens, from llama.cpp's usage.prompt_tokens_details.cached_tokens) and requests
# per replica (llama.cpp /metrics).
# Usage: bench/prefix-routing.sh   (env: TENANTS=16 PREFIX=500 RATE=0.8 DURATION=90 URATE=0.25
#        UDURATION=60 DRAIN=90 CACHE_RAM=64 (MiB of llama.cpp's host prompt cache per replica;
#        -1 = llama.cpp's default) NP=2 (slots per replica) CTX=4096 (per replica, all slots)
#        PROFILE=release|debug SHARED_POLICIES="prefix_aware least_outstanding round_robin"
#        UNIQUE_POLICIES=(the same; empty skips a workload) ORACLE=1)
# Needs scripts/setup-llm.sh (LLAMA_SERVER, SMOLLM2_GGUF). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
TENANTS="${TENANTS:-16}"
PREFIX="${PREFIX:-500}"
RATE="${RATE:-0.8}"
DURATION="${DURATION:-90}"
URATE="${URATE:-0.25}"
UDURATION="${UDURATION:-60}"
DRAIN="${DRAIN:-90}"
CACHE_RAM="${CACHE_RAM:-64}"
NP="${NP:-2}"
CTX="${CTX:-4096}"
# Which policies run on each workload, and whether the oracle runs (a shorter bench).
SHARED_POLICIES="${SHARED_POLICIES-prefix_aware least_outstanding round_robin}"
UNIQUE_POLICIES="${UNIQUE_POLICIES-prefix_aware least_outstanding round_robin}"
ORACLE="${ORACLE:-1}"
set -a; eval "$(scripts/setup-llm.sh)"; set +a
# PROFILE=debug reuses the test build: the engines' seconds of prefill dwarf the gateway's cost.
. bench/lib.sh
bench_binary
WORK="$(mktemp -d)"
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
start_server 4
call() { curl -sf -b "$WORK/jar" -H 'content-type: application/json' -X "$1" -d "$3" "$API$2"; }
get() { curl -sf -b "$WORK/jar" "$API$1"; }

CACHE_FLAG=""
[ "$CACHE_RAM" != "-1" ] && CACHE_FLAG="--cache-ram $CACHE_RAM"
llama_backend llama-bench-custom "-c $CTX -t 1 -np $NP --metrics $CACHE_FLAG"
call POST /v2/models "{\"name\":\"smol\",\"source\":\"local_path\",\"local_path\":\"$SMOLLM2_GGUF\",\"backend\":\"llama-bench-custom\",\"replicas\":3}" >/dev/null
KEY=$(call POST /v2/api-keys '{"name":"bench","scope":["inference"]}' | json 'd["value"]')
running=0
for _ in $(seq 1 600); do
  running=$(get /v2/model-instances | json 'sum(1 for i in d["items"] if i["state"]=="running")')
  [ "$running" = 3 ] && break
  sleep 0.2
done
[ "$running" = 3 ] || { echo "3 replicas never ran" >&2; tail -50 "$WORK/server.log" >&2; exit 1; }
PORTS=$(get /v2/model-instances | json '",".join(str(i["port"]) for i in sorted(d["items"], key=lambda i: i["id"]))')
ROUTE=$(get /v2/model-routes | json '[r["id"] for r in d["items"] if r["name"]=="smol"][0]')
for _ in $(seq 1 100); do
  curl -sf -H "Authorization: Bearer $KEY" "$API/v1/models" | grep -q '"smol"' && break
  sleep 0.2
done

policy() {
  call PUT "/v2/model-routes/$ROUTE" "{\"name\":\"smol\",\"load_balancing\":\"$1\"}" >/dev/null
  sleep 1 # the snapshot carrying the new policy
}
RUN=0
run() { # label workload rate duration [--oracle]
  RUN=$((RUN + 1))
  python3 bench/prefix_routing.py --gateway "127.0.0.1:$PORT" --key "$KEY" --ports "$PORTS" --label "$1" \
    --workload "$2" --rate "$3" --duration "$4" --drain "$DRAIN" --tenants "$TENANTS" --prefix "$PREFIX" \
    --salt "run$RUN-$$" --seed 7 ${5:-} | tee -a "$WORK/results.jsonl" >&2
}
for p in $SHARED_POLICIES; do
  policy "$p"
  run "$p" shared "$RATE" "$DURATION"
done
[ "$ORACLE" = 1 ] && run oracle shared "$RATE" "$DURATION" --oracle
for p in $UNIQUE_POLICIES; do
  policy "$p"
  run "$p" unique "$URATE" "$UDURATION"
done

echo
echo "3 × SmolLM2-135M Q4_1 (llama.cpp, -t 1 -np $NP -c $CTX, host prompt cache ${CACHE_RAM} MiB), $(nproc) cores shared by all;"
echo "shared: $TENANTS tenants × ~$PREFIX-word prefix, $RATE req/s × ${DURATION}s; unique: $URATE req/s × ${UDURATION}s; max_tokens 4"
echo
python3 - "$WORK/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
f = lambda x, d=2: "-" if x is None else f"{x:.{d}f}"
print("| workload | policy | ok / sent | TTFT p50 s | TTFT p90 s | throughput req/s | prefix-hit rate | misses | prefill tokens (work) | requests per replica | skew (max/mean) | load avg start → end |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['workload']} | {r['label']} | {r['ok']} / {r['sent']} | {f(r['ttft_p50'])} | {f(r['ttft_p90'])} | "
          f"{f(r['throughput'])} | {r['hit_rate']*100:.0f} % | {r.get('misses', '-')} | {sum(r['prefill_tokens'])} | {' / '.join(map(str, r['per_replica']))} | "
          f"{f(r['skew'])} | {r['loadavg'][0]:.1f} → {r['loadavg'][1]:.1f} |")
PY
