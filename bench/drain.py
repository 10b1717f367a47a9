"""Driver for bench/drain.sh (stdlib only).

Keeps CONCURRENCY clients sending chat completions through the gateway back to back (half plain,
half streamed, max_tokens 8) while the deployment is scaled 3 -> 1 -> 3 ROUNDS times. For each
scale-down it measures the time from the PUT that scales down to the moment the last engine it
stops has exited (its process is gone). Prints one JSON object: requests, failures (by kind),
streams incomplete, and the scale-down -> engine-stopped times.
"""

import argparse
import http.client
import json
import os
import threading
import time

FAILS = []
COUNTS = {"plain": 0, "stream": 0}
LOCK = threading.Lock()


def chat(host, port, key, streamed):
    body = {"model": "smol", "messages": [{"role": "user", "content": "Count to five."}], "max_tokens": 8,
            "stream": streamed}
    try:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        conn.request("POST", "/v1/chat/completions", json.dumps(body),
                     {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        res = conn.getresponse()
        text = res.read().decode(errors="replace")
        conn.close()
    except Exception as e:  # a bench counts failures, it does not stop on them
        return f"no answer: {e!r}"
    if res.status != 200:
        return f"HTTP {res.status}: {text[:160]}"
    if not streamed:
        return None if '"choices"' in text else f"not a completion: {text[:160]}"
    events = [e.strip()[6:] for e in text.split("\n\n") if e.strip().startswith("data: ")]
    if not events or events[-1] != "[DONE]" or any('"error"' in e for e in events):
        return f"stream incomplete: {text[-160:]}"
    return None


def client(host, port, key, streamed, stop):
    while not stop.is_set():
        err = chat(host, port, key, streamed)
        with LOCK:
            if err:
                FAILS.append(err)
            else:
                COUNTS["stream" if streamed else "plain"] += 1


def api(host, port, cookie, method, path, body=None):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Cookie": cookie, "Content-Type": "application/json"}
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    res = conn.getresponse()
    data = res.read()
    conn.close()
    if res.status >= 300:
        raise RuntimeError(f"{method} {path}: {res.status} {data[:200]!r}")
    return json.loads(data) if data else None


def instances(host, port, cookie, model):
    return api(host, port, cookie, "GET", f"/v2/model-instances?model_id={model}")["items"]


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return ") Z" not in f.read()
    except OSError:
        return False


def scale(host, port, cookie, model, replicas):
    spec = api(host, port, cookie, "GET", f"/v2/models/{model}")
    for k in ("id", "version", "created_at", "updated_at"):
        spec.pop(k, None)
    spec["replicas"] = replicas
    api(host, port, cookie, "PUT", f"/v2/models/{model}", spec)


def settle(host, port, cookie, model, n):
    for _ in range(3000):
        items = instances(host, port, cookie, model)
        if len(items) == n and all(i["state"] == "running" for i in items):
            return items
        time.sleep(0.1)
    raise RuntimeError(f"never {n} running")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gateway", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--cookie", required=True)
    p.add_argument("--model", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--label", required=True)
    a = p.parse_args()
    host, port = a.gateway.split(":")
    port = int(port)
    settle(host, port, a.cookie, a.model, 3)
    stop = threading.Event()
    threads = [threading.Thread(target=client, args=(host, port, a.key, n % 2 == 1, stop))
               for n in range(a.concurrency)]
    for t in threads:
        t.start()
    time.sleep(2)
    stopped_after = []
    for _ in range(a.rounds):
        before = instances(host, port, a.cookie, a.model)
        t0 = time.monotonic()
        scale(host, port, a.cookie, a.model, 1)
        # The engines of the instances that go: known once the controller chose them.
        while True:
            now = {i["id"] for i in instances(host, port, a.cookie, a.model) if i["state"] != "draining"}
            going = [i for i in before if i["id"] not in now]
            if len(going) == 2:
                break
            time.sleep(0.01)
        while any(alive(i["pid"]) for i in going if i.get("pid")):
            time.sleep(0.01)
        stopped_after.append(time.monotonic() - t0)
        settle(host, port, a.cookie, a.model, 1)
        scale(host, port, a.cookie, a.model, 3)
        settle(host, port, a.cookie, a.model, 3)
        time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    kinds = {}
    for f in FAILS:
        k = f.split(":")[0]
        kinds[k] = kinds.get(k, 0) + 1
    print(json.dumps({"label": a.label, "plain": COUNTS["plain"], "streamed": COUNTS["stream"],
                      "failed": len(FAILS), "failures": kinds, "sample": FAILS[:3],
                      "stopped_after": [round(s, 2) for s in stopped_after], "pid": os.getpid()}))


if __name__ == "__main__":
    main()
