#!/usr/bin/env bash
# A login flood against `ferrostack server` (SQLite): N logins at once (default 1000), each from its
# own loopback address (127.1.x.y, so per-address throttling does not stop them), wrong passwords
# for existing and missing users, while an administrator's key reads /v2/users/me every 100 ms.
# Prints a markdown row per binary: answers by status, peak RSS during the flood next to idle RSS,
# and the administrator's slowest and median request during the flood.
# Usage: bench/login-flood.sh [BIN [BASELINE_BIN]] [N]   (default BIN: builds target/release/ferrostack)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-}"
BASE="${2:-}"
N="${3:-1000}"
if [ -z "$BIN" ]; then
    cargo build --release --quiet --bin ferrostack
    BIN="$PWD/target/release/ferrostack"
fi
echo "| binary | logins | answers | idle RSS | peak RSS in the flood | admin p50 / max during the flood |"
echo "| --- | --- | --- | --- | --- | --- |"
for b in "$BIN" $BASE; do
python3 - "$b" "$N" <<'PY'
import collections, http.client, json, shutil, socket, statistics, subprocess, sys, tempfile, threading, time
import urllib.request
binary, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
work = tempfile.mkdtemp(prefix="ferrostack-flood.")
proc = subprocess.Popen([binary, "server", "--data-dir", f"{work}/data", "--host", "127.0.0.1", "--port", str(port),
                         "--bootstrap-password", "bench-password-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def status_kb(field):
    for line in open(f"/proc/{proc.pid}/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0
try:
    for _ in range(400):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200:
                break
        except OSError:
            time.sleep(0.05)
    # An admin session, then an API key for the polling reader.
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", "/auth/login", "username=admin&password=bench-password-1",
              {"Content-Type": "application/x-www-form-urlencoded"})
    r = c.getresponse(); r.read()
    cookie = r.getheader("Set-Cookie").split(";")[0]
    c.request("POST", "/v2/api-keys", json.dumps({"name": "bench"}), {"Content-Type": "application/json", "Cookie": cookie})
    key = json.loads(c.getresponse().read())["value"]
    time.sleep(3)
    idle = status_kb("VmRSS") / 1024
    peak = [idle]
    answers = collections.Counter()
    lock = threading.Lock()
    start = threading.Event()
    def one(i):
        src = f"127.1.{i // 250}.{i % 250 + 1}"
        start.wait()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120, source_address=(src, 0))
            user = "admin" if i % 2 else f"nobody{i}"
            conn.request("POST", "/auth/login", f"username={user}&password=wrong-{i}",
                         {"Content-Type": "application/x-www-form-urlencoded"})
            code = conn.getresponse().status
        except Exception as e:
            code = type(e).__name__
        with lock:
            answers[code] += 1
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    admin_times, done = [], threading.Event()
    def admin():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while not done.is_set():
            t0 = time.monotonic()
            conn.request("GET", "/v2/users/me", headers={"Authorization": f"Bearer {key}"})
            r = conn.getresponse(); r.read()
            admin_times.append((time.monotonic() - t0) * 1000)
            time.sleep(0.1)
    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], status_kb("VmRSS") / 1024)
            time.sleep(0.02)
    watchers = [threading.Thread(target=admin), threading.Thread(target=sample)]
    for w in watchers:
        w.start()
    start.set()
    for t in threads:
        t.join()
    done.set()
    for w in watchers:
        w.join()
    row = ", ".join(f"{k}: {v}" for k, v in sorted(answers.items(), key=str))
    p50 = statistics.median(admin_times) if admin_times else float("nan")
    worst = max(admin_times) if admin_times else float("nan")
    print(f"| {binary} | {n} | {row} | {idle:.1f} MB | {peak[0]:.1f} MB | {p50:.1f} / {worst:.1f} ms |")
finally:
    proc.terminate(); proc.wait()
    shutil.rmtree(work, ignore_errors=True)
PY
done
