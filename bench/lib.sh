# bench/lib.sh - sourced by the benchmarks (autoscale, drain, gateway, prefix-routing): the binary, free ports, a
# `ferrostack start` on loopback with its embedded process worker, an admin session, a JSON reader.
# The sourcing script sets WORK (a temp dir it removes) and stops SERVER_PID on exit.

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# json EXPR: evaluates EXPR with d = the JSON document on stdin, and prints it.
json() { python3 -c "import json,sys;d=json.load(sys.stdin);print($1)"; }

# free_range N: the first of N free ports in a row (the worker hands its engines ports from a range).
free_range() { python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
def free(p):
    s = socket.socket()
    try:
        s.bind(("0.0.0.0", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    b = random.randrange(20000, 60000)
    if all(free(p) for p in range(b, b + n)):
        print(b); break
PY
}

# start_server N [more `ferrostack start` flags]: the server on a free port with a worker named bench and
# N engine ports from RANGE; waits until healthy and logs in as admin (cookie jar $WORK/jar, COOKIE).
# Sets PORT, RANGE, API, SERVER_PID, COOKIE.
start_server() {
  local n="$1"
  shift
  PORT=$(free_port)
  RANGE=$(free_range "$n")
  "$BIN" start --data-dir "$WORK/data" --host 127.0.0.1 --port "$PORT" --bootstrap-password bench-password \
    --runtime process --advertise-address 127.0.0.1 --port-range "$RANGE-$((RANGE + n - 1))" --worker-name bench \
    --heartbeat-interval 5 "$@" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$WORK/server.log" >&2; echo "the server exited" >&2; exit 1; }
    sleep 0.05
  done
  API="http://127.0.0.1:$PORT"
  curl -sf -c "$WORK/jar" -d 'username=admin&password=bench-password' "$API/auth/login" >/dev/null
  COOKIE=$(sed 's/^#HttpOnly_//' "$WORK/jar" | awk '!/^#/ && NF >= 7 {printf "%s%s=%s", sep, $6, $7; sep="; "}')
}

# bench_binary: builds ferrostack for PROFILE (release unless PROFILE=debug, which reuses the test
# build) and sets BIN.
bench_binary() {
  PROFILE="${PROFILE:-release}"
  if [ "$PROFILE" = release ]; then cargo build --release --quiet --bin ferrostack; else cargo build --quiet --bin ferrostack; fi
  BIN="$PWD/target/$PROFILE/ferrostack"
}

# llama_backend NAME "ENGINE ARGS": registers NAME, a host-process backend that runs $LLAMA_SERVER
# (scripts/setup-llm.sh) with ENGINE ARGS, through the logged-in session. Needs start_server first.
llama_backend() {
  local body
  body=$(python3 - "$LLAMA_SERVER" "$1" "$2" <<'PY'
import json, sys
print(json.dumps({"content": f"""backend_name: {sys.argv[2]}
default_version: cpu
default_run_command: "-m {{{{model_path}}}} --host 127.0.0.1 --port {{{{port}}}} --alias {{{{model_name}}}} {sys.argv[3]}"
health_check_path: /v1/models
parameter_format: space
version_configs:
  cpu:
    image_name: ghcr.io/ggml-org/llama.cpp:server
    entrypoint: {sys.argv[1]}
    custom_framework: cpu
"""}))
PY
)
  curl -sS --fail-with-body -b "$WORK/jar" -H 'content-type: application/json' -d "$body" \
    "$API/v2/inference-backends/from-yaml" >"$WORK/backend.json" || { cat "$WORK/backend.json" >&2; exit 1; }
}
