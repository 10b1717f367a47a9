"""GPUStack 2.3.0 compatibility suite: judges a running Ferrostack server with GPUStack's own pydantic
schemas (the gpustack wheel, installed without its dependencies; see requirements.txt).

It creates resources with SDK-shaped bodies (`*Create(...).model_dump(mode="json")`), validates
every list and item against the `*Public` schemas, edits objects the way GPUStack clients do, checks
the endpoints and list semantics GPUStack scripts use, classifies every field of the create schemas
and every `/v2` operation of GPUStack's OpenAPI document, and keeps the measured tables in
docs/gpustack-migration.md current (FERROSTACK_BLESS=1 rewrites them).

One line per check (`ok` / `FAIL`), a summary, exit status 1 on any FAIL.
Run by scripts/compat-gpustack.sh, which starts a throwaway server; by hand:

    python tests/compat/gpustack_compat.py --base http://127.0.0.1:8080 --key <admin API key> \
        --password <admin password> --worker <worker name> [--label sqlite] [--bless]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class Context:
    """What the steps share: the client, the report, ids of what exists, and the measurements."""

    def __init__(self, client, report, worker_name, model_dir, admin_password=None):
        self.client = client
        self.admin_password = admin_password
        self.sdk = {}
        self.report = report
        self.worker_name = worker_name
        self.model_dir = model_dir
        self.ids = {}
        self.create_kwargs = {}
        self.cluster_ids = []
        self.gpu_ids = []
        self.other_vllm_version = None
        self.fields = {}
        self.endpoints = {}
        self.routes = None


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="server URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--key", required=True, help="an admin API key (all scopes)")
    p.add_argument("--worker", default="compat", help="name of the server's worker (simulated GPUs)")
    p.add_argument("--password", default=os.environ.get("FERROSTACK_COMPAT_PASSWORD"),
                   help="the admin's password, for the SDK's user name + password (HTTP Basic) checks "
                        "[default: $FERROSTACK_COMPAT_PASSWORD]")
    p.add_argument("--label", default="server", help="what to call this run in the summary (e.g. sqlite)")
    p.add_argument("--operations", default=None,
                   help="GPUStack's OpenAPI document (.json) or operations list to probe "
                        "[default: gpustack-2.3.0-operations.txt next to this file]")
    p.add_argument("--doc", default=os.path.join(ROOT, "docs", "gpustack-migration.md"))
    p.add_argument("--bless", action="store_true", default=os.environ.get("FERROSTACK_BLESS") == "1",
                   help="rewrite the measured tables instead of comparing (also FERROSTACK_BLESS=1)")
    p.add_argument("--no-doc", action="store_true", help="neither compare nor rewrite the doc")
    return p.parse_args()


def make_model_dir():
    """A local model directory for `source: local_path` (a config.json, as a Qwen-style model has)."""
    path = tempfile.mkdtemp(prefix="ferrostack-compat-model.")
    with open(os.path.join(path, "config.json"), "w") as f:
        f.write('{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, '
                '"num_attention_heads": 14, "num_key_value_heads": 2, "num_hidden_layers": 24, '
                '"vocab_size": 151936, "max_position_embeddings": 32768, "torch_dtype": "bfloat16"}\n')
    return path


def know_the_harness(ctx):
    """The admin's id and the harness's own key id (rows older than anything the suite makes)."""
    from compat_resources import items_of

    me = ctx.client.get("/v2/users/me")
    if me.status != 200:
        raise SystemExit(f"cannot read /v2/users/me with the given key: {me.describe()}")
    ctx.ids["admin"] = (me.json or {}).get("id")
    keys = items_of(ctx.client.get("/v2/api-keys?perPage=100"))
    ctx.ids["harness_key"] = min((k.get("id") for k in keys if k.get("id") is not None), default=None)


def run_step(ctx, name, fn, *args):
    """Runs one step; a crash (the suite's or an answer it could not read) is one FAIL, not the end."""
    started = time.monotonic()
    print(f"-- {name}", flush=True)
    try:
        fn(ctx, *args)
    except Exception as e:  # noqa: BLE001 - reported, then the next step runs
        where = traceback.extract_tb(e.__traceback__)[-1]
        ctx.report.fail(f"{name}: the step crashed", f"{type(e).__name__}: {e} "
                                                      f"({os.path.basename(where.filename)}:{where.lineno})")
    print(f"   ({time.monotonic() - started:.1f} s)", flush=True)


def main():
    args = parse_args()
    sys.dont_write_bytecode = True  # no __pycache__ left in tests/compat
    sys.path.insert(0, HERE)
    started = time.monotonic()
    import compat_doc
    import compat_endpoints
    import compat_fields
    import compat_resources
    import compat_sdk
    import compat_semantics
    import compat_updates
    from compat_client import Client, Report

    print(f"-- GPUStack schemas imported ({time.monotonic() - started:.1f} s)")
    ctx = Context(Client(args.base, args.key), Report(), args.worker, make_model_dir(), args.password)
    ctx.routes = compat_endpoints.RouteProbe(ctx.client)
    know_the_harness(ctx)

    def endpoints(c):
        c.endpoints = compat_endpoints.probe_all(c, args.operations or compat_endpoints.OPERATIONS_FILE)

    run_step(ctx, "create with SDK bodies", compat_resources.create_all)
    run_step(ctx, "lists and items against the *Public schemas", compat_resources.validate_all)
    run_step(ctx, "GET → change → PUT the whole object", compat_updates.round_trips)
    run_step(ctx, "PUT *Update schema bodies", compat_updates.update_schemas)
    run_step(ctx, "endpoints and list semantics GPUStack scripts use", compat_semantics.run_all)
    run_step(ctx, "fields of the *Create schemas", compat_fields.probe_all)
    run_step(ctx, "GPUStack's /v2 operations", endpoints)
    run_step(ctx, "GPUStack's SDK (ClientSet) as admin and as a regular user", compat_sdk.run_all)
    run_step(ctx, "delete what the suite created", compat_resources.delete_all)
    if not args.no_doc and ctx.endpoints and ctx.fields:
        section = compat_doc.render(ctx.endpoints, ctx.fields, compat_sdk.sdk_table(ctx.sdk))
        run_step(ctx, "docs/gpustack-migration.md", lambda c: compat_doc.sync(args.doc, section, c.report, args.bless))

    shutil.rmtree(ctx.model_dir, ignore_errors=True)
    print(f"\n{ctx.report.summary(args.label)} ({time.monotonic() - started:.0f} s)")
    if ctx.report.failures:
        print(f"{len(ctx.report.failures)} FAIL ({args.label}):")
        for line in ctx.report.failures:
            print(f"  FAIL {line}")
    return 1 if ctx.report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
