#!/usr/bin/env bash
# Control-plane benchmark: a release `ferrostack start --no-worker` with N simulated workers that
# speak the real protocol (examples/sim_workers.rs: register, heartbeat every 5 s, status every 30 s,
# the instance watch), on SQLite and, with --pg, on a throwaway PostgreSQL cluster. Reports idle CPU
# of the server (and of PostgreSQL) over a minute, RSS, p50/p99 of the UI's calls, the time to bind
# N replicas (one per worker) and to delete them. Everything stays on loopback; bounded in time.
#
# Usage: bench/control-plane.sh [N ...] [--pg]      (default: 100 1000; prints a markdown table)
#        BASELINE_BIN=/path/to/older/ferrostack bench/control-plane.sh …   adds a row per run for that
#        binary, measured the same way in the same run (the simulator is this tree's).
#        BIG_REPLICAS=10000 SIM_GPUS=4xH100-80GB bench/control-plane.sh 1000   then also binds 10,000
#        replicas (deployments of 1,000) on those workers (a last column) and deletes them.
#        bench/control-plane.sh 1000 --pg --two-servers   adds a PostgreSQL row with two servers on
#        the database, half the workers joined to each (figures for both: the first leads).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=()
PG=0
TWO=0
for a in "$@"; do
    case "$a" in
        --pg) PG=1 ;;
        --two-servers) TWO=1 ;;
        *) COUNTS+=("$a") ;;
    esac
done
[ "$TWO" = 0 ] || [ "$PG" = 1 ] || { echo "--two-servers needs --pg" >&2; exit 2; }
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(100 1000)
cargo build --release --quiet --bin ferrostack --example sim_workers
WORK="$(mktemp -d /tmp/ferrostack-cp.XXXXXX)"
chmod 755 "$WORK" # the PostgreSQL cluster runs as user postgres
PG_DIR="$WORK/pg"
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null || true
    [ "$PG" = 1 ] && scripts/pg-cluster.sh stop "$PG_DIR" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
PG_URL=""
if [ "$PG" = 1 ]; then PG_URL="$(scripts/pg-cluster.sh start "$PG_DIR")"; fi

echo "| server | workers | database | idle server CPU | idle PostgreSQL CPU | RSS | /v2/workers?page=1 p50 / p99 | /v2/gpu-devices?page=1 p50 / p99 | /v2/dashboard p50 / p99 | the same three while a worker changes 10×/s (N replicas bound) | bind N replicas | delete (answer / all gone) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for N in "${COUNTS[@]}"; do
    for DB in sqlite $([ "$PG" = 1 ] && echo postgres); do
        if [ -n "${BASELINE_BIN:-}" ]; then
            python3 bench/control_plane.py "$BASELINE_BIN" "$PWD/target/release/examples/sim_workers" \
                "$WORK/base-$DB-$N" "$N" "$DB" "$PG_URL" "$PG_DIR" baseline
        fi
        python3 bench/control_plane.py "$PWD/target/release/ferrostack" "$PWD/target/release/examples/sim_workers" \
            "$WORK/$DB-$N" "$N" "$DB" "$PG_URL" "$PG_DIR" "this tree"
        if [ "$TWO" = 1 ] && [ "$DB" = postgres ]; then
            SERVERS=2 python3 bench/control_plane.py "$PWD/target/release/ferrostack" \
                "$PWD/target/release/examples/sim_workers" "$WORK/$DB-$N-two" "$N" "$DB" "$PG_URL" "$PG_DIR" "this tree"
        fi
    done
done
