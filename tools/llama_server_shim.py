"""llama-server compatible launcher over PyPI `xllamacpp` (llama.cpp's own C++ HTTP server in a wheel).

Usage (normally through the tools/llama-server wrapper, which picks the .cache/venv-llm interpreter):
    llama-server -m MODEL.gguf [--host 127.0.0.1] [--port 8080] [-c N] [-t N] [-tb N] [-np N] [-a ALIAS]
                 [--embedding|--embeddings] [--pooling none|mean|cls|last|rank] [--metrics] [--slots]
                 [--api-key K1[,K2]] [--api-key-file F] [-b N] [-ub N] [-n N] [--threads-http N]
                 [--timeout N] [--no-webui] [--no-warmup] [-v | -lv N]
                 [--cache-ram MiB]
                 [-ngl N] [--jinja] [-fa on|off|auto]        (accepted, ignored: CPU-only wheel)
                 [--version] [-h]
As strict as the real server: argv is parsed against llama-server's own flag list (llama_server_flags.txt,
extracted from the llama.cpp sources xllamacpp vendors), so an unknown flag, a positional argument, a
`--flag=value` spelling or a missing value exits 1 with llama-server's own message
(`error: invalid argument: --no-such-flag`). Real flags the shim does not implement are warned about and
ignored, with exactly the values they take.

Behaviour: logs go to stderr; the HTTP server is up when this prints "... ready on URL"; SIGTERM or SIGINT ->
immediate exit 0 (in-flight requests are cut, as with llama-server); an unloadable model, a busy port or bad
arguments -> message on stderr and exit 1.
"""

import os
import signal
import sys
import time

PROG = "llama-server (xllamacpp shim)"

# flag -> (key, kind). kinds: str, int, list (comma separated), flag, off (sets False),
# ignore (takes a value, ignored), ignore_flag. Every name must be a real llama-server flag taking as many
# values as its kind says (checked against llama_server_flags.txt at start).
SPEC = {}


def _add(names, key, kind):
    for n in names.split():
        SPEC[n] = (key, kind)


_add("-m --model", "model", "str")
_add("--host", "host", "str")
_add("--port", "port", "int")
_add("-c --ctx-size", "ctx_size", "int")
_add("-t --threads", "threads", "int")
_add("-tb --threads-batch", "threads_batch", "int")
_add("-np --parallel", "parallel", "int")
_add("-a --alias", "alias", "list")
_add("--embedding --embeddings", "embedding", "flag")
_add("--pooling", "pooling", "str")
_add("--metrics", "metrics", "flag")
_add("--slots", "slots", "flag")
_add("--no-slots", "slots", "off")
_add("--props", "props", "flag")
_add("--api-key", "api_key", "list")
_add("--api-key-file", "api_key_file", "str")
_add("-b --batch-size", "batch_size", "int")
_add("-ub --ubatch-size", "ubatch_size", "int")
_add("-n --predict --n-predict", "n_predict", "int")
_add("--threads-http", "threads_http", "int")
_add("-to --timeout", "timeout", "int")
_add("--no-webui", "webui", "off")
_add("--webui", "webui", "flag")
_add("--no-warmup", "warmup", "off")
_add("-cb --cont-batching", "cont_batching", "flag")
_add("-nocb --no-cont-batching", "cont_batching", "off")
_add("-v --verbose --log-verbose", "verbose", "flag")
_add("-lv --verbosity --log-verbosity", "verbosity", "int")
_add("-ngl --gpu-layers --n-gpu-layers", "n_gpu_layers", "ignore")
_add("--jinja --no-jinja", "jinja", "ignore_flag")
_add("-fa --flash-attn", "flash_attn", "ignore")
_add("-cram --cache-ram", "cache_ram", "int")
_add("--version", "version", "flag")
_add("-h --help", "help", "flag")

POOLING = {"none": "NONE", "mean": "MEAN", "cls": "CLS", "last": "LAST", "rank": "RANK"}


def warn(msg):
    print(f"{PROG}: warning: {msg}", file=sys.stderr, flush=True)


