#!/usr/bin/env bash
# ui-e2e.sh - the web UI's browser test (ui/e2e/flow.mjs) against a real server and a real llama.cpp model.
#
# Usage: scripts/ui-e2e.sh
#   Runs the UI's unit tests (scripts/build-ui.sh --test), then the browser test.
#   Installs what it needs when missing (Debian's chromium via apt, ui/node_modules via npm ci),
#   prepares llama.cpp and SmolLM2 (scripts/setup-llm.sh), starts `ferrostack start` on a free port with a
#   temp data dir, the process runtime and a worker on 127.0.0.1 with one simulated GPU (2 GB of it in use
#   outside the cluster: the GPU view shows it beside the claims), and drives: log in, import a backend by YAML, deploy SmolLM2 by
#   local path (with an invalid name first: the field message shows, the form keeps its input), watch it
#   reach running, chat in the playground (streamed), view the instance's logs, scale to 0, delete.
#   Screenshots of each page go to artifacts/ui/.
# Env: FERROSTACK_BIN (default: the binary `cargo test` builds, built now if it is not), CHROMIUM (default /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd -P)"

log() { echo "ui-e2e: $*" >&2; }

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
    log "installing Debian's chromium"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

# The UI's unit tests first (seconds; also installs ui/node_modules when missing).
scripts/build-ui.sh --test

if [ -z "${FERROSTACK_BIN:-}" ]; then
    # The binary `cargo test` builds for the integration tests (same profile, and the features the
    # dev-dependencies add): after `cargo test` this builds nothing, where a plain `cargo build`
    # would compile the dependencies whose features differ again (2 min on a fresh clone).
    FERROSTACK_BIN="$(cargo test --locked --no-run --test it --message-format=json-render-diagnostics \
        | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["bin"] and m["target"]["name"] == "ferrostack":
        print(m["executable"])')"
    [ -x "$FERROSTACK_BIN" ] || { log "cargo test --no-run named no ferrostack binary"; exit 1; }
fi

eval "$(scripts/setup-llm.sh)"

DATA="$(mktemp -d /tmp/ferrostack-ui-e2e.XXXXXX)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$DATA"
}
trap cleanup EXIT

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
PASSWORD="ui-e2e-$RANDOM-pass"
"$FERROSTACK_BIN" start --data-dir "$DATA/data" --host 127.0.0.1 --port "$PORT" \
    --bootstrap-password "$PASSWORD" --runtime process --advertise-address 127.0.0.1 \
    --simulate-gpus 1xL4-24GB+2GB >"$DATA/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$DATA/server.log" >&2; log "the server exited"; exit 1; }
    sleep 0.2
done
log "server on http://127.0.0.1:$PORT (data $DATA)"

rm -rf artifacts/ui
mkdir -p artifacts/ui
status=0
BASE_URL="http://127.0.0.1:$PORT" ADMIN_PASSWORD="$PASSWORD" ARTIFACTS="$REPO/artifacts/ui" CHROMIUM="$CHROMIUM" \
    LLAMA_SERVER="$LLAMA_SERVER" SMOLLM2_GGUF="$SMOLLM2_GGUF" node ui/e2e/flow.mjs || status=$?
if [ "$status" -ne 0 ]; then
    cp "$DATA/server.log" artifacts/ui/server.log
    log "failed; server log tail (full log in artifacts/ui/server.log):"
    tail -n 40 "$DATA/server.log" >&2
    # Last, so the end of a CI log names the failing step and its error.
    log "FAILED in $(cat artifacts/ui/failure.txt 2>/dev/null || echo "the browser test (exit $status)")"
fi
exit "$status"
