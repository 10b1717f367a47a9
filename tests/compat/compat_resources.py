"""Creating, reading and deleting resources the way GPUStack's Python SDK does, judged by GPUStack's
own pydantic schemas: bodies are `*Create(...).model_dump(mode="json")` (every field, nulls and
defaults included), answers must validate as the `*Public` schema, lists as `PaginatedList[...]`.
"""

import time

from gpustack.schemas.api_keys import ApiKeyCreate, ApiKeyPublic
from gpustack.schemas.clusters import ClusterCreate, ClusterPublic, ClusterRegistrationTokenPublic
from gpustack.schemas.common import PaginatedList
from gpustack.schemas.dashboard import SystemSummary
from gpustack.schemas.gpu_devices import GPUDevicePublic
from gpustack.schemas.inference_backend import InferenceBackendCreate, InferenceBackendPublic
from gpustack.schemas.model_routes import (
    ModelRouteCreate,
    ModelRoutePublic,
    ModelRouteTargetPublic,
    MyModelPublic,
)
from gpustack.schemas.models import ModelCreate, ModelInstancePublic, ModelPublic
from gpustack.schemas.users import UserCreate, UserPublic
from gpustack.schemas.workers import WorkerPublic

from compat_client import quote_id, schema_errors

# GPUStack 2.3.0's password rule: upper, lower, digit and one of `!@#$%^&*_+.`.
USER_PASSWORD = "Compat-pw-12345!"

# A custom backend as docs/backends.md and GPUStack's schema describe it: one version with an image,
# a framework and a run command.
BACKEND_VERSIONS = {
    "v1": {
        "image_name": "compat/serve:v1",
        "custom_framework": "cpu",
        "run_command": "serve {{model_path}} --port {{port}}",
    }
}

# Every list the suite validates: (path, its item schema, whether GPUStack serves GET /{id}).
LISTED = [
    ("users", UserPublic, True),
    ("inference-backends", InferenceBackendPublic, True),
    ("models", ModelPublic, True),
    ("model-instances", ModelInstancePublic, True),
    ("workers", WorkerPublic, True),
    ("gpu-devices", GPUDevicePublic, True),
    ("api-keys", ApiKeyPublic, False),
    ("clusters", ClusterPublic, True),
    ("model-routes", ModelRoutePublic, True),
    ("model-route-targets", ModelRouteTargetPublic, False),
    ("my-models", MyModelPublic, True),
]

# What the suite creates, in order (deleted in reverse): id key, path, Public schema.
CREATED = [
    ("user", "users", UserPublic),
    ("api_key", "api-keys", ApiKeyPublic),
    ("cluster", "clusters", ClusterPublic),
    ("backend", "inference-backends", InferenceBackendPublic),
    ("model", "models", ModelPublic),
    ("route", "model-routes", ModelRoutePublic),
]


def create_kwargs(ctx):
    """The keyword arguments each SDK-style create body is built from (also reused for the
    `*Update` bodies)."""
    return {
        "user": (UserCreate, {"username": "compat-user", "password": USER_PASSWORD, "full_name": "Compat User"}),
        "api_key": (ApiKeyCreate, {"name": "compat-key", "description": "made by the compatibility suite"}),
        "cluster": (ClusterCreate, {"name": "compat-cluster", "description": "made by the compatibility suite"}),
        "backend": (
            InferenceBackendCreate,
            {
                "backend_name": "compat-suite-custom",
                "version_configs": BACKEND_VERSIONS,
                "default_version": "v1",
                "description": "made by the compatibility suite",
            },
        ),
        "model": (
            ModelCreate,
            {"name": "compat-model", "source": "local_path", "local_path": ctx.model_dir, "replicas": 1},
        ),
        "route": (
            ModelRouteCreate,
            {
                "name": "compat-route",
                "description": "made by the compatibility suite",
                "targets": [{"model_id": ctx.ids["model"], "weight": 100}] if ctx.ids.get("model") else None,
            },
        ),
    }


def create_all(ctx):
    """POSTs each SDK body; expects GPUStack's 200 and an answer that is the `*Public` schema.
    When the SDK body is refused, a minimal body (only the fields set) creates the resource anyway
    so that the later checks still have something to read."""
    for key, path, public in CREATED:
        cls, kw = create_kwargs(ctx)[key]  # recomputed: the route targets the model just created
        sdk = cls(**kw)
        ctx.create_kwargs[key] = kw
        ctx.ids[key] = create_one(ctx, path, sdk, public)
        if key == "model" and ctx.ids[key]:
            ctx.ids["instance"] = wait_for_instance(ctx, ctx.ids[key])


def create_one(ctx, path, sdk_model, public):
    """One SDK-shaped create; answers the new id (or None)."""
    body = sdk_model.model_dump(mode="json")
    what = f"{path}: POST /v2/{path} with {type(sdk_model).__name__}(…).model_dump() ({len(body)} fields)"
    resp = ctx.client.post(f"/v2/{path}", body)
    if not resp.ok:
        ctx.report.fail(what, f"refused: {resp.describe()}")
        minimal = sdk_model.model_dump(mode="json", exclude_unset=True)
        resp = ctx.client.post(f"/v2/{path}", minimal)
        if not resp.ok:
            print(f"     (a minimal body {sorted(minimal)} is refused too: {resp.describe()})")
            return None
        print(f"     (continuing with the minimal body {sorted(minimal)})")
    else:
        errors = schema_errors(public, resp.json)
        problems = [f"answered {resp.status}, GPUStack answers 200"] if resp.status != 200 else []
        if errors:
            problems.append(f"answer is not {public.__name__}: {errors}")
        ctx.report.check(not problems, f"{what} answers 200 and validates as {public.__name__}",
                         "; ".join(problems))
    return resp.json.get("id") if isinstance(resp.json, dict) else None


