"""One run of the control-plane benchmark (bench/control-plane.sh): a server, N simulated workers,
idle CPU and RSS, the UI's calls' latency, binding N replicas and deleting them. Prints one row.

Usage: control_plane.py SERVER_BIN SIM_BIN WORKDIR N sqlite|postgres PG_URL PG_DIR LABEL
"""

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

BIN, SIM, WORK, N, DB, PG_URL, PG_DIR, LABEL = sys.argv[1:9]
N = int(N)
# Optional: after the one-per-worker round, bind BIG_REPLICAS replicas of one deployment (workers
# get SIM_GPUS each, e.g. 4xH100-80GB, so that many fit) and report the time.
BIG = int(os.environ.get("BIG_REPLICAS", "0"))
SIM_GPUS = os.environ.get("SIM_GPUS", "1xH100-80GB")
# SERVERS=2 (PostgreSQL): a second server on the same database; half the workers join each, and
# CPU, RSS and latency are reported for both (the first leads the control loops).
SERVERS = int(os.environ.get("SERVERS", "1"))
PASSWORD = "bench-password-1"
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Api:
    """A keep-alive HTTP client for the server's API."""

    def __init__(self, port):
        self.port = port
        self.headers = {"Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def call(self, method, path, body=None, form=False):
        data, headers = None, dict(self.headers)
        if form:
            data = urllib.parse.urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body)
        for attempt in range(3):
            try:
                self.conn.request(method, path, data, headers)
                res = self.conn.getresponse()
                raw = res.read()
                return res.status, (json.loads(raw) if raw else None), res.getheader("set-cookie")
            except (http.client.HTTPException, OSError):
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable")


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def postgres_pids():
    try:
        master = int(open(os.path.join(PG_DIR, "data", "postmaster.pid")).readline())
    except (OSError, ValueError):
        return []
    pids = [master]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1]) == master:
                    pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def latency(api, path, count=100):
    times = []
    for _ in range(count):
        t = time.perf_counter()
        status, _, _ = api.call("GET", path)
        times.append((time.perf_counter() - t) * 1000)
        assert status == 200, (path, status)
    times.sort()
    return f"{statistics.median(times):.1f} / {times[int(len(times) * 0.99) - 1]:.1f} ms"


