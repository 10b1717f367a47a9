#!/usr/bin/env bash
# Foundation benchmark: launch-to-healthy time, idle RSS of `ferrostack start`, and GET /v2/users
# throughput/latency at several concurrency levels (wrk, API key auth, SQLite).
# Usage: bench/foundation.sh            (builds the release binary; needs `wrk`: apt-get install wrk)
# Prints a markdown table; docs/benchmarks.md keeps the latest results.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --quiet
BIN="$PWD/target/release/ferrostack"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# Time from exec to the first 200 on /healthz, and idle RSS 3 s later. Run 5 times: first start
# (fresh data dir: migrations, admin password hash) then restarts on the same data dir.
python3 - "$BIN" "$WORK" <<'PY'
import os, socket, subprocess, sys, time, urllib.request, statistics
binary, work = sys.argv[1], sys.argv[2]
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
rows = []
for run in range(5):
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary, "start", "--data-dir", f"{work}/data", "--host", "127.0.0.1",
                             "--port", str(port), "--bootstrap-password", "bench-password"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200:
                break
        except Exception:
            time.sleep(0.002)
    healthy = time.perf_counter() - t0
    time.sleep(3)
    status = open(f"/proc/{proc.pid}/status").read()
    rss = int([l for l in status.splitlines() if l.startswith("VmRSS")][0].split()[1]) / 1024
    proc.terminate(); proc.wait()
    rows.append((run, healthy, rss))
    print(f"| {'first start' if run == 0 else 'restart'} | {healthy*1000:.0f} ms | {rss:.1f} MB |")
print(f"| median of {len(rows)} | {statistics.median(r[1] for r in rows)*1000:.0f} ms | {statistics.median(r[2] for r in rows):.1f} MB |")
PY

PORT=$(free_port)
"$BIN" start --data-dir "$WORK/data" --host 127.0.0.1 --port "$PORT" >/dev/null 2>&1 &
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.05; done
curl -sf -c "$WORK/jar" -d 'username=admin&password=bench-password' "http://127.0.0.1:$PORT/auth/login" >/dev/null
KEY=$(curl -sf -b "$WORK/jar" -H 'content-type: application/json' -d '{"name":"bench"}' \
  "http://127.0.0.1:$PORT/v2/api-keys" | python3 -c 'import json,sys;print(json.load(sys.stdin)["value"])')
echo
echo "| concurrency | requests/s | p50 | p99 |"
echo "| --- | --- | --- | --- |"
for c in 1 8 32 128; do
  t=$(( c < 2 ? 1 : 2 ))
  out=$(wrk -t"$t" -c"$c" -d10s --latency -H "X-API-Key: $KEY" "http://127.0.0.1:$PORT/v2/users")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "| $c | $rps | $p50 | $p99 |"
done
