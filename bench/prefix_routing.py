"""Load generator for bench/prefix-routing.sh (stdlib only).

Sends streamed chat completions with Poisson arrivals for a fixed window, then waits (bounded) for
the stragglers, and prints one JSON object: TTFT p50/p90 (first content byte), throughput, the
prefix-hit rate (cached prompt tokens / prompt tokens, from the engine's usage), and requests and
prefill tokens per replica (from each llama.cpp instance's /metrics).

Workloads: `shared` — TENANTS tenants, each a fixed system prompt of PREFIX words, plus a short
question; `unique` — every request its own system prompt of PREFIX words. `--oracle` sends tenant t
straight to replica t mod N (no gateway): the hit rate a perfect router would get.
"""

import argparse
import http.client
import json
import random
import statistics
import threading
import time
import urllib.request

WORDS = (
    "the of and to in is was for on that with as by at from his her they this are were be had which or "
    "an not but their one all would there been has more if its who so can what out about up into them "
    "some time could only other new these may then first any like now my such over our man me even most "
    "made after also did many before must through back years where much your way well down should because "
    "each just those people how too little state good very make world still own see men work long get here "
    "between both life being under never day same another know while last might us great old year off come"
).split()
MAX_TOKENS = 4


def text(rng, words):
    return " ".join(rng.choice(WORDS) for _ in range(words))


def metrics(ports):
    out = []
    for port in ports:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        vals = {}
        for line in body.splitlines():
            if line.startswith("llamacpp:") and " " in line:
                k, v = line.split(" ", 1)
                vals[k[len("llamacpp:"):]] = float(v)
        out.append(vals)
    return out


def one(host, port, path, headers, body, timeout):
    """Sends one streamed request; returns (ttft s, total s, usage or None, error or None)."""
    t0 = time.monotonic()
    ttft = None
    usage = None
    try:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.request("POST", path, json.dumps(body), headers)
        res = conn.getresponse()
        if res.status != 200:
            return None, None, None, f"HTTP {res.status}: {res.read()[:200]!r}"
        buf = b""
        while True:
            chunk = res.read1(65536) if hasattr(res, "read1") else res.read(1024)
            if not chunk:
                break
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    d = json.loads(line[6:])
                    for c in d.get("choices") or []:
                        if ttft is None and (c.get("delta") or {}).get("content"):
                            ttft = time.monotonic() - t0
                    if d.get("usage"):
                        usage = d["usage"]
        conn.close()
    except Exception as e:  # a bench counts failures, it does not stop on them
        return None, None, None, repr(e)
    return ttft, time.monotonic() - t0, usage, None


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True, help="host:port of the server")
    ap.add_argument("--key", required=True)
    ap.add_argument("--model", default="smol")
    ap.add_argument("--ports", required=True, help="comma-separated instance ports (metrics, oracle)")
    ap.add_argument("--label", required=True)
    ap.add_argument("--workload", choices=["shared", "unique"], required=True)
    ap.add_argument("--oracle", action="store_true")
    ap.add_argument("--tenants", type=int, default=16)
    ap.add_argument("--prefix", type=int, default=500, help="words per system prompt")
    ap.add_argument("--rate", type=float, default=1.0, help="arrivals per second (Poisson)")
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--drain", type=float, default=60, help="most seconds to wait for stragglers")
    ap.add_argument("--salt", default="0", help="makes this run's prompts new to every cache")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    ports = [int(p) for p in a.ports.split(",")]
    ghost, gport = a.gateway.rsplit(":", 1)
    rng = random.Random(a.seed)
    tenants = [text(random.Random(f"{a.salt}-tenant-{t}"), a.prefix) for t in range(a.tenants)]

    before = metrics(ports)
    load_start = float(open("/proc/loadavg").read().split()[0])
    results = []
    lock = threading.Lock()
    threads = []
    start = time.monotonic()
    t = 0.0
    n = 0
    while True:
        t += rng.expovariate(a.rate)
        if t > a.duration:
            break
        tenant = rng.randrange(a.tenants)
        if a.workload == "shared":
            system = tenants[tenant]
        else:
            system = text(random.Random(f"{a.salt}-unique-{n}"), a.prefix)
        question = f"Question {n}: " + text(rng, 8) + "?"
        body = {"model": a.model, "max_tokens": MAX_TOKENS, "ignore_eos": True, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}
        if a.oracle:
            host, port, headers = "127.0.0.1", ports[tenant % len(ports)], {"Content-Type": "application/json"}
        else:
            host, port = ghost, int(gport)
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {a.key}"}
        delay = start + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)

        def run(host=host, port=port, headers=headers, body=body):
            r = one(host, port, "/v1/chat/completions", headers, body, a.duration + a.drain + 30)
            with lock:
                results.append((r, time.monotonic()))

        th = threading.Thread(target=run, daemon=True)
        th.start()
        threads.append(th)
        n += 1
    deadline = start + a.duration + a.drain
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    after = metrics(ports)
    load_end = float(open("/proc/loadavg").read().split()[0])
    with lock:
        done = list(results)
    ok = [(r, at) for r, at in done if r[3] is None and r[0] is not None]
    errors = [r[3] for r, _ in done if r[3] is not None]
    ttfts = [r[0] for r, _ in ok]
    # (prompt tokens, of which cached) per answered request, from the engine's usage.
    tokens = [((r[2] or {}).get("prompt_tokens", 0),
               ((r[2] or {}).get("prompt_tokens_details") or {}).get("cached_tokens", 0)) for r, _ in ok]
    prompt = sum(p for p, _ in tokens)
    cached = sum(c for _, c in tokens)
    # A miss: the engine found less than half of the prompt in its cache (prefilled the prefix).
    misses = sum(1 for p, c in tokens if c < p / 2)
    last = max((at for _, at in ok), default=start)
    per_replica = [round((b.get("tokens_predicted_total", 0) - a_.get("tokens_predicted_total", 0)) / MAX_TOKENS)
                   for a_, b in zip(before, after)]
    prefill = [int(b.get("prompt_tokens_total", 0) - a_.get("prompt_tokens_total", 0)) for a_, b in zip(before, after)]
    mean = statistics.mean(per_replica) if per_replica else 0
    print(json.dumps({
        "label": a.label, "workload": a.workload, "sent": n, "ok": len(ok), "failed": len(errors),
        "unfinished": n - len(done), "errors": errors[:3],
        "ttft_p50": pct(ttfts, 0.5), "ttft_p90": pct(ttfts, 0.9), "ttft_mean": statistics.mean(ttfts) if ttfts else None,
        "throughput": len(ok) / (last - start) if last > start else 0.0,
        "hit_rate": cached / prompt if prompt else 0.0, "misses": misses, "prompt_tokens": prompt, "cached_tokens": cached,
        "per_replica": per_replica, "prefill_tokens": prefill,
        "skew": (max(per_replica) / mean) if mean else None,
        "loadavg": [load_start, load_end],
    }), flush=True)


if __name__ == "__main__":
    main()
