#!/usr/bin/env bash
# pg-cluster.sh - throwaway PostgreSQL 15 cluster for tests.
#
# Usage:
#   URL=$(scripts/pg-cluster.sh start DIR)   # new cluster in DIR (created; must not hold another one),
#                                            # 127.0.0.1 only, on a free port picked here, trust auth,
#                                            # fsync=off, max_connections=200. Prints exactly one line,
#                                            # postgres://postgres@127.0.0.1:PORT/postgres, also saved in DIR/url.
#                                            # If DIR already holds a running cluster, just prints its URL.
#   scripts/pg-cluster.sh stop DIR           # pg_ctl stop -m fast, then rm -rf DIR
#   scripts/pg-cluster.sh url DIR            # print the URL of a running cluster
#   scripts/pg-cluster.sh pause DIR          # pg_ctl stop -m fast, keeping DIR (an outage: clients are cut
#                                            # and new connections refused)
#   URL=$(scripts/pg-cluster.sh resume DIR)  # start a paused cluster again on the same port (same URL)
#
# Runs initdb/pg_ctl as the `postgres` user when invoked as root (initdb refuses root); DIR's parents must
# be traversable by that user (e.g. /tmp/..., not /root/...). Logs: DIR/initdb.log, DIR/postgres.log.
# Env: PG_BIN (default /usr/lib/postgresql/15/bin). Missing binaries: installs postgresql-15 via apt-get
# when root, otherwise fails.
set -euo pipefail

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_USER=postgres
START_ATTEMPTS=8

