"""Endpoints and behaviour GPUStack's scripts and UI rely on: `PUT /v2/users/me`,
`POST /v2/workers/labels`, `POST /v2/models/{id}/restart`, a model route unless
`enable_model_route` is false, newest-first default order, `sort_by` on any field, paging and search
on `/v2/gpu-devices`, and `expires_in: 0` meaning "never expires".
"""

from typing import List, Optional

from gpustack.schemas.api_keys import ApiKeyCreate, ApiKeyPublic
from gpustack.schemas.models import ModelCreate
from gpustack.schemas.users import UserPublic, UserSelfUpdate
from gpustack.schemas.workers import WorkerLabelsUpdate
from pydantic import BaseModel

from compat_client import schema_errors
from compat_resources import items_of


class ModelRestartResult(BaseModel):
    """The answer of `POST /v2/models/{id}/restart`, copied from gpustack/routes/models.py (that
    module cannot be imported without GPUStack's server dependencies)."""

    spec_digest: str
    restarted: bool
    deleted_instances: List[str] = []
    message: Optional[str] = None


def run_all(ctx):
    users_me(ctx)
    worker_labels(ctx)
    model_restart(ctx)
    model_route_only_when_asked(ctx)
    default_order(ctx)
    sort_by_any_field(ctx)
    gpu_device_paging(ctx)
    api_key_never_expires(ctx)


def users_me(ctx):
    what = "users: PUT /v2/users/me with UserSelfUpdate(full_name=…) answers 200 (a UserPublic) and reads back"
    body = UserSelfUpdate(full_name="Compat Admin").model_dump(mode="json")
    resp = ctx.client.put("/v2/users/me", body)
    if resp.status != 200:
        return ctx.report.fail(what, resp.describe())
    errors = schema_errors(UserPublic, resp.json)
    me = ctx.client.get("/v2/users/me").json or {}
    problems = [f"answer is not UserPublic: {errors}"] if errors else []
    if me.get("full_name") != "Compat Admin":
        problems.append(f"GET /v2/users/me shows full_name = {me.get('full_name')!r}")
    ctx.report.check(not problems, what, "; ".join(problems))


def worker_labels(ctx):
    what = "workers: POST /v2/workers/labels with WorkerLabelsUpdate answers 204 and the label reads back"
    wid = ctx.ids.get("worker")
    if wid is None:
        return ctx.report.fail(what, "skipped: no worker listed")
    body = WorkerLabelsUpdate(worker_ids=[wid], labels={"compat-bulk": "yes"}).model_dump(mode="json")
    resp = ctx.client.post("/v2/workers/labels", body)
    if resp.status != 204:
        return ctx.report.fail(what, f"answered {resp.describe()}, GPUStack answers 204")
    labels = (ctx.client.get(f"/v2/workers/{wid}").json or {}).get("labels") or {}
    ctx.report.check(labels.get("compat-bulk") == "yes", what, f"labels now {labels}")


def model_restart(ctx):
    what = "models: POST /v2/models/{id}/restart answers 200 (a ModelRestartResult)"
    mid = ctx.ids.get("model")
    if mid is None:
        return ctx.report.fail(what, "skipped: no model created")
    resp = ctx.client.post(f"/v2/models/{mid}/restart")
    if resp.status != 200:
        return ctx.report.fail(what, resp.describe())
    errors = schema_errors(ModelRestartResult, resp.json)
    ctx.report.check(errors is None, what, errors)


def model_route_only_when_asked(ctx):
    """GPUStack creates a route named after the deployment only when `enable_model_route` is true,
    so the SDK's default (null) leaves a deployment no client can call (routes/models.py,
    _persist_model_create). Ferrostack differs on purpose (docs/gpustack-migration.md): null means
    our default, a route; only `false` asks for none."""
    what = "models: enable_model_route null (the SDK default) and true create a model route, false none"
    found = {}
    for flag in (None, True, False):
        name = f"compat-route-{str(flag).lower()}"
        body = ModelCreate(name=name, source="local_path", local_path=ctx.model_dir, replicas=0,
                           enable_model_route=flag).model_dump(mode="json")
        resp = ctx.client.post("/v2/models", body)
        if not resp.ok:
            return ctx.report.fail(what, f"creating {name}: {resp.describe()}")
        routes = [r for r in items_of(ctx.client.get(f"/v2/model-routes?search={name}")) if r.get("name") == name]
        found[flag] = bool(routes)
        ctx.client.delete(f"/v2/models/{resp.json.get('id')}")
        for route in routes:  # if it outlived its deployment
            ctx.client.delete(f"/v2/model-routes/{route.get('id')}")
    ctx.report.check(found == {None: True, True: True, False: False}, what,
                     f"a route was made: with null {found[None]}, with true {found[True]}, with false {found[False]}")


