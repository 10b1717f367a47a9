#!/usr/bin/env bash
# Gateway benchmark: added latency (p50, p99) and throughput ratio of POST /v1/chat/completions
# through the gateway vs straight to the upstream, at several concurrency levels (wrk), and the
# time to first streamed byte added (examples/bench_ttfb.rs). The upstream is a fast stub
# (examples/stub_upstream.rs) deployed as a custom backend on a real `ferrostack start`
# (SQLite, process runtime, free ports), so the gateway path is the production one: API key
# auth, route lookup, balancing, proxying, usage accounting.
# A second table repeats the comparison against the same stub with a service time (--delay-ms,
# default 20 ms: a very fast model), where the upstream, not the CPU, bounds throughput.
# A CPU-per-request table puts the direct stub, nginx (when `nginx` is on PATH: 2 workers, upstream
# keep-alive, bench/nginx.conf.template), the bare proxy and the gateway side by side in one loop:
# req/s, p50/p99, and the CPU time (utime+stime from /proc/PID/stat) each proxy, the stub and wrk
# spent per completed request, with the gateway's and the bare proxy's ratios to nginx. The gateway
# is measured twice: through the deployment's own route (prefix_aware, the default: the prompt is
# hashed and its home kept) and through a second route to the same stub that is least_outstanding.
# PERF=1 adds a `perf record` of the gateway during one more 64-connection run, summarised by
# bench/perf_groups.py (self time per group: kernel networking, hyper, tokio, malloc, our code, ...).
# Usage: [PERF=1] [FEATURES=mimalloc] bench/gateway.sh [SECONDS] [DELAY_MS]   (default 10 s per run, 20 ms; builds release;
# needs `wrk`, optionally `nginx` and `perf`: apt-get install -y wrk nginx linux-perf)
# Prints markdown tables; docs/benchmarks.md keeps the latest results.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
DURATION="${1:-10}"
DELAY_MS="${2:-20}"
# FEATURES=mimalloc measures the gateway with that allocator (the stub, nginx and the bare proxy are unchanged).
FEATURES="${FEATURES:-}"
cargo build --release --quiet ${FEATURES:+--features "$FEATURES"} --bin ferrostack --example stub_upstream --example bench_ttfb --example bare_proxy
BIN="$PWD/target/release/ferrostack"
STUB="$PWD/target/release/examples/stub_upstream"
TTFB="$PWD/target/release/examples/bench_ttfb"
BARE="$PWD/target/release/examples/bare_proxy"
WORK="$(mktemp -d)"
SERVER_PID=
STUB_PID=
BARE_PID=
NGINX_PID=
cleanup() {
  if [ -n "$BARE_PID" ]; then kill "$BARE_PID" 2>/dev/null || true; fi
  if [ -n "$NGINX_PID" ]; then kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
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
# A second route to the same stub that balances by least outstanding requests, for the CPU table:
# the deployment's own route is prefix_aware (the default), which hashes each request's prompt.
STUB_ID=$(curl -sf -b "$WORK/jar" "$API/v2/models" | json '[m["id"] for m in d["items"] if m["name"] == "stub"][0]')
post /v2/model-routes "{\"name\":\"stub-lo\",\"load_balancing\":\"least_outstanding\",\"targets\":[{\"model_id\":$STUB_ID,\"weight\":100}]}" >/dev/null
BODY_LO="${BODY/\"stub\"/\"stub-lo\"}"
for n in $(seq 1 300); do
  curl -sf -H 'content-type: application/json' -H "Authorization: Bearer $KEY" -d "$BODY_LO" "$API/v1/chat/completions" >/dev/null && break
  [ "$n" = 300 ] && { echo "the least_outstanding route never answered" >&2; exit 1; }
  sleep 0.1
done

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
lua "$BODY_LO" >"$WORK/post-lo.lua"
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
echo

# cpu_ticks PID...: utime+stime in clock ticks of these processes (all their threads), 0 for none.
cpu_ticks() {
  local t=0 p s f
  for p in "$@"; do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    read -ra f <<<"${s##*) }"
    t=$((t + f[11] + f[12]))
  done
  echo "$t"
}
# load_cpu SCRIPT CONNS URL "PROXY PIDS" [wrk args]: like load, plus the requests completed and the
# CPU ticks the proxy's processes and the stub spent during the measured run, and wrk's own user+sys
# seconds. Prints "requests/s p50_us p99_us errors requests proxy_ticks stub_ticks wrk_cpu_s".
load_cpu() {
  local script=$1 c=$2 url=$3 pids=$4; shift 4
  local t=$(( c < 2 ? 1 : 2 )) p0 s0 p1 s1 TIMEFORMAT='%U %S'
  wrk -t"$t" -c"$c" -d2s -s "$script" "$@" "$url/v1/chat/completions" >/dev/null
  # shellcheck disable=SC2086 # a list of pids
  p0=$(cpu_ticks $pids); s0=$(cpu_ticks "$STUB_PID")
  { time wrk -t"$t" -c"$c" -d"${DURATION}s" --latency -s "$script" "$@" "$url/v1/chat/completions" \
      >"$WORK/wrk.out" 2>"$WORK/wrk.err"; } 2>"$WORK/wrk.time"
  # shellcheck disable=SC2086
  p1=$(cpu_ticks $pids); s1=$(cpu_ticks "$STUB_PID")
  echo "$(awk '$1=="RESULT" {printf "%.0f %d %d %d %d", $2 / ($3 / 1e6), $4, $5, $6, $2}' "$WORK/wrk.out")" \
    "$((p1 - p0)) $((s1 - s0)) $(awk '{print $1 + $2}' "$WORK/wrk.time")"
}
# cpu_table CONNS...: every target at each level in turn (direct, nginx, bare proxy, gateway), the
# same body and key header for all; one markdown table, ratios against nginx in the same level.
cpu_table() {
  local c target name url pids script
  echo "| conns | target | req/s | p50 | p99 | proxy CPU ms/req | stub CPU ms/req | wrk CPU ms/req | req/s vs nginx | CPU/req vs nginx | errors |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for c in "$@"; do
    : >"$WORK/level.txt"
    for target in "${TARGETS[@]}"; do
      IFS='|' read -r name url pids script <<<"$target"
      echo "$name|$c|$(load_cpu "${script:-$WORK/post.lua}" "$c" "$url" "$pids" -H "Authorization: Bearer $KEY")" >>"$WORK/level.txt"
    done
    python3 - "$CLK_TCK" "$WORK/level.txt" <<'PY'
import sys
tick_ms = 1000 / int(sys.argv[1])
rows = []
for line in open(sys.argv[2]):
    name, c, rest = line.rstrip("\n").split("|")
    f = rest.split()
    rps, p50, p99, err, reqs, pt, st = map(int, f[:7])
    wrk_s = float(f[7])
    cpu = pt * tick_ms / reqs if name != "direct" and reqs else None
    rows.append((name, c, rps, p50, p99, err, cpu, st * tick_ms / reqs, wrk_s * 1000 / reqs))
ngx = next((r for r in rows if r[0] == "nginx"), None)
for name, c, rps, p50, p99, err, cpu, stub, wrk in rows:
    vs_rps = vs_cpu = "—"
    if ngx and name != "direct":
        vs_rps = f"{rps / ngx[2]:.2f}"
        vs_cpu = f"{cpu / ngx[6]:.2f}" if cpu and ngx[6] else "—"
    cpu_s = f"{cpu:.4f}" if cpu is not None else "—"
    print(f"| {c} | {name} | {rps} | {p50 / 1000:.3f} ms | {p99 / 1000:.3f} ms | {cpu_s} | {stub:.4f} | {wrk:.4f} "
          f"| {vs_rps} | {vs_cpu} | {err} |")
PY
  done
}
CLK_TCK=$(getconf CLK_TCK)
TARGETS=("direct|$DIRECT|")
if command -v nginx >/dev/null; then
  NGINX_PORT=$(free_port)
  sed -e "s|@WORK@|$WORK|g" -e "s|@PORT@|$NGINX_PORT|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" \
    bench/nginx.conf.template >"$WORK/nginx.conf"
  nginx -e "$WORK/nginx-error.log" -p "$WORK" -c "$WORK/nginx.conf" 2>>"$WORK/nginx-error.log" &
  NGINX_PID=$!
  until curl -sf -H 'content-type: application/json' -d "$BODY" "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" >/dev/null; do
    kill -0 "$NGINX_PID" 2>/dev/null || { cat "$WORK/nginx-error.log" >&2; echo "nginx exited" >&2; exit 1; }
    sleep 0.05
  done
  sleep 0.2
  NGINX_PIDS="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
  TARGETS+=("nginx|http://127.0.0.1:$NGINX_PORT|$NGINX_PIDS")
  echo "CPU per request, side by side: $(nginx -v 2>&1 | sed 's|.*: ||') (master + $(pgrep -cP "$NGINX_PID") workers, upstream keep-alive 64), the bare proxy and the gateway:"
else
  echo "CPU per request, side by side (nginx is not on PATH, so no nginx rows: apt-get install -y nginx):"
fi
TARGETS+=("bare proxy|http://127.0.0.1:$BARE_PORT|$BARE_PID" "gateway|$API|$SERVER_PID"
  "gateway, least_outstanding|$API|$SERVER_PID|$WORK/post-lo.lua")
echo
cpu_table 1 8 32 64
echo
echo "CPU ms/req: utime+stime of the proxy's processes (nginx master + workers; the bare proxy; the whole"
echo "ferrostack server) during the measured run ÷ requests completed; clock tick $(awk -v t="$CLK_TCK" 'BEGIN {print 1000 / t}') ms."
if [ -n "$NGINX_PID" ]; then kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true; NGINX_PID=; fi
kill "$BARE_PID"; BARE_PID=
echo
echo "The same stub answering after ${DELAY_MS} ms (a very fast model):"
echo
table "$WORK/slow.lua" "$SLOW" "$API" gateway 16 64 256
echo
"$TTFB" "$DIRECT" "$API" "$KEY" 200
echo
echo "Server RSS after the runs: $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' "/proc/$SERVER_PID/status")"

if [ "${PERF:-0}" = 1 ]; then
  echo
  if ! command -v perf >/dev/null; then
    echo "PERF=1 but perf is not on PATH (apt-get install -y linux-perf): no profile."
  else
    wrk -t2 -c64 -d2s -s "$WORK/post.lua" -H "Authorization: Bearer $KEY" "$API/v1/chat/completions" >/dev/null
    perf record -F 997 -p "$SERVER_PID" -o "$WORK/perf.data" -- sleep "$((DURATION + 1))" >"$WORK/perf.log" 2>&1 &
    PERF_PID=$!
    sleep 0.3
    p0=$(cpu_ticks "$SERVER_PID")
    wrk -t2 -c64 -d"${DURATION}s" -s "$WORK/post.lua" -H "Authorization: Bearer $KEY" "$API/v1/chat/completions" >"$WORK/wrk.out"
    p1=$(cpu_ticks "$SERVER_PID")
    if wait "$PERF_PID" && [ -s "$WORK/perf.data" ]; then
      read -r reqs rps < <(awk '$1=="RESULT" {printf "%d %.0f\n", $2, $2 / ($3 / 1e6)}' "$WORK/wrk.out")
      echo "Profile of the gateway process (perf record -F 997 -p, self time, no call graphs) during a 64-connection"
      echo "run of $DURATION s: $rps req/s, $(python3 -c "print(f'{($p1 - $p0) * 1000 / $CLK_TCK / $reqs:.4f}')") ms CPU/request under perf."
      echo
      perf script -i "$WORK/perf.data" -F ip,sym,dso 2>/dev/null | python3 bench/perf_groups.py 20
    else
      echo "perf record failed: $(tail -n 3 "$WORK/perf.log" | tr '\n' ' ')"
    fi
  fi
fi