die() { echo "pg-cluster: error: $*" >&2; exit 1; }
log() { echo "pg-cluster: $*" >&2; }

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[[ $# -eq 2 ]] || usage
cmd="$1"
dir_arg="$2"
[[ -n "$dir_arg" ]] || usage

# Run a command as the cluster owner (root cannot run initdb/postgres).
as_pg() {
    if [[ "$(id -u)" -eq 0 ]]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u "$PG_USER" -- "$@"
        else
            su -s /bin/sh "$PG_USER" -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

ensure_binaries() {
    [[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] && return 0
    if [[ "$(id -u)" -ne 0 ]]; then
        die "PostgreSQL 15 binaries not found in $PG_BIN (install the Debian package postgresql-15)"
    fi
    command -v apt-get >/dev/null 2>&1 || die "PostgreSQL 15 binaries not found in $PG_BIN and no apt-get"
    log "installing postgresql-15 via apt-get ..."
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql-15; } >&2 \
        || die "apt-get install postgresql-15 failed"
    [[ -x "$PG_BIN/initdb" ]] || die "postgresql-15 installed but $PG_BIN/initdb is missing"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

is_running() { # DIR
    [[ -f "$1/data/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" status -D "$1/data" >/dev/null 2>&1
}

url_of() { # DIR: read the port the running postmaster actually uses (line 4 of postmaster.pid)
    local port
    port="$(sed -n 4p "$1/data/postmaster.pid" 2>/dev/null || true)"
    [[ "$port" =~ ^[0-9]+$ ]] || die "cannot read the port from $1/data/postmaster.pid"
    echo "postgres://postgres@127.0.0.1:$port/postgres"
}

start() {
    local dir="$1"
    ensure_binaries
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd -P)"

    if [[ -f "$dir/data/PG_VERSION" ]]; then
        if is_running "$dir"; then
            url_of "$dir" | tee "$dir/url"
            return 0
        fi
        log "reusing stopped cluster in $dir"
    else
        [[ -z "$(ls -A "$dir")" ]] || die "$dir is not empty and holds no cluster"
        if [[ "$(id -u)" -eq 0 ]]; then
            chown "$PG_USER": "$dir"
            as_pg test -w "$dir" \
                || die "user $PG_USER cannot reach $dir (a parent directory is not traversable?); use e.g. /tmp"
        fi
        chmod 700 "$dir"
        # -N: no fsync during initdb; trust auth for everything (local socket and TCP): test-only cluster.
        if ! as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C -N \
                >"$dir/initdb.log" 2>&1; then
            cat "$dir/initdb.log" >&2
            die "initdb failed (log: $dir/initdb.log)"
        fi
        as_pg tee -a "$dir/data/postgresql.conf" >/dev/null <<EOF

# ---- pg-cluster.sh: throwaway test cluster ----
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
checkpoint_timeout = 1h
max_wal_size = 1GB
autovacuum = off
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] '
include_if_exists = 'pg-cluster-port.conf'
EOF
    fi

    local attempt port
    for ((attempt = 1; attempt <= START_ATTEMPTS; attempt++)); do
        port="$(free_port)"
        echo "port = $port" | as_pg tee "$dir/data/pg-cluster-port.conf" >/dev/null
        if as_pg "$PG_BIN/pg_ctl" start -D "$dir/data" -l "$dir/postgres.log" -w -t 60 -s >/dev/null 2>&1; then
            local url="postgres://postgres@127.0.0.1:$port/postgres"
            echo "$url" | as_pg tee "$dir/url" >/dev/null
            echo "$url"
            return 0
        fi
        if grep -q -E 'could not (bind|create listen socket)|Address already in use' "$dir/postgres.log" 2>/dev/null; then
            log "port $port was taken before postgres bound it, retrying ($attempt/$START_ATTEMPTS)"
            as_pg truncate -s 0 "$dir/postgres.log" || true
            continue
        fi
        tail -n 20 "$dir/postgres.log" >&2 || true
        die "pg_ctl start failed (log: $dir/postgres.log)"
    done
    die "could not find a free port after $START_ATTEMPTS attempts"
}

stop() {
    local dir="$1"
    [[ -e "$dir" ]] || { log "$dir does not exist, nothing to stop"; return 0; }
    dir="$(cd "$dir" && pwd -P)"
    # Refuse to delete anything that does not look like one of our clusters.
    if [[ ! -f "$dir/data/PG_VERSION" && ! -f "$dir/url" && ! -f "$dir/initdb.log" ]]; then
        [[ -z "$(ls -A "$dir")" ]] || die "$dir does not look like a pg-cluster.sh directory; not removing it"
    fi
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$dir/data" -m fast -w -t 60 -s >/dev/null 2>&1 \
            || as_pg "$PG_BIN/pg_ctl" stop -D "$dir/data" -m immediate -w -t 30 -s >/dev/null 2>&1 \
            || log "pg_ctl stop failed (already stopped?)"
    fi
    rm -rf -- "$dir"
}

pause() {
    local dir="$1"
    [[ -f "$dir/data/PG_VERSION" ]] || die "no cluster in $dir"
    is_running "$dir" || { log "$dir is not running, nothing to pause"; return 0; }
    as_pg "$PG_BIN/pg_ctl" stop -D "$dir/data" -m fast -w -t 60 -s >/dev/null 2>&1 \
        || as_pg "$PG_BIN/pg_ctl" stop -D "$dir/data" -m immediate -w -t 30 -s >/dev/null 2>&1 \
        || die "pg_ctl stop failed (log: $dir/postgres.log)"
}

resume() { # same port as before (pg-cluster-port.conf is kept), so the URL does not change
    local dir="$1"
    [[ -f "$dir/data/PG_VERSION" ]] || die "no cluster in $dir"
    if ! is_running "$dir"; then
        as_pg "$PG_BIN/pg_ctl" start -D "$dir/data" -l "$dir/postgres.log" -w -t 60 -s >/dev/null 2>&1 || {
            tail -n 20 "$dir/postgres.log" >&2 || true
            die "pg_ctl start failed (log: $dir/postgres.log)"
        }
    fi
    url_of "$dir"
}

case "$cmd" in
    start) start "$dir_arg" ;;
    stop) stop "$dir_arg" ;;
    pause) pause "$dir_arg" ;;
    resume) resume "$dir_arg" ;;
    url) is_running "$dir_arg" || die "no running cluster in $dir_arg"; url_of "$dir_arg" ;;
    *) usage ;;
esac
