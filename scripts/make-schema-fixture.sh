#!/usr/bin/env bash
# make-schema-fixture.sh - keeps a database made by a released ferrostack binary, so the suite can
# migrate it forward (tests/it/upgrade.rs). Runs BINARY as a server on SQLite and on PostgreSQL,
# makes a little of everything through its API (a user, an API key, a backend from YAML, a
# deployment and its route), stops it, and dumps each database as SQL:
#
#   tests/fixtures/schema/v<N>-sqlite.sql     sqlite3 .dump
#   tests/fixtures/schema/v<N>-postgres.sql   pg_dump --column-inserts (no owners, no grants)
#   tests/fixtures/schema/v<N>-server_secret  the server secret the databases were made with
#   tests/fixtures/schema/v<N>.json           what the test checks afterwards (names, the key)
#
# N is the binary's newest migration. Run it once per released schema, before the migration
# that follows it lands.
#
# Usage: scripts/make-schema-fixture.sh BINARY N POSTGRES_URL
#   POSTGRES_URL: a server to make a scratch database on (scripts/pg-cluster.sh start DIR prints one)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(realpath "$1")"
N="$2"
PG="$3"
OUT=tests/fixtures/schema
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/ferrostack-fixture.XXXXXX)"
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
SERVER=
PASSWORD=fixture-password-1

make() { # make DIALECT DATABASE_URL
    local dialect="$1" url="$2" port base jar
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    base="http://127.0.0.1:$port"
    mkdir -p "$WORK/$dialect"
    [ -f "$WORK/server_secret" ] && install -m 600 "$WORK/server_secret" "$WORK/$dialect/server_secret"
    "$BIN" server --data-dir "$WORK/$dialect" --host 127.0.0.1 --port "$port" --database-url "$url" \
        --bootstrap-password "$PASSWORD" >"$WORK/$dialect.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 100); do curl -fs "$base/healthz" >/dev/null && break; sleep 0.1; done
    jar="$WORK/$dialect.jar"
    curl -fs -c "$jar" -d username=admin -d "password=$PASSWORD" "$base/auth/login" >/dev/null
    api() { curl -fsS -b "$jar" -H 'Content-Type: application/json' "$@"; }
    api -d '{"username":"fixture-user","password":"fixture-password-2"}' "$base/v2/users" >/dev/null
    api -d '{"name":"fixture-key"}' "$base/v2/api-keys" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["value"])' >"$WORK/$dialect.key"
    local yaml='backend_name: fixture-custom\ndefault_version: v1\ndefault_run_command: \"-c sleep\"\nversion_configs:\n  v1:\n    image_name: busybox\n    entrypoint: /bin/sh\n    custom_framework: cpu\n'
    api -d "{\"content\":\"$yaml\"}" "$base/v2/inference-backends/from-yaml" >/dev/null
    api -d '{"name":"fixture-model","source":"local_path","local_path":"/","backend":"fixture-custom","replicas":0}' \
        "$base/v2/models" >/dev/null
    kill "$SERVER"
    wait "$SERVER" 2>/dev/null || true
    SERVER=
    [ -f "$WORK/server_secret" ] || cp "$WORK/$dialect/server_secret" "$WORK/server_secret"
}

make sqlite "sqlite://$WORK/fixture.db?mode=rwc"
sqlite3 "$WORK/fixture.db" .dump >"$OUT/v$N-sqlite.sql"

DB="fixture_$$"
psql -q "$PG" -c "CREATE DATABASE $DB"
PG_DB="${PG%/*}/$DB"
make postgres "$PG_DB"
# Without psql's meta-commands (\restrict): the test loads it as plain SQL.
pg_dump --no-owner --no-privileges --column-inserts --no-comments "$PG_DB" | grep -v '^\\' >"$OUT/v$N-postgres.sql"
psql -q "$PG" -c "DROP DATABASE $DB"

cp "$WORK/server_secret" "$OUT/v$N-server_secret"
python3 - "$OUT/v$N.json" "$(cat "$WORK/sqlite.key")" "$(cat "$WORK/postgres.key")" <<'EOF'
import json, sys
path, sqlite_key, postgres_key = sys.argv[1:]
facts = {
    "admin_password": "fixture-password-1",
    "user": "fixture-user",
    "backend": "fixture-custom",
    "model": "fixture-model",
    "api_key": {"sqlite": sqlite_key, "postgres": postgres_key},
}
json.dump(facts, open(path, "w"), indent=2)
open(path, "a").write("\n")
EOF
echo "wrote $OUT/v$N-{sqlite.sql,postgres.sql,server_secret} and $OUT/v$N.json"
