"""Edits the way GPUStack clients make them: read an object, change one field, PUT the whole object
back (read-only fields and all); and PUT bodies built with GPUStack's `*Update` schemas. Each must
answer 200, validate as the `*Public` schema, and the change must be visible on a fresh GET.
"""

from gpustack.schemas.api_keys import ApiKeyPublic, ApiKeyUpdate
from gpustack.schemas.clusters import ClusterPublic, ClusterUpdate
from gpustack.schemas.inference_backend import InferenceBackendPublic, InferenceBackendUpdate
from gpustack.schemas.model_routes import ModelRoutePublic, ModelRouteUpdate
from gpustack.schemas.models import ModelPublic, ModelUpdate
from gpustack.schemas.users import UserPublic, UserUpdate
from gpustack.schemas.workers import WorkerPublic, WorkerUpdate

from compat_client import reads_back, schema_errors
from compat_resources import items_of

# (path, id key, Public schema, field changed, new value as a function of the old one)
ROUND_TRIPS = [
    ("users", "user", UserPublic, "full_name", lambda old: "Compat Round Trip"),
    ("inference-backends", "backend", InferenceBackendPublic, "description", lambda old: "round trip"),
    ("models", "model", ModelPublic, "description", lambda old: "round trip"),
    ("workers", "worker", WorkerPublic, "labels", lambda old: {**(old or {}), "compat-round-trip": "yes"}),
    ("clusters", "cluster", ClusterPublic, "description", lambda old: "round trip"),
    ("model-routes", "route", ModelRoutePublic, "description", lambda old: "round trip"),
    ("api-keys", "api_key", ApiKeyPublic, "description", lambda old: "round trip"),
]

# (path, id key, Public schema, Update schema, field changed, new value as a function of the old one)
UPDATES = [
    ("users", "user", UserPublic, UserUpdate, "full_name", lambda old: "Compat Update Schema"),
    ("inference-backends", "backend", InferenceBackendPublic, InferenceBackendUpdate, "description",
     lambda old: "update schema"),
    ("models", "model", ModelPublic, ModelUpdate, "description", lambda old: "update schema"),
    ("workers", "worker", WorkerPublic, WorkerUpdate, "labels",
     lambda old: {**(old or {}), "compat-update-schema": "yes"}),
    ("clusters", "cluster", ClusterPublic, ClusterUpdate, "description", lambda old: "update schema"),
    ("model-routes", "route", ModelRoutePublic, ModelRouteUpdate, "description", lambda old: "update schema"),
    ("api-keys", "api_key", ApiKeyPublic, ApiKeyUpdate, "description", lambda old: "update schema"),
]


def read_item(ctx, path, rid):
    """GET one; for API keys from the list, since GPUStack has no GET /v2/api-keys/{id}."""
    if path == "api-keys":
        resp = ctx.client.get("/v2/api-keys?perPage=100")
        found = [i for i in items_of(resp) if i.get("id") == rid]
        return found[0] if found else None, resp
    resp = ctx.client.get(f"/v2/{path}/{rid}")
    return (resp.json if resp.status == 200 and isinstance(resp.json, dict) else None), resp


def round_trips(ctx):
    for path, key, public, field, change in ROUND_TRIPS:
        what = f"{path}: GET → change {field} → PUT the whole object answers 200 and the change reads back"
        rid = ctx.ids.get(key)
        if rid is None:
            ctx.report.fail(what, f"skipped: no {key} to edit")
            continue
        item, resp = read_item(ctx, path, rid)
        if item is None:
            ctx.report.fail(what, f"GET: {resp.describe()}")
            continue
        body = dict(item)
        body[field] = change(item.get(field))
        put_and_check(ctx, what, path, rid, public, body, field, body[field])


def update_schemas(ctx):
    for path, key, public, update_cls, field, change in UPDATES:
        what = f"{path}: PUT {update_cls.__name__}(…).model_dump() answers 200 and the change reads back"
        rid = ctx.ids.get(key)
        if rid is None:
            ctx.report.fail(what, f"skipped: no {key} to edit")
            continue
        item, resp = read_item(ctx, path, rid)
        if item is None:
            ctx.report.fail(what, f"GET: {resp.describe()}")
            continue
        kwargs = update_kwargs(ctx, key, update_cls, item)
        kwargs[field] = change(item.get(field))
        body = update_cls(**kwargs).model_dump(mode="json")
        put_and_check(ctx, what, path, rid, public, body, field, kwargs[field])


def update_kwargs(ctx, key, update_cls, item):
    """What a client would send: the create arguments it used (the worker: its name and labels),
    restricted to the Update schema's fields; never the password again."""
    if key == "worker":
        return {"name": item.get("name"), "labels": item.get("labels") or {}}
    created = dict(ctx.create_kwargs.get(key) or {})
    created.pop("password", None)
    if key == "route":
        created.pop("targets", None)  # None means "leave the targets alone"
    return {k: v for k, v in created.items() if k in update_cls.model_fields}


def put_and_check(ctx, what, path, rid, public, body, field, expected):
    resp = ctx.client.put(f"/v2/{path}/{rid}", body)
    problems = []
    if resp.status != 200:
        problems.append(f"PUT answered {resp.describe()}")
    else:
        errors = schema_errors(public, resp.json)
        if errors:
            problems.append(f"answer is not {public.__name__}: {errors}")
        fresh, _ = read_item(ctx, path, rid)
        if fresh is None or not reads_back(expected, fresh.get(field)):
            got = None if fresh is None else fresh.get(field)
            problems.append(f"a fresh GET shows {field} = {got!r}, not {expected!r}")
    ctx.report.check(not problems, what, "; ".join(problems))
