"""Scale-from-zero measurements for bench/autoscale.sh (stdlib only).

Per round, with the deployment asleep (replicas 0, no instance):
  1. the engine's own cold start: LLAMA_SERVER started by hand on a free port, process start ->
     its health path (/v1/models) answers 200, and -> the first byte of the same streamed chat;
  2. the wake: one streamed request through the gateway; wake time = sent -> its first byte;
     decision time = sent -> the deployment's replicas >= 1 in the API (polled every 10 ms); the
     server log's timestamps split it: decision -> instance placed -> instance running;
  3. back to sleep, then BURST requests at once (half streamed): lost = not answered whole;
     also the first byte of the first answer;
  4. back to sleep: waits until replicas is 0 and no instance is left.
Prints one JSON object per round.
"""

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def engine_cold_start(server, gguf, args):
    port = free_port()
    cmd = [server, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "--alias", "cold"] + args.split()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/v1/models")
                if c.getresponse().status == 200:
                    healthy = time.monotonic() - t0
                    # …and its first streamed byte, as the wake's request gets it.
                    body = json.dumps({"messages": [{"role": "user", "content": "Count to three."}],
                                       "max_tokens": 8, "stream": True})
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                    c.request("POST", "/v1/chat/completions", body=body, headers={"content-type": "application/json"})
                    r = c.getresponse()
                    r.read(1)
                    first = time.monotonic() - t0
                    r.read()
                    return healthy, first
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"engine exited with {proc.returncode}")
            time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait()


class Api:
    def __init__(self, host, port, cookie, key):
        self.host, self.port, self.cookie, self.key = host, port, cookie, key

    def get(self, path):
        c = http.client.HTTPConnection(self.host, self.port, timeout=10)
        c.request("GET", path, headers={"cookie": self.cookie})
        r = c.getresponse()
        return json.loads(r.read())

    def chat(self, model, stream, result, index):
        """Sends one chat; records (ok, first byte at, error)."""
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Count to three."}],
                           "max_tokens": 8, "stream": stream})
        try:
            c = http.client.HTTPConnection(self.host, self.port, timeout=900)
            c.request("POST", "/v1/chat/completions", body=body,
                      headers={"authorization": f"Bearer {self.key}", "content-type": "application/json"})
            r = c.getresponse()
            first = r.read(1)
            first_at = time.monotonic()
            text = (first + r.read()).decode("utf-8", "replace")
            if r.status != 200:
                result[index] = (False, first_at, f"{r.status}: {text[:200]}")
            elif stream and not (text.rstrip().endswith("data: [DONE]") and '"finish_reason":"' in text):
                result[index] = (False, first_at, "stream incomplete")
            elif not stream and not json.loads(text).get("choices"):
                result[index] = (False, first_at, "not a completion")
            else:
                result[index] = (True, first_at, None)
        except Exception as e:  # noqa: BLE001 - a lost request, whatever the cause
            result[index] = (False, time.monotonic(), repr(e))


def wait(what, cond, limit=300):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > limit:
            raise SystemExit(f"never: {what}")
        time.sleep(0.05)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gateway", required=True)
    p.add_argument("--cookie", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--model-id", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--burst", type=int, default=20)
    p.add_argument("--engine-args", required=True)
    p.add_argument("--log", default="")
    a = p.parse_args()
    host, port = a.gateway.rsplit(":", 1)
    api = Api(host, int(port), a.cookie, a.key)
    model_path = f"/v2/models/{a.model_id}"
    instances_path = f"/v2/model-instances?model_id={a.model_id}"
    asleep = lambda: api.get(model_path)["replicas"] == 0 and not api.get(instances_path)["items"]  # noqa: E731
    for n in range(a.rounds):
        wait("asleep", asleep)
        time.sleep(1)
        cold, cold_first = engine_cold_start(os.environ["LLAMA_SERVER"], os.environ["SMOLLM2_GGUF"], a.engine_args)
        # A lone streamed request wakes it: its first byte is the wake time.
        wait("asleep", asleep)
        mark = log_size(a.log)
        lone = [None]
        t0 = time.monotonic()
        thread = threading.Thread(target=api.chat, args=(a.model, True, lone, 0))
        thread.start()
        decided = None
        while decided is None:
            if api.get(model_path)["replicas"] >= 1:
                decided = time.monotonic() - t0
            else:
                time.sleep(0.01)
        thread.join()
        wake = lone[0][1] - t0
        stages = timeline(a.log, mark)
        # A burst of BURST requests at once wakes it again: none may be lost.
        wait("asleep", asleep)
        result = [None] * a.burst
        threads = [threading.Thread(target=api.chat, args=(a.model, i % 2 == 0, result, i)) for i in range(a.burst)]
        t1 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ok = [r for r in result if r and r[0]]
        errors = [r[2] for r in result if r and not r[0]]
        burst_first = min((r[1] for r in ok), default=t1) - t1
        print(json.dumps({"round": n, "engine_cold_start": cold, "engine_first_byte": cold_first, "wake_first_byte": wake, "decision": decided,
                          "stages": stages, "lone_ok": bool(lone[0][0]), "burst_first_byte": burst_first,
                          "answered": len(ok) + int(bool(lone[0][0])), "lost": a.burst - len(ok) + int(not lone[0][0]),
                          "errors": errors[:3] + ([lone[0][2]] if not lone[0][0] else [])}), flush=True)


def log_size(path):
    return os.path.getsize(path) if path and os.path.exists(path) else 0


STAGES = [("decided", "autoscaler: replicas"), ("scheduled", "scheduled"), ("running", "instance is running")]


def timeline(path, offset):
    """Seconds from the autoscaler's decision to the instance's placement and to running, from the
    server log's timestamps (the first of each after `offset`)."""
    if not path:
        return {}
    import datetime
    found = {}
    with open(path, "rb") as f:
        f.seek(offset)
        for line in f.read().decode("utf-8", "replace").splitlines():
            line = re.sub(r"\x1b\[[0-9;]*m", "", line)
            for name, needle in STAGES:
                if name not in found and needle in line:
                    stamp = line.split()[0].rstrip("Z")[:26]
                    found[name] = datetime.datetime.fromisoformat(stamp).timestamp()
    if "decided" not in found:
        return {}
    return {k: round(v - found["decided"], 3) for k, v in found.items() if k != "decided"}


if __name__ == "__main__":
    main()
