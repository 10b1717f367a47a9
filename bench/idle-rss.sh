#!/usr/bin/env bash
# Idle RSS of `ferrostack start` (server + embedded worker, SQLite) before and after an administrator
# logs in: fresh data dir, 5 s idle, RSS; three logins, 10 s idle, RSS. Prints a markdown row.
# Usage: bench/idle-rss.sh [BIN]     (default: builds and uses target/release/ferrostack)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-}"
if [ -z "$BIN" ]; then
    cargo build --release --quiet --bin ferrostack
    BIN="$PWD/target/release/ferrostack"
fi
python3 - "$BIN" <<'PY'
import shutil, socket, subprocess, sys, tempfile, time, urllib.request
binary = sys.argv[1]
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
work = tempfile.mkdtemp(prefix="ferrostack-rss.")
proc = subprocess.Popen([binary, "start", "--data-dir", f"{work}/data", "--host", "127.0.0.1", "--port", str(port),
                         "--bootstrap-password", "bench-password-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def rss():
    status = open(f"/proc/{proc.pid}/status").read()
    return int([l for l in status.splitlines() if l.startswith("VmRSS")][0].split()[1]) / 1024
try:
    for _ in range(200):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200:
                break
        except OSError:
            time.sleep(0.05)
    time.sleep(5)
    before = rss()
    for _ in range(3):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/auth/login",
                                     data=b"username=admin&password=bench-password-1", method="POST")
        assert urllib.request.urlopen(req, timeout=10).status == 200
    time.sleep(10)
    print(f"| {binary} | {before:.1f} MB | {rss():.1f} MB |")
finally:
    proc.terminate(); proc.wait()
    shutil.rmtree(work, ignore_errors=True)
PY