def die(msg, code=1):
    print(f"{PROG}: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


FLAGS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llama_server_flags.txt")


def real_flags():
    """llama-server's own flags -> values taken (tools/llama_server_flags.txt, from llama.cpp's arg.cpp)."""
    flags = {}
    with open(FLAGS_FILE, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, values = line.split()
                flags[name] = int(values)
    for name, (_, kind) in SPEC.items():  # the shim's table must agree with the real one
        want = 0 if kind in ("flag", "off", "ignore_flag") else 1
        if flags.get(name) != want:
            die(f"internal: shim flag {name} is not a llama-server flag taking {want} value(s)")
    return flags


def refuse(text):
    """Exit as llama-server does when common_params_parse fails: its message on stderr, status 1."""
    print(text, file=sys.stderr, flush=True)
    sys.exit(1)


def parse_args(argv, flags=None):
    """Parses argv exactly as llama.cpp's common_params_parse_ex does: every token must be one of
    llama-server's flags (a `--` flag may spell '-' as '_'), followed by the number of values it takes.
    Unknown flags, positional arguments and `--flag=value` spellings are refused with llama-server's text."""
    flags = real_flags() if flags is None else flags
    opts = {}
    i = 0
    while i < len(argv):
        name = argv[i]
        i += 1
        if name.startswith("--"):
            name = name.replace("_", "-")
        if name not in flags:
            refuse(f"error: invalid argument: {name}")
        n = flags[name]
        if len(argv) - i < n:
            refuse(f'error while handling argument "{name}": expected value for argument\n\n'
                   "to show complete usage, run with -h")
        values = argv[i:i + n]
        i += n
        if name not in SPEC:
            warn(f"llama-server flag {name} {' '.join(values)} is accepted and ignored by the shim")
            continue
        key, kind = SPEC[name]
        if kind in ("flag", "off"):
            opts[key] = kind == "flag"
            continue
        if kind in ("ignore", "ignore_flag"):
            continue
        val = values[0]
        if kind == "int":
            try:
                val = int(val)
            except ValueError:
                refuse(f'error while handling argument "{name}": stoi\n\n'
                       "to show complete usage, run with -h")
        elif kind == "list":
            val = opts.get(key, []) + [v for v in val.split(",") if v]
        opts[key] = val
    return opts


def build_params(xl, o):
    p = xl.CommonParams()
    p.model.path = o["model"]
    p.hostnames = [o.get("host", "127.0.0.1")]
    p.port = o.get("port", 8080)
    if "ctx_size" in o:
        p.n_ctx = o["ctx_size"]
    if "threads" in o:
        p.cpuparams.n_threads = o["threads"]
        p.cpuparams_batch.n_threads = o.get("threads_batch", o["threads"])
    elif "threads_batch" in o:
        p.cpuparams_batch.n_threads = o["threads_batch"]
    if "parallel" in o:
        p.n_parallel = o["parallel"]
    if o.get("alias"):
        p.model_alias = set(o["alias"])
    if "embedding" in o:
        p.embedding = o["embedding"]
    if "pooling" in o:
        pt = POOLING.get(o["pooling"].lower())
        if pt is None:
            die(f"--pooling must be one of {', '.join(POOLING)}, got {o['pooling']!r}")
        p.pooling_type = getattr(xl.llama_pooling_type, "LLAMA_POOLING_TYPE_" + pt)
    if "metrics" in o:
        p.endpoint_metrics = o["metrics"]
    if "slots" in o:
        p.endpoint_slots = o["slots"]
    if "props" in o:
        p.endpoint_props = o["props"]
    keys = list(o.get("api_key", []))
    if "api_key_file" in o:
        try:
            with open(o["api_key_file"]) as f:
                keys += [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        except OSError as e:
            die(f"cannot read --api-key-file: {e}")
    if keys:
        p.api_keys = keys
    if "batch_size" in o:
        p.n_batch = o["batch_size"]
    if "ubatch_size" in o:
        p.n_ubatch = o["ubatch_size"]
    if "n_predict" in o:
        p.n_predict = o["n_predict"]
    if "threads_http" in o:
        p.n_threads_http = o["threads_http"]
    if "timeout" in o:
        p.timeout_read = p.timeout_write = o["timeout"]
    if "webui" in o:
        p.ui = o["webui"]
    if "warmup" in o:
        p.warmup = o["warmup"]
    if "cache_ram" in o:
        p.cache_ram_mib = o["cache_ram"]
    if "cont_batching" in o:
        p.cont_batching = o["cont_batching"]
    if "verbosity" in o:
        p.verbosity = o["verbosity"]
    elif o.get("verbose"):
        p.verbosity = 4
    return p


def main(argv):
    o = parse_args(argv)
    if o.get("help"):
        print(__doc__)
        return 0
    if o.get("version"):
        import xllamacpp as xl

        print(f"version: xllamacpp {xl.__version__} (llama-server shim)")
        print(xl.get_system_info().strip())
        return 0
    if not o.get("model"):
        die("no model given (-m/--model FILE.gguf); -hf/--model-url are not supported by the shim")
    model = o["model"]
    if not os.path.isfile(model) or not os.access(model, os.R_OK):
        die(f"model file not found or not readable: {model}")
    port = o.get("port", 8080)
    if not 0 < port < 65536:
        die(f"invalid --port {port}")

    # Block the stop signals in every thread (llama.cpp's threads inherit this mask) and collect them with
    # sigwait below, so no C++ thread can receive them and no Python handler races the server teardown.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    import xllamacpp as xl

    params = build_params(xl, o)
    t0 = time.monotonic()
    try:
        server = xl.Server(params)
    except Exception as e:  # RuntimeError("Failed to init server ...") on a bad model / busy port
        die(f"failed to start server for model {model!r} on "
            f"{params.hostnames[0]}:{port}: {e} (see log above)")
    print(f"{PROG}: ready on {server.listening_address} in {time.monotonic() - t0:.2f}s",
          file=sys.stderr, flush=True)

    sig = signal.sigwait(stop_signals)
    # Exit at once, like llama-server cutting in-flight requests on SIGTERM. Destroying xllamacpp.Server
    # instead (`del server`) takes ~20 ms when idle but blocks 30 s (holding the GIL, so no Python
    # watchdog can fire) while a request is in flight. Nothing is persisted, so skipping it loses nothing.
    print(f"{PROG}: got {signal.Signals(sig).name}, exiting", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