def wait_for_instance(ctx, model_id, seconds=10.0):
    """The id of the first instance of `model_id` (the controller creates it), or None."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        resp = ctx.client.get("/v2/model-instances?perPage=100")
        for item in items_of(resp):
            if item.get("model_id") == model_id:
                return item.get("id")
        time.sleep(0.2)
    ctx.report.fail("model-instances: an instance of compat-model (replicas 1)", f"none within {seconds:.0f} s")
    return None


def items_of(resp):
    j = resp.json
    items = j.get("items") if isinstance(j, dict) else None
    return items if isinstance(items, list) else []


def delete_all(ctx):
    """DELETE what the suite created, newest first; GPUStack answers 200, then the row is gone."""
    for key, path, _ in reversed(CREATED):
        rid = ctx.ids.get(key)
        if rid is None:
            continue
        resp = ctx.client.delete(f"/v2/{path}/{rid}")
        ctx.report.check(resp.status == 200, f"{path}: DELETE /v2/{path}/{{id}} answers 200", resp.describe())
        if key == "api_key":
            gone = all(i.get("id") != rid for i in items_of(ctx.client.get("/v2/api-keys?perPage=100")))
        else:
            gone = ctx.client.get(f"/v2/{path}/{rid}").status == 404
        ctx.report.check(gone, f"{path}: the deleted row is gone", "still readable after DELETE")


def validate_all(ctx):
    """Every list is `PaginatedList[XPublic]` and every item's GET /{id} is `XPublic`."""
    for path, public, gpustack_has_get_one in LISTED:
        items = check_list(ctx, f"/v2/{path}", public, path)
        check_items(ctx, path, public, items, gpustack_has_get_one)
        remember_ids(ctx, path, items)
    resp = ctx.client.get("/v2/inference-backends/all")
    check_schema(ctx, "inference-backends: GET /v2/inference-backends/all", list[InferenceBackendPublic], resp,
                 "list[InferenceBackendPublic]")
    if ctx.ids.get("model"):
        check_list(ctx, f"/v2/models/{ctx.ids['model']}/instances", ModelInstancePublic, "models")
    for cluster_id in ctx.cluster_ids:
        resp = ctx.client.get(f"/v2/clusters/{cluster_id}/registration-token")
        check_schema(
            ctx, f"clusters: GET /v2/clusters/{cluster_id}/registration-token", ClusterRegistrationTokenPublic, resp
        )
    check_schema(ctx, "dashboard: GET /v2/dashboard", SystemSummary, ctx.client.get("/v2/dashboard"))


def check_schema(ctx, what, schema, resp, name=None):
    name = name or schema.__name__
    if resp.status != 200:
        return ctx.report.fail(f"{what} is {name}", f"HTTP {resp.describe()}")
    errors = schema_errors(schema, resp.json)
    ctx.report.check(errors is None, f"{what} is {name}", errors)


def check_list(ctx, url, public, label):
    """Validates one list envelope; answers its items."""
    resp = ctx.client.get(url)
    what = f"{label}: GET {url} is PaginatedList[{public.__name__}]"
    if resp.status != 200:
        ctx.report.fail(what, f"HTTP {resp.describe()}")
        return []
    errors = schema_errors(PaginatedList[public], resp.json)
    items = items_of(resp)
    ctx.report.check(errors is None, f"{what} ({len(items)} items)", errors)
    return items


def check_items(ctx, path, public, items, gpustack_has_get_one):
    """GET /{id} of every listed item, validated; failures grouped by their error."""
    ids = [i.get("id") for i in items if isinstance(i, dict) and i.get("id") is not None]
    if not ids:
        return
    what = f"{path}: GET /v2/{path}/{{id}} is {public.__name__}"
    if not gpustack_has_get_one:
        what += " (a Ferrostack extra: GPUStack has no GET one)"
    by_error = {}
    for item_id in ids:
        resp = ctx.client.get(f"/v2/{path}/{quote_id(item_id)}")
        if not gpustack_has_get_one and ctx.routes.missing(resp, f"/v2/{path}/{quote_id(item_id)}"):
            return ctx.report.ok(f"{path}: no GET /v2/{path}/{{id}}, as in GPUStack")
        err = f"HTTP {resp.describe()}" if resp.status != 200 else schema_errors(public, resp.json)
        if err:
            by_error.setdefault(err, []).append(str(item_id))
    why = "; ".join(f"id {', '.join(v)}: {e}" for e, v in by_error.items())
    ctx.report.check(not by_error, f"{what} ({len(ids)} items)", why)


def remember_ids(ctx, path, items):
    """Ids the later steps use: the worker, a GPU, the clusters, a target, a my-models entry."""
    ids = [i.get("id") for i in items if isinstance(i, dict)]
    if path == "workers":
        named = [i for i in items if i.get("name") == ctx.worker_name]
        ctx.ids["worker"] = (named or items or [{}])[0].get("id")
    elif path == "gpu-devices" and ids:
        ctx.ids["gpu"] = ids[0]
        ctx.gpu_ids = ids
    elif path == "clusters":
        ctx.cluster_ids = ids
    elif path == "model-route-targets" and ids:
        ctx.ids["target"] = ids[0]
    elif path == "my-models" and ids:
        ctx.ids["my_model"] = ids[0]
