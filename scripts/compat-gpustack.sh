#!/usr/bin/env bash
# compat-gpustack.sh - judges our API with GPUStack 2.3.0's own pydantic schemas
# (tests/compat/gpustack_compat.py) against a throwaway `ferrostack start` on a free port: SQLite, and
# PostgreSQL too when FERROSTACK_TEST_PG_URL is set (a fresh database, dropped afterwards). The
# gpustack wheel and what its schema modules import live in the cached venv .cache/venv-gpustack,
# rebuilt when tests/compat/requirements.txt changes. Fails on any FAIL line or a server panic.
#
# Usage: scripts/compat-gpustack.sh       FERROSTACK_BLESS=1 rewrites the measured tables in
#                                         docs/gpustack-migration.md (from the SQLite run; the
#                                         PostgreSQL run must then agree with them).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.cache/venv-gpustack
REQUIREMENTS=tests/compat/requirements.txt
GPUSTACK_VERSION="$(sed -n 's/^gpustack==//p' "$REQUIREMENTS")"
STAMP="$VENV/requirements.sha256"
WANT="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
HAVE_VERSION="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("gpustack"))' 2>/dev/null || true)"
if [ "$HAVE_VERSION" != "$GPUSTACK_VERSION" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    # --no-deps: gpustack's own dependency list is its server's; requirements.txt pins what the
    # schema modules import, transitive packages included.
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$REQUIREMENTS"
    echo "$WANT" >"$STAMP"
fi
BIN="${FERROSTACK_BIN:-${CARGO_TARGET_DIR:-target}/debug/ferrostack}"
[ -x "$BIN" ] || cargo build --quiet
PASSWORD=Compat-password-1

SERVER=""
DIR=""
PG_DB=""
PG_URL=""
cleanup() {
    if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
    SERVER=""
    if [ -n "$PG_DB" ]; then psql "$FERROSTACK_TEST_PG_URL" -qc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true; fi
    PG_DB=""
    if [ -n "$DIR" ]; then rm -rf "$DIR"; fi
    DIR=""
}
trap cleanup EXIT

# A fresh PostgreSQL database next to the one FERROSTACK_TEST_PG_URL names: sets PG_DB and PG_URL.
fresh_pg_database() {
    command -v psql >/dev/null || { echo "psql is needed to create the PostgreSQL database" >&2; return 1; }
    PG_DB="compat_$(date +%s)_$$"
    psql "$FERROSTACK_TEST_PG_URL" -qc "CREATE DATABASE $PG_DB" >/dev/null
    local base="${FERROSTACK_TEST_PG_URL%%\?*}"
    local query="${FERROSTACK_TEST_PG_URL#"$base"}"
    PG_URL="${base%/*}/$PG_DB$query"
}

# run_suite LABEL [DATABASE_URL] [suite args...]: one server, one run of the suite.
run_suite() {
    local label="$1" database_url="$2"
    shift 2
    DIR="$(mktemp -d /tmp/ferrostack-compat.XXXXXX)"
    local port base key status=0
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    base="http://127.0.0.1:$port"
    local args=(start --data-dir "$DIR/data" --host 127.0.0.1 --port "$port" --bootstrap-password "$PASSWORD"
        --runtime process --worker-name compat --advertise-address 127.0.0.1 --simulate-gpus 2xH100-80GB
        --port-range 47100-47199)
    if [ -n "$database_url" ]; then args+=(--database-url "$database_url"); fi
    "$BIN" "${args[@]}" >"$DIR/server.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 300); do
        curl -fs "$base/healthz" >/dev/null && break
        kill -0 "$SERVER" 2>/dev/null || break
        sleep 0.1
    done
    if ! curl -fs "$base/healthz" >/dev/null; then
        echo "the server ($label) did not come up:" >&2
        tail -20 "$DIR/server.log" >&2
        return 1
    fi
    curl -fs -c "$DIR/jar" -d username=admin -d "password=$PASSWORD" "$base/auth/login" >/dev/null || true
    # The embedded worker registers right after the server answers; the suite needs its 2 GPUs.
    for _ in $(seq 100); do
        [ "$(curl -fs -b "$DIR/jar" "$base/v2/gpu-devices" 2>/dev/null \
            | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))' 2>/dev/null)" = 2 ] && break
        sleep 0.1
    done
    key="$(curl -fs -b "$DIR/jar" -H 'Content-Type: application/json' -d '{"name":"compat-harness"}' \
        "$base/v2/api-keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["value"])')" || true
    if [ -z "$key" ]; then
        echo "could not log in and create an API key on the server ($label):" >&2
        tail -20 "$DIR/server.log" >&2
        return 1
    fi
    printf '\n== GPUStack compatibility suite against %s\n' "$label"
    "$VENV/bin/python" tests/compat/gpustack_compat.py --base "$base" --key "$key" --password "$PASSWORD" --worker compat \
        --label "$label" "$@" || status=$?
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    SERVER=""
    if grep -q 'panicked' "$DIR/server.log"; then
        echo "the server ($label) panicked during the compatibility suite:" >&2
        grep -m5 -A5 'panicked' "$DIR/server.log" >&2
        status=1
    fi
    return "$status"
}

failed=0
bless=()
if [ "${FERROSTACK_BLESS:-}" = 1 ]; then bless=(--bless); fi
run_suite sqlite "" "${bless[@]}" || failed=1
cleanup
if [ -n "${FERROSTACK_TEST_PG_URL:-}" ]; then
    # The PostgreSQL run compares with the doc (never rewrites it): both databases must agree.
    fresh_pg_database
    FERROSTACK_BLESS=0 run_suite postgresql "$PG_URL" || failed=1
    cleanup
fi
exit "$failed"