def default_order(ctx):
    """GPUStack lists newest first unless told otherwise (`created_at desc`)."""
    pairs = [
        ("users", ctx.ids.get("admin"), ctx.ids.get("user")),
        ("clusters", min(ctx.cluster_ids, default=None), ctx.ids.get("cluster")),
        ("api-keys", ctx.ids.get("harness_key"), ctx.ids.get("api_key")),
    ]
    for path, older, newer in pairs:
        what = f"{path}: the default order is newest first"
        if older is None or newer is None or older == newer:
            ctx.report.fail(what, "skipped: two rows of known age are missing")
            continue
        ids = [i.get("id") for i in items_of(ctx.client.get(f"/v2/{path}?perPage=100"))]
        if older not in ids or newer not in ids:
            ctx.report.fail(what, f"ids {older} and {newer} not both listed: {ids}")
            continue
        ctx.report.check(ids.index(newer) < ids.index(older), what, f"listed {ids}: {newer} is newer than {older}")


def sort_by_any_field(ctx):
    """`sort_by=field` / `-field` on fields that are not columns of ours answers 200, sorted."""
    for path, field in [("inference-backends", "backend_name"), ("users", "username")]:
        for desc in (False, True):
            key = f"-{field}" if desc else field
            what = f"{path}: ?sort_by={key} answers 200 sorted by {field}{' descending' if desc else ''}"
            resp = ctx.client.get(f"/v2/{path}?perPage=100&sort_by={key}")
            if resp.status != 200:
                ctx.report.fail(what, resp.describe())
                continue
            values = [i.get(field) for i in items_of(resp)]
            ok = any(values == sorted(values, key=k, reverse=desc) for k in (str, str.casefold))
            ctx.report.check(ok and None not in values, what, f"order was {values}")


def gpu_device_paging(ctx):
    ids = ctx.gpu_ids
    what = "gpu-devices: page, perPage and search"
    if len(ids) < 2:
        return ctx.report.fail(what, f"skipped: {len(ids)} GPUs listed, 2 simulated")
    first = ctx.client.get("/v2/gpu-devices?page=1&perPage=1")
    second = ctx.client.get("/v2/gpu-devices?page=2&perPage=1")
    one, two = items_of(first), items_of(second)
    pagination = (first.json or {}).get("pagination") if isinstance(first.json, dict) else None
    want = {"page": 1, "perPage": 1, "total": len(ids), "totalPage": len(ids)}
    ctx.report.check(
        len(one) == 1 and pagination == want,
        "gpu-devices: ?page=1&perPage=1 answers one GPU and its pagination",
        f"{len(one)} items, pagination {pagination}, expected {want}",
    )
    ctx.report.check(
        len(two) == 1 and one[:1] != two[:1] and two[0].get("id") in ids,
        "gpu-devices: ?page=2&perPage=1 answers the other GPU",
        f"page 1 {[i.get('id') for i in one]}, page 2 {[i.get('id') for i in two]}",
    )
    hits = items_of(ctx.client.get(f"/v2/gpu-devices?search={ctx.worker_name}"))
    none = items_of(ctx.client.get("/v2/gpu-devices?search=no-such-gpu"))
    ctx.report.check(
        len(hits) == len(ids) and not none,
        "gpu-devices: ?search= filters (the worker's name finds all, a stranger none)",
        f"search={ctx.worker_name}: {len(hits)} of {len(ids)}; search=no-such-gpu: {len(none)}",
    )


def api_key_never_expires(ctx):
    what = "api-keys: POST ApiKeyCreate(expires_in=0) answers 200, never expiring (expires_at null)"
    body = ApiKeyCreate(name="compat-key-no-expiry", expires_in=0).model_dump(mode="json")
    resp = ctx.client.post("/v2/api-keys", body)
    if not resp.ok:
        return ctx.report.fail(what, resp.describe())
    j = resp.json or {}
    problems = [f"answered {resp.status}"] if resp.status != 200 else []
    if j.get("expires_at") is not None:
        problems.append(f"expires_at = {j.get('expires_at')!r}")
    errors = schema_errors(ApiKeyPublic, j)
    if errors:
        problems.append(f"answer is not ApiKeyPublic: {errors}")
    ctx.report.check(not problems, what, "; ".join(problems))
    if j.get("id") is not None:
        ctx.client.delete(f"/v2/api-keys/{j['id']}")