def wait(what, pred, timeout, every=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def main():
    os.makedirs(WORK, exist_ok=True)
    args = [BIN, "start", "--no-worker", "--data-dir", f"{WORK}/data", "--host", "127.0.0.1",
            "--bootstrap-password", PASSWORD]
    db_name = None
    if DB == "postgres":
        db_name = f"cp_{N}_{os.getpid()}"
        subprocess.run(["psql", PG_URL, "-qc", f"CREATE DATABASE {db_name}"], check=True)
        base, _, query = PG_URL.partition("?")
        args += ["--database-url", base.rsplit("/", 1)[0] + "/" + db_name + ("?" + query if query else "")]
    port = free_port()
    server = subprocess.Popen(args + ["--port", str(port)], stdout=open(f"{WORK}/server.log", "w"),
                              stderr=subprocess.STDOUT)
    sims = []
    second = None
    try:
        api = Api(port)
        wait("the server", lambda: _healthy(port), 60)
        ports = [port]
        if SERVERS == 2:
            assert DB == "postgres", "two servers share a PostgreSQL database"
            os.makedirs(f"{WORK}/data2", mode=0o700, exist_ok=True)
            with open(f"{WORK}/data/server_secret") as src, open(f"{WORK}/data2/server_secret", "w") as dst:
                dst.write(src.read())
            os.chmod(f"{WORK}/data2/server_secret", 0o600)
            port2 = free_port()
            args2 = [a if a != f"{WORK}/data" else f"{WORK}/data2" for a in args]
            second = subprocess.Popen(args2 + ["--port", str(port2)], stdout=open(f"{WORK}/server2.log", "w"),
                                      stderr=subprocess.STDOUT)
            wait("the second server", lambda: _healthy(port2), 60)
            ports.append(port2)
        _, _, cookie = api.call("POST", "/auth/login", {"username": "admin", "password": PASSWORD}, form=True)
        api.headers["Cookie"] = cookie.split(";")[0]
        _, key, _ = api.call("POST", "/v2/api-keys", {"name": "bench"})
        del api.headers["Cookie"]
        api.headers["Authorization"] = f"Bearer {key['value']}"
        _, clusters, _ = api.call("GET", "/v2/clusters?page=-1")
        cluster = next(c for c in clusters["items"] if c["is_default"])
        _, reg, _ = api.call("GET", f"/v2/clusters/{cluster['id']}/registration-token")
        token = reg["token"]

        shares = [N // len(ports) + (1 if i < N % len(ports) else 0) for i in range(len(ports))]
        for i, (p, n) in enumerate(zip(ports, shares)):
            sims.append(subprocess.Popen([SIM, f"http://127.0.0.1:{p}", token, str(n), SIM_GPUS, f"sim{i}"],
                                         stdout=subprocess.PIPE, stderr=open(f"{WORK}/sim{i}.log", "w"), text=True))
        for s, n in zip(sims, shares):
            line = s.stdout.readline().strip()
            assert line == f"registered {n}", line
        wait(f"{N} ready workers",
             lambda: api.call("GET", "/v2/dashboard")[1]["workers"].get("ready", 0) == N, 300, every=1)
        time.sleep(35)  # at least one round of status reports

        pg = postgres_pids() if DB == "postgres" else []
        procs = [server] + ([second] if second else [])
        t0, s0, p0 = time.monotonic(), [cpu_ticks([p.pid]) for p in procs], cpu_ticks(pg)
        time.sleep(60)
        elapsed = time.monotonic() - t0
        cpus = [(cpu_ticks([p.pid]) - s) / TICK / elapsed * 100 for p, s in zip(procs, s0)]
        pg_cpu = (cpu_ticks(pg) - p0) / TICK / elapsed * 100 if pg else None
        rsss = [int([l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0].split()[1]) / 1024
                for p in procs]
        server_cpu_text = " + ".join(f"{c:.1f} %" for c in cpus)
        rss_text = " + ".join(f"{r:.0f}" for r in rsss) + " MB"

        apis = [api]
        if second:
            api2 = Api(ports[1])
            api2.headers["Authorization"] = api.headers["Authorization"]
            apis.append(api2)
        lat_workers = "; ".join(latency(a, "/v2/workers?page=1") for a in apis)
        lat_gpus = "; ".join(latency(a, "/v2/gpu-devices?page=1") for a in apis)
        lat_dash = "; ".join(latency(a, "/v2/dashboard") for a in apis)

        yaml = ("backend_name: bench-custom\ndefault_version: v1\n"
                "default_run_command: \"-c 'exec sleep 300'\"\nhealth_check_path:\n"
                "version_configs:\n  v1:\n    image_name: busybox\n    entrypoint: sh\n"
                "    custom_framework: cuda\n")
        status, body, _ = api.call("POST", "/v2/inference-backends/from-yaml", {"content": yaml})
        assert status == 200, body
        model_file = f"{WORK}/model.bin"
        with open(model_file, "wb") as f:
            f.truncate(7 << 30)
        t = time.perf_counter()
        status, model, _ = api.call("POST", "/v2/models", {
            "name": "bench", "source": "local_path", "local_path": model_file, "backend": "bench-custom",
            "replicas": N})
        assert status == 200, model
        wait(f"{N} bound replicas", lambda: _bound(api) >= N, 1200, every=0.25)
        bind = time.perf_counter() - t

        # The UI's calls while the cluster changes: a worker's labels rewritten 10 times a second (each
        # commit invalidates what is built from workers), with N replicas bound.
        stop = threading.Event()

        def churn():
            writer = Api(ports[0])
            writer.headers["Authorization"] = api.headers["Authorization"]
            i = 0
            while not stop.is_set():
                i += 1
                writer.call("POST", "/v2/workers/labels", {"worker_ids": [1 + i % N], "labels": {"churn": str(i)}})
                stop.wait(0.1)

        churner = threading.Thread(target=churn, daemon=True)
        churner.start()
        try:
            churn_text = (f"{latency(api, '/v2/workers?page=1')}; {latency(api, '/v2/gpu-devices?page=1')}; "
                          f"{latency(api, '/v2/dashboard')}")
        finally:
            stop.set()
            churner.join()

        t = time.perf_counter()
        status, _, _ = api.call("DELETE", f"/v2/models/{model['id']}")
        answered = time.perf_counter() - t
        assert status == 200, status
        wait("the instances to go", lambda: api.call("GET", "/v2/model-instances?perPage=1")[1]["pagination"]["total"] == 0,
             600, every=0.25)
        gone = time.perf_counter() - t

        big = ""
        if BIG:
            # A deployment takes at most 1,024 replicas: BIG of them as deployments of 1,000.
            t = time.perf_counter()
            ids = []
            for d in range(0, BIG, 1000):
                status, model, _ = api.call("POST", "/v2/models", {
                    "name": f"bench-big-{d // 1000}", "source": "local_path", "local_path": model_file,
                    "backend": "bench-custom", "replicas": min(1000, BIG - d)})
                assert status == 200, model
                ids.append(model["id"])
            wait(f"{BIG} bound replicas", lambda: _bound(api) >= BIG, 1200, every=0.5)
            big = f" {BIG} bound in {time.perf_counter() - t:.1f} s |"
            for i in ids:
                api.call("DELETE", f"/v2/models/{i}")
            wait("the instances to go",
                 lambda: api.call("GET", "/v2/model-instances?perPage=1")[1]["pagination"]["total"] == 0, 900, every=1)

        pg_text = f"{pg_cpu:.0f} %" if pg_cpu is not None else "—"
        label = f"{LABEL}, {len(procs)} servers" if second else LABEL
        print(f"| {label} | {N} | {DB} | {server_cpu_text} | {pg_text} | {rss_text} | {lat_workers} | {lat_gpus} | "
              f"{lat_dash} | {churn_text} | {bind:.1f} s | {answered:.2f} s / {gone:.1f} s |{big}", flush=True)
    finally:
        for s in sims:
            s.kill()
            s.wait()
        for p in [server] + ([second] if second else []):
            p.terminate()
            p.wait()
        if db_name:
            subprocess.run(["psql", PG_URL, "-qc", f"DROP DATABASE IF EXISTS {db_name}"], check=False)


def _healthy(port):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False


def _bound(api):
    _, page, _ = api.call("GET", "/v2/model-instances?state=scheduled&perPage=1")
    return page["pagination"]["total"]


if __name__ == "__main__":
    main()
