#!/usr/bin/env python3
"""bench/perf_groups.py - where a process's CPU time goes, from a `perf record` without call graphs.

Reads `perf script -F ip,sym,dso` on stdin (one line per sample: the frame the CPU was in) and prints
two markdown tables: the share of samples per group (kernel networking, kernel scheduling, malloc,
memcpy, hyper, tokio, axum/tower, JSON, our code, ...) and the top symbols. Self time only: a sample
counts for the function it landed in, not its callers. Used by bench/gateway.sh (PERF=1).
Usage: perf script -i perf.data -F ip,sym,dso | bench/perf_groups.py [TOP]
"""
import collections
import re
import sys

LINE = re.compile(r"^\s*([0-9a-f]+)\s+(.*?)\s*\(([^()]*)\)\s*$")
# A path root: a name followed by :: that does not itself follow ::, e.g. core and ferrostack in
# core::ptr::drop_in_place<ferrostack::server::AppState>.
CRATE = re.compile(r"(?:^|[^A-Za-z0-9_:])([A-Za-z_][A-Za-z0-9_]*)::")
STD = {"core", "alloc", "std", "impl"}
KERNEL_NET = re.compile(
    r"tcp|sock|skb|^ip_|ipv4|inet|dev_|netif|napi|net_|loopback|__netif|nf_|sendmsg|recvmsg|sendto|recvfrom"
    r"|_copy_to_iter|_copy_from_iter|copy_user|csum|neigh|dst_|rt_|fib_|xmit|__kfree_skb|kmem_cache|page_frag")
KERNEL_SCHED = re.compile(
    r"schedule|switch|wake|futex|ttwu|enqueue|dequeue|pick_next|update_curr|update_load|load_balance|idle"
    r"|^ep_|epoll|hrtimer|finish_task|select_task|sched|cpuacct|psi_|rcu")
CRATES = [
    ("our code (ferrostack::)", {"ferrostack"}),
    ("JSON (serde_json, serde)", {"serde_json", "serde", "serde_core"}),
    ("hyper / http / httparse", {"hyper", "hyper_util", "http", "httparse", "http_body", "http_body_util", "h2"}),
    ("tokio / mio (scheduling, I/O)", {"tokio", "mio", "parking_lot", "parking_lot_core", "futures_util",
                                       "futures_core", "futures_channel"}),
    ("axum / tower", {"axum", "axum_core", "tower", "tower_http", "tower_layer", "tower_service", "matchit"}),
    ("tracing / metrics", {"tracing", "tracing_core", "tracing_subscriber", "prometheus"}),
    ("bytes", {"bytes"}),
]


def group(sym, dso):
    if "kernel" in dso or dso.startswith("[") and dso != "[unknown]":
        if KERNEL_NET.search(sym):
            return "kernel: TCP/IP, sockets, copies"
        if KERNEL_SCHED.search(sym):
            return "kernel: scheduling, futex, epoll"
        return "kernel: syscall entry/exit, other"
    if "libc" in dso or "ld-linux" in dso:
        if re.search(r"malloc|free|realloc|calloc|_int_|tcache|arena|unlink_chunk|consolidate", sym):
            return "malloc / free"
        if re.search(r"mem(cpy|move|set|cmp|chr)|str(len|cmp)", sym):
            return "memcpy / memset / memcmp (libc)"
        return "libc other (syscall wrappers, pthread)"
    if re.search(r"__rust_alloc|__rust_dealloc|__rust_realloc|__rdl_", sym):
        return "malloc / free"
    crates = [c for c in CRATE.findall(sym) if c not in STD]
    for name, members in CRATES:
        if crates and crates[0] in members:
            return name
    if crates:
        return "other crates"
    if sym == "[unknown]" or not sym:
        return "unknown (no symbol)"
    return "std / core (unattributed generics)"


def main():
    top = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    groups, syms, others = collections.Counter(), collections.Counter(), collections.Counter()
    total = 0
    for line in sys.stdin:
        m = LINE.match(line)
        if not m:
            continue
        sym, dso = m.group(2).strip() or "[unknown]", m.group(3)
        sym = re.sub(r"::h[0-9a-f]{16}$", "", sym)
        sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
        g = group(sym, dso)
        if g == "other crates":
            others[[c for c in CRATE.findall(sym) if c not in STD][0]] += 1
        groups[g] += 1
        syms[(sym, dso.rsplit("/", 1)[-1], g)] += 1
        total += 1
    if not total:
        print("no samples")
        return
    pct = lambda n: f"{n / total * 100:.1f} %"
    print(f"{total} samples, self time per group:")
    print()
    print("| group | share of samples |")
    print("| --- | --- |")
    for g, n in groups.most_common():
        extra = ""
        if g == "other crates":
            extra = " (" + ", ".join(f"{c} {pct(k)}" for c, k in others.most_common(6)) + ")"
        print(f"| {g}{extra} | {pct(n)} |")
    print()
    print(f"Top {top} symbols:")
    print()
    print("| symbol | object | group | share |")
    print("| --- | --- | --- | --- |")
    for (sym, dso, g), n in syms.most_common(top):
        short = sym if len(sym) <= 90 else sym[:87] + "..."
        print(f"| `{short.replace('|', '/')}` | {dso} | {g} | {pct(n)} |")


if __name__ == "__main__":
    main()
