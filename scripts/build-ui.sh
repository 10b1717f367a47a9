#!/usr/bin/env bash
# build-ui.sh - build the web UI (ui/) into ui/dist, which the binary embeds (src/server/ui.rs).
#
# Usage:
#   scripts/build-ui.sh           # npm ci + unit tests + npm run build, then record the sources' hash in ui/dist.sha256
#   scripts/build-ui.sh --check   # check that ui/dist was built from the current ui sources, and that
#                                 # ui/src/api/schema.d.ts is what `npm run gen:api` makes of docs/openapi.json
#                                 # (installs ui/node_modules when missing, like --test)
#   scripts/build-ui.sh --deps    # only install ui/node_modules (npm ci), when package-lock.json changed
#   scripts/build-ui.sh --test    # install ui/node_modules if needed and run the UI's unit tests (vitest, src/**/*.test.ts)
#
# ui/dist and ui/dist.sha256 are committed, so `cargo build` works without Node. Run this after any change
# under ui/ and commit the result; the test suite runs --check and fails when the build is stale.
# The UI's API types come from the committed OpenAPI document: after docs/openapi.json changes, run
# `cd ui && npm run gen:api`, then this script, and commit ui/src/api/schema.d.ts with ui/dist.
set -euo pipefail
cd "$(dirname "$0")/../ui"

# The inputs of the build: everything that can change ui/dist.
sources_hash() {
    find src public index.html package.json package-lock.json tsconfig.json vite.config.ts -type f -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

# npm ci, unless node_modules was installed from this very package-lock.json.
install_deps() {
    local lock
    lock="$(sha256sum package-lock.json | cut -d' ' -f1)"
    if [ "$(cat node_modules/.lock.sha256 2>/dev/null)" != "$lock" ]; then
        npm ci --no-audit --no-fund --loglevel=error
        echo "$lock" >node_modules/.lock.sha256
    fi
}

# ui/src/api/schema.d.ts must be what `npm run gen:api` writes from docs/openapi.json today (the same
# generator and arguments, to a temp file): the UI's types then follow every change of the API.
check_schema() {
    local fresh
    fresh="$(mktemp)"
    if ! node_modules/.bin/openapi-typescript ../docs/openapi.json >"$fresh" 2>/dev/null; then
        rm -f "$fresh"
        echo "openapi-typescript failed on docs/openapi.json (run: cd ui && npm run gen:api)" >&2
        return 1
    fi
    if ! diff -q src/api/schema.d.ts "$fresh" >/dev/null; then
        diff -u src/api/schema.d.ts "$fresh" | head -40 >&2 || true
        rm -f "$fresh"
        echo "ui/src/api/schema.d.ts is stale against docs/openapi.json: run \`cd ui && npm run gen:api\`, then scripts/build-ui.sh, and commit both" >&2
        return 1
    fi
    rm -f "$fresh"
    echo "ui/src/api/schema.d.ts is up to date with docs/openapi.json"
}

if [ "${1:-}" = "--check" ]; then
    install_deps
    check_schema
    want="$(sources_hash)"
    have="$(cat dist.sha256 2>/dev/null || echo none)"
    if [ "$want" != "$have" ] || [ ! -f dist/index.html ]; then
        echo "ui/dist is stale: ui sources hash $want, ui/dist.sha256 says $have; run scripts/build-ui.sh and commit ui/dist" >&2
        exit 1
    fi
    echo "ui/dist is up to date with ui/ sources ($want)"
    exit 0
fi

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
check_schema
npm test --silent
npm run build
sources_hash > dist.sha256
echo "built ui/dist ($(du -sh dist | cut -f1)); sources hash $(cat dist.sha256)" >&2
