#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
#   formatting, clippy with warnings denied, then every unit and integration test on SQLite and on
#   PostgreSQL (a throwaway cluster from the machine's packages on a free port, removed afterwards).
# Usage: scripts/test.sh [extra args for cargo test]
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "ui/dist built from the current ui/ sources (scripts/build-ui.sh --check)"
scripts/build-ui.sh --check

step "PostgreSQL test cluster"
PG_DIR="$(mktemp -d /tmp/ferrostack-pg.XXXXXX)"
rmdir "$PG_DIR"
cleanup() {
    scripts/pg-cluster.sh stop "$PG_DIR" >/dev/null 2>&1 || true
    if [ -f .cache/podman/service.pid ]; then kill "$(cat .cache/podman/service.pid)" 2>/dev/null || true; fi
}
trap cleanup EXIT
FERROSTACK_TEST_PG_URL="$(scripts/pg-cluster.sh start "$PG_DIR")"
export FERROSTACK_TEST_PG_URL
echo "PostgreSQL at $FERROSTACK_TEST_PG_URL"

step "llama.cpp backend and the SmolLM2 model (scripts/setup-llm.sh)"
set -a; eval "$(scripts/setup-llm.sh)"; set +a

step "podman serving the Docker API, and a local llama image (scripts/setup-podman.sh)"
# Container tests run where podman can run containers; elsewhere they skip and say why.
if podman_env="$(scripts/setup-podman.sh --llama-image)"; then
    set -a; eval "$podman_env"; set +a
    export FERROSTACK_REQUIRE_CONTAINERS=1
else
    echo "containers cannot run on this machine: container runtime tests will be skipped"
fi

step "cargo test (SQLite and PostgreSQL)"
# CI=true makes a missing PostgreSQL a failure instead of a skip.
CI="${CI:-true}" cargo test --locked "$@"

step "bounded schema fuzz of the API: no 5xx (scripts/fuzz-api.sh)"
scripts/fuzz-api.sh

step "GPUStack 2.3.0's own schemas against our API (scripts/compat-gpustack.sh)"
scripts/compat-gpustack.sh

step "web UI in headless Chromium against a real llama.cpp deployment (scripts/ui-e2e.sh)"
scripts/ui-e2e.sh

step "done"
