#!/usr/bin/env bash
# Gateway benchmark: added latency (p50, p99) and throughput ratio of POST /v1/chat/completions
# through the gateway vs straight to the upstream, at several concurrency levels (wrk), and the
# time to first streamed byte added (examples/bench_ttfb.rs). The upstream is a fast stub
# (examples/stub_upstream.rs) deployed as a custom backend on a real `ferrostack start`
# (SQLite, process runtime, free ports), so the gateway path is the production one: API key
# auth, route lookup, balancing, proxying, usage accounting.
# A second table repeats the comparison against the same stub with a service time (--delay-ms,
# default 20 ms: a very fast model), where the upstream, not the CPU, bounds throughput.
# Usage: bench/gateway.sh [SECONDS] [DELAY_MS]   (default 10 s per run, 20 ms; builds release; needs `wrk`)
# Prints markdown tables; docs/benchmarks.md keeps the latest results.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
DURATION="${1:-10}"
DELAY_MS="${2:-20}"
cargo build --release --quiet --bin ferrostack --example stub_upstream --example bench_ttfb --example bare_proxy
BIN="$PWD/target/release/ferrostack"
STUB="$PWD/target/release/examples/stub_upstream"
TTFB="$PWD/target/release/examples/bench_ttfb"
BARE="$PWD/target/release/examples/bare_proxy"
WORK="$(mktemp -d)"
SERVER_PID=
STUB_PID=
BARE_PID=
cleanup() {
  if [ -n "$BARE_PID" ]; then kill "$BARE_PID" 2>/dev/null || true; fi
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  # The worker stops its instances on shutdown; this is in case it could not.
  if [ -n "$STUB_PID" ]; then kill "$STUB_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
. bench/lib.sh
start_server 4
post() { curl -sf -b "$WORK/jar" -H 'content-type: application/json' -d "$2" "$API$1"; }

# The stub as a custom backend; the deployment's "model file" is any existing file.
BACKEND=$(python3 - "$STUB" <<'PY'
import json, sys
print(json.dumps({"content": f"""backend_name: stub-custom
default_version: v1
default_run_command: "--host 127.0.0.1 --port {{{{port}}}}"
health_check_path: /health
parameter_format: space
version_configs:
  v1:
    image_name: stub-upstream:local
    entrypoint: {sys.argv[1]}
    custom_framework: cpu
"""}))
PY
)
post /v2/inference-backends/from-yaml "$BACKEND" >/dev/null
post /v2/models "{\"name\":\"stub\",\"source\":\"local_path\",\"local_path\":\"$STUB\",\"backend\":\"stub-custom\"}" >/dev/null
post /v2/models "{\"name\":\"slow\",\"source\":\"local_path\",\"local_path\":\"$STUB\",\"backend\":\"stub-custom\",\"backend_parameters\":[\"--delay-ms $DELAY_MS\"]}" >/dev/null
KEY=$(post /v2/api-keys '{"name":"bench","scope":["inference"]}' | json 'd["value"]')
for _ in $(seq 1 600); do
  ready=$(curl -sf -b "$WORK/jar" "$API/v2/model-routes" | json 'sorted(r["ready_targets"] for r in d["items"] if r["name"] in ("stub","slow"))')
  [ "$ready" = "[1, 1]" ] && break
  sleep 0.1
done
[ "$ready" = "[1, 1]" ] || { echo "the stub deployments never became ready" >&2; cat "$WORK/server.log" >&2; exit 1; }
instance() { curl -sf -b "$WORK/jar" "$API/v2/model-instances" | json "[(i['port'], i['pid']) for i in d['items'] if i['state']=='running' and i['model_name']=='$1'][0]"; }
read -r UPSTREAM_PORT STUB_PID < <(instance stub | tr -d '(),')
read -r SLOW_PORT _ < <(instance slow | tr -d '(),')
DIRECT="http://127.0.0.1:$UPSTREAM_PORT"
SLOW="http://127.0.0.1:$SLOW_PORT"
# Both paths must answer the same request successfully before anything is measured.
BODY='{"model":"stub","messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":8}'
curl -sf -H 'content-type: application/json' -d "$BODY" "$DIRECT/v1/chat/completions" >/dev/null
curl -sf -H 'content-type: application/json' -H "Authorization: Bearer $KEY" -d "$BODY" "$API/v1/chat/completions" >/dev/null

lua() { cat <<LUA
wrk.method = "POST"
wrk.body = '$1'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
LUA
}
lua "$BODY" >"$WORK/post.lua"
lua "${BODY/\"stub\"/\"slow\"}" >"$WORK/slow.lua"
# Prints "requests/s p50_us p99_us errors".
load() {
  local script=$1 c=$2 url=$3; shift 3
  local t=$(( c < 2 ? 1 : 2 ))
  wrk -t"$t" -c"$c" -d2s -s "$script" "$@" "$url/v1/chat/completions" >/dev/null
  wrk -t"$t" -c"$c" -d"${DURATION}s" --latency -s "$script" "$@" "$url/v1/chat/completions" |
    awk '$1=="RESULT" {printf "%.0f %d %d %d\n", $2 / ($3 / 1e6), $4, $5, $6}'
}
# One table: direct vs a proxy (the gateway, or the bare proxy), alternating per concurrency level.
table() {
  local script=$1 direct=$2 via=$3 name=$4; shift 4
  echo "| concurrency | direct req/s | $name req/s | ratio | direct p50 | $name p50 | added p50 | direct p99 | $name p99 | added p99 | errors |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for c in "$@"; do
    read -r drps dp50 dp99 derr < <(load "$script" "$c" "$direct")
    read -r grps gp50 gp99 gerr < <(load "$script" "$c" "$via" -H "Authorization: Bearer $KEY")
    python3 - "$c" "$drps" "$dp50" "$dp99" "$derr" "$grps" "$gp50" "$gp99" "$gerr" <<'PY'
import sys
c, drps, dp50, dp99, derr, grps, gp50, gp99, gerr = map(int, sys.argv[1:])
ms = lambda us: f"{us / 1000:.3f} ms"
add = lambda us: f"{us / 1000:+.3f} ms"
print(f"| {c} | {drps} | {grps} | {grps / drps * 100:.0f} % | {ms(dp50)} | {ms(gp50)} | {add(gp50 - dp50)} "
      f"| {ms(dp99)} | {ms(gp99)} | {add(gp99 - dp99)} | {derr} / {gerr} |")
PY
  done
}
echo "Gateway at $API, upstream stub at $DIRECT; wrk ${DURATION} s per run; $(nproc) cores shared by wrk, gateway and stub."
echo
table "$WORK/post.lua" "$DIRECT" "$API" gateway 1 8 32 64
echo
echo "The floor for any proxy here: a bare hyper proxy (examples/bare_proxy.rs) in front of the same stub:"
echo
BARE_PORT=$(free_port)
"$BARE" --port "$BARE_PORT" --upstream "$DIRECT" 2>/dev/null &
BARE_PID=$!
until curl -sf "http://127.0.0.1:$BARE_PORT/health" >/dev/null; do sleep 0.05; done
table "$WORK/post.lua" "$DIRECT" "http://127.0.0.1:$BARE_PORT" "bare proxy" 1 8 32 64
kill "$BARE_PID"; BARE_PID=
echo
echo "The same stub answering after ${DELAY_MS} ms (a very fast model):"
echo
table "$WORK/slow.lua" "$SLOW" "$API" gateway 16 64 256
echo
"$TTFB" "$DIRECT" "$API" "$KEY" 200
echo
echo "Server RSS after the runs: $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' "/proc/$SERVER_PID/status")"
