#!/usr/bin/env bash
# build-ui.sh - build the web UI (ui/) into ui/dist, which the binary embeds (src/server/ui.rs).
#
# Usage:
#   scripts/build-ui.sh           # npm ci + unit tests + npm run build, then record the sources' hash in ui/dist.sha256
#   scripts/build-ui.sh --check   # only check that ui/dist was built from the current ui sources (no npm)
#   scripts/build-ui.sh --deps    # only install ui/node_modules (npm ci), when package-lock.json changed
#   scripts/build-ui.sh --test    # install ui/node_modules if needed and run the UI's unit tests (vitest, src/**/*.test.ts)
#
# ui/dist and ui/dist.sha256 are committed, so `cargo build` works without Node. Run this after any change
# under ui/ and commit the result; the test suite runs --check and fails when the build is stale.
set -euo pipefail
cd "$(dirname "$0")/../ui"

# The inputs of the build: everything that can change ui/dist.
sources_hash() {
    find src public index.html package.json package-lock.json tsconfig.json vite.config.ts -type f -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

if [ "${1:-}" = "--check" ]; then
    want="$(sources_hash)"
    have="$(cat dist.sha256 2>/dev/null || echo none)"
    if [ "$want" != "$have" ] || [ ! -f dist/index.html ]; then
        echo "ui/dist is stale: ui sources hash $want, ui/dist.sha256 says $have; run scripts/build-ui.sh and commit ui/dist" >&2
        exit 1
    fi
    echo "ui/dist is up to date with ui/ sources ($want)"
    exit 0
fi

# npm ci, unless node_modules was installed from this very package-lock.json.
install_deps() {
    local lock
    lock="$(sha256sum package-lock.json | cut -d' ' -f1)"
    if [ "$(cat node_modules/.lock.sha256 2>/dev/null)" != "$lock" ]; then
        npm ci --no-audit --no-fund --loglevel=error
        echo "$lock" >node_modules/.lock.sha256
    fi
}

if [ "${1:-}" = "--deps" ]; then
    install_deps
    exit 0
fi

if [ "${1:-}" = "--test" ]; then
    install_deps
    npm test --silent
    exit 0
fi

install_deps
npm test --silent
npm run build
sources_hash > dist.sha256
echo "built ui/dist ($(du -sh dist | cut -f1)); sources hash $(cat dist.sha256)" >&2
