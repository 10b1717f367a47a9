"""GPUStack's own Python SDK against the server: `gpustack.client.ClientSet` from the gpustack 2.3.0
wheel, as a GPUStack script uses it. Every SDK class, every call (`list`, `get`, `create`,
`update`, `delete`, `watch`, `awatch`), as an administrator (API key, and user name + password:
HTTP Basic) and as a regular user (user name + password). Each call's outcome must be the one
documented in EXPECTED; the table of SDK calls in docs/gpustack-migration.md is rendered from
what was measured.
"""

import asyncio
import logging
import threading
import time

from gpustack.client import ClientSet
from gpustack.logging import trace
from gpustack.schemas.inference_backend import InferenceBackendCreate, InferenceBackendUpdate
from gpustack.schemas.model_routes import ModelRouteTargetCreate, ModelRouteTargetUpdate
from gpustack.schemas.models import ModelCreate, ModelInstanceCreate, ModelInstanceUpdate, ModelUpdate
from gpustack.schemas.users import UserCreate, UserUpdate
from gpustack.schemas.workers import WorkerCreate, WorkerUpdate

from compat_resources import BACKEND_VERSIONS, USER_PASSWORD, items_of

# The SDK's classes, as `ClientSet` names them, with the path each one calls.
SDK_CLASSES = [
    ("workers", "workers"),
    ("models", "models"),
    ("model_instances", "model-instances"),
    ("model_files", "model-files"),
    ("users", "users"),
    ("inference_backends", "inference-backends"),
    ("benchmarks", "benchmarks"),
    ("model_route_targets", "model-route-targets"),
    ("cache_services", "cache-services"),
    ("cache_service_instances", "cache-service-instances"),
]
CALLS = ["list", "get", "create", "update", "delete", "watch", "awatch"]

# Outcomes: "works"; "refused" (a 4xx on purpose: the note says why); "not built" (no route);
# "not called" (the suite does not make this call: the note says why).
NOT_BUILT = {call: "not built" for call in CALLS}
EXPECTED = {
    "workers": {**{c: "works" for c in CALLS}, "create": "refused", "delete": "not called"},
    "models": {c: "works" for c in CALLS},
    "model_instances": {**{c: "works" for c in CALLS}, "create": "refused", "update": "not built"},
    "model_files": NOT_BUILT,
    "users": {c: "works" for c in CALLS},
    "inference_backends": {c: "works" for c in CALLS},
    "benchmarks": NOT_BUILT,
    "model_route_targets": {**{c: "works" for c in CALLS}, "create": "refused"},
    "cache_services": NOT_BUILT,
    "cache_service_instances": NOT_BUILT,
}
# Why a call is refused or not built (the doc's notes column).
NOTES = {
    "workers": "`create` is a worker registering itself: it needs a cluster registration token, not an "
               "administrator (GPUStack lets an administrator add a row by hand). `delete` is not called "
               "on the suite's only worker.",
    "model_instances": "Instances of a deployment are the controller's (scale with `replicas`): `create` "
                       "with GPUStack's `ModelInstanceCreate` is refused (400 naming the field: our "
                       "`POST` starts a stand-alone instance on a named `worker_id` and `model_path`), "
                       "`update` has no route (workers report through `PUT …/status`).",
    "model_route_targets": "`create`: GPUStack has no `POST /v2/model-route-targets` (targets come with "
                           "their route); ours needs `route_id` (400 naming it). `update` needs no "
                           "`route_id`: a missing one keeps the target's.",
    "model_files": "Model files (downloads shared between deployments) are not built.",
    "benchmarks": "Benchmarks are not built.",
    "cache_services": "Cache services are not built.",
    "cache_service_instances": "Cache services are not built.",
}
# A regular user: what GPUStack 2.3 lets them do through the SDK.
USER_EXPECTED = {
    "workers": ("list", "works: an empty list"),
    "inference_backends": ("list", "works"),
    "models": ("list", "refused"),
    "users": ("list", "refused"),
}


# What a GPUStack process sets up first (`gpustack.logging.setup_logging`): the SDK's watch cache
# logs at TRACE level.
logging.Logger.trace = trace


class SdkErrors(logging.Handler):
    """Errors the SDK logs instead of raising (an event its `*Public` schema does not accept)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


SDK_ERRORS = SdkErrors()
logging.getLogger("gpustack.client").addHandler(SDK_ERRORS)


class Recorder:
    """The last answer's status per (method, path), from an httpx event hook on the SDK's client."""

    def __init__(self):
        self.last = None

    def hook(self, response):
        self.last = (response.request.method, response.request.url.path, response.status_code)


def client_set(ctx, *, api_key=None, username=None, password=None):
    """A ClientSet as a GPUStack script makes one, recording what it was answered."""
    cs = ClientSet(ctx.client.base, api_key=api_key, username=username, password=password, timeout=10.0)
    recorder = Recorder()
    cs.http_client.get_httpx_client().event_hooks["response"] = [recorder.hook]
    cs.recorder = recorder
    return cs


def outcome(ctx, cs, fn):
    """Runs one SDK call: ("works", result) or (outcome, "HTTP status …")."""
    cs.recorder.last = None
    try:
        return "works", fn()
    except Exception as e:  # noqa: BLE001 - the SDK raises its own exception types
        last = cs.recorder.last
        if last is None:
            return "error", f"{type(e).__name__}: {e}"
        method, path, status = last
        if status in (404, 405) and ctx.routes.missing(ctx.client.request(method, path, {} if method in (
                "POST", "PUT") else None), path):
            return "not built", f"{method} {path}: {status} (no route)"
        if 400 <= status < 500:
            return "refused", f"{method} {path}: {status} {e}"
        return "error", f"{method} {path}: {status} {type(e).__name__}: {e}"


def first_event(watch_fn, seconds=5.0):
    """Runs a blocking `watch(callback, stop_condition)` in a thread; answers the events it saw
    before stopping at the first one (or the time running out)."""
    events = []

    def run():
        try:
            watch_fn(callback=events.append, stop_condition=lambda e: True)
        except Exception as e:  # noqa: BLE001
            events.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    return events


async def awatch_events(client, seconds, until=None, during=None):
    """Events of `client.awatch()` for up to `seconds`, stopping at the first one `until` accepts;
    `during` (a plain function) runs in a thread once the first event arrived."""
    events = []
    started = asyncio.Event()

    def collect(event):
        events.append(event)
        started.set()

    async def act():
        await started.wait()
        if during:
            await asyncio.to_thread(during)

    stop = until or (lambda e: True)
    watch = asyncio.create_task(client.awatch(callback=collect, stop_condition=stop))
    actor = asyncio.create_task(act())
    try:
        await asyncio.wait_for(asyncio.shield(watch), seconds)
    except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - a timeout or the stream failing
        pass
    for task in (watch, actor):
        task.cancel()
    await asyncio.gather(watch, actor, return_exceptions=True)
    return events


def watch_outcome(ctx, cs, client, kind):
    """`watch()` or `awatch()` of one class: works when it yields events the SDK reads."""
    SDK_ERRORS.messages.clear()
    if kind == "watch":
        events = first_event(client.watch)
    else:
        events = asyncio.run(awatch_events(client, 5.0))
    errors = [e for e in events if isinstance(e, Exception)]
    if SDK_ERRORS.messages:
        return "error", f"the SDK logged: {SDK_ERRORS.messages[0]}"
    if errors:
        e = errors[0]
        status = getattr(e, "status_code", None) or (cs.recorder.last or (None, None, None))[2]
        if status in (404, 405):
            return "not built", f"{type(e).__name__}: {e}"
        return "error", f"{type(e).__name__}: {e}"
    if not events:
        return "error", "no event within 5 s (the replay of existing rows)"
    return "works", events


def sdk_bodies(ctx):
    """Per SDK class: (create body, update body from the created object) built with GPUStack's
    own schemas, as a script would."""
    model_kw = {"name": "compat-sdk-model", "source": "local_path", "local_path": ctx.model_dir, "replicas": 0}
    backend_kw = {"backend_name": "compat-sdk-custom", "version_configs": BACKEND_VERSIONS,
                  "default_version": "v1"}
    user_kw = {"username": "compat-sdk-user", "password": USER_PASSWORD, "full_name": "SDK User"}
    return {
        "workers": (
            lambda: WorkerCreate(name="compat-sdk-worker", hostname="h", ip="127.0.0.1", ifname="lo", port=1,
                                 status={}, worker_uuid="compat-sdk"),
            lambda obj: WorkerUpdate(name=obj.name, labels={**(obj.labels or {}), "compat-sdk": "yes"}),
        ),
        "models": (
            lambda: ModelCreate(**model_kw),
            lambda obj: ModelUpdate(**model_kw, description="updated by the SDK"),
        ),
        "model_instances": (
            lambda: ModelInstanceCreate(source="local_path", local_path=ctx.model_dir, name="compat-sdk-instance",
                                        model_name="compat-model", model_id=ctx.ids.get("model")),
            lambda obj: ModelInstanceUpdate(source="local_path", local_path=obj.local_path or ctx.model_dir,
                                            name=obj.name, model_name=obj.model_name),
        ),
        "users": (
            lambda: UserCreate(**user_kw),
            lambda obj: UserUpdate(username=obj.username, full_name="Updated by the SDK"),
        ),
        "inference_backends": (
            lambda: InferenceBackendCreate(**backend_kw),
            lambda obj: InferenceBackendUpdate(**backend_kw, description="updated by the SDK"),
        ),
        "model_route_targets": (
            lambda: ModelRouteTargetCreate(model_id=ctx.ids.get("model"), weight=50),
            lambda obj: ModelRouteTargetUpdate(model_id=obj.model_id, weight=obj.weight + 1),
        ),
    }


def made_otherwise(ctx, attr, listed):
    """For a class the SDK cannot create here, a row to get, update and delete: a route target made
    with our body (it names its route), an instance of the suite's deployment (the controller
    makes another when it is deleted); a worker is only read and edited (None: not deleted)."""
    if attr == "model_route_targets" and ctx.ids.get("route") and ctx.ids.get("model"):
        resp = ctx.client.post("/v2/model-route-targets",
                               {"route_id": ctx.ids["route"], "model_id": ctx.ids["model"], "weight": 10})
        return resp.json.get("id") if resp.ok else None
    if attr == "model_instances":
        return next((i.id for i in listed.items if i.model_id == ctx.ids.get("model")), None)
    return None


def admin_calls(ctx, cs, label):
    """Every call of every SDK class; answers {(class, call): outcome}."""
    measured = {}
    bodies = sdk_bodies(ctx)
    for attr, path in SDK_CLASSES:
        client = getattr(cs, attr)
        out, listed = outcome(ctx, cs, lambda: client.list(use_cache=False))
        measured[(attr, "list")] = (out, listed if out != "works" else f"{len(listed.items)} items")
        if EXPECTED[attr]["list"] == "not built":
            for call in CALLS[1:]:
                measured[(attr, call)] = measured[(attr, "list")]
            continue
        made = None
        if attr in bodies:
            make, change = bodies[attr]
            out, made = outcome(ctx, cs, lambda: client.create(make()))
            measured[(attr, "create")] = (out, made if out != "works" else "created")
            if out != "works":
                made = None
        rid = made.id if made is not None else made_otherwise(ctx, attr, listed)
        deletable = rid is not None
        if rid is None and attr == "workers":
            rid = ctx.ids.get("worker")
        out, got = outcome(ctx, cs, lambda: client.get(rid, use_cache=False))
        measured[(attr, "get")] = (out, got if out != "works" else "read")
        if out == "works" and attr in bodies:
            _, change = bodies[attr]
            out, updated = outcome(ctx, cs, lambda: client.update(rid, change(got)))
            measured[(attr, "update")] = (out, updated if out != "works" else "updated")
        for kind in ("watch", "awatch"):
            measured[(attr, kind)] = watch_outcome(ctx, cs, client, kind)
        if deletable:
            out, gone = outcome(ctx, cs, lambda: client.delete(rid))
            measured[(attr, "delete")] = (out, gone if out != "works" else "deleted")
        elif attr == "workers":
            measured[(attr, "delete")] = ("not called", "the suite's only worker is kept")
    for (attr, call), (out, detail) in sorted(measured.items()):
        want = EXPECTED[attr][call]
        ctx.report.check(out == want, f"SDK ({label}): ClientSet.{attr}.{call}() {want}",
                         f"{out}: {detail}")
    for attr, _ in SDK_CLASSES:
        for call in CALLS:
            if (attr, call) not in measured:
                ctx.report.fail(f"SDK ({label}): ClientSet.{attr}.{call}()", "not measured")
    return measured


def live_watch(ctx, cs, label):
    """`models.awatch()` reads the replay as CREATED (type 1) events and an edit as UPDATED (2)."""
    from gpustack.server.bus import EventType

    what = f"SDK ({label}): models.awatch() replays CREATED, then an UPDATED after models.update()"
    rid = ctx.ids.get("model")
    if rid is None:
        return ctx.report.fail(what, "skipped: no model")
    client = cs.models
    start = time.monotonic()

    def edit():
        model = client.get(rid, use_cache=False)
        kw = {k: v for k, v in model.model_dump().items() if k in ModelUpdate.model_fields}
        kw["description"] = f"watched edit {start}"
        client.update(rid, ModelUpdate(**kw))

    def until(event):
        data = event.data if isinstance(event.data, dict) else {}
        return event.type == EventType.UPDATED and data.get("id") == rid

    events = asyncio.run(awatch_events(client, 10.0, until=until, during=edit))
    types = [e.type for e in events]
    ok = EventType.CREATED in types and until(events[-1]) if events else False
    ctx.report.check(ok, what, f"event types seen: {[str(t) for t in types]}")


def user_calls(ctx, username, password):
    """A regular user through the SDK with user name and password (HTTP Basic)."""
    cs = client_set(ctx, username=username, password=password)
    for attr, (call, want) in USER_EXPECTED.items():
        client = getattr(cs, attr)
        out, result = outcome(ctx, cs, lambda: client.list(use_cache=False))
        got = out
        if out == "works" and want.startswith("works: an empty list"):
            got = "works: an empty list" if not result.items else f"works: {len(result.items)} items"
        ctx.report.check(got == want, f"SDK (regular user, Basic): ClientSet.{attr}.{call}() {want}",
                         f"{got}: {result if out != 'works' else ''}")
    events = first_event(cs.inference_backends.watch)
    ctx.report.check(events and not isinstance(events[0], Exception),
                     "SDK (regular user, Basic): ClientSet.inference_backends.watch() reads the replay",
                     f"{events[:1]}")


def basic_auth(ctx):
    """HTTP Basic on /v2 (not /v1), a wrong password refused."""
    import base64

    def basic(user, pw):
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}

    for path, want in [("/v2/users/me", 200), ("/v1/models", 401)]:
        resp = ctx.client.request("GET", path, auth=False, headers=basic("admin", ctx.admin_password))
        ctx.report.check(resp.status == want, f"HTTP Basic as admin: GET {path} answers {want}", resp.describe())
    resp = ctx.client.request("GET", "/v2/users/me", auth=False, headers=basic("admin", "wrong-password-1"))
    ctx.report.check(resp.status == 401, "HTTP Basic with a wrong password answers 401", resp.describe())


def evaluation(ctx):
    """`POST /v2/model-evaluations` with GPUStack's own `ModelEvaluationRequest` (a `cluster_id`,
    SDK-dumped specs): 200, GPUStack's response schema, and the claim the scheduler would reserve
    (vLLM: 0.9 of the GPU it gets), as GPUStack answers."""
    from gpustack.schemas.model_evaluations import ModelEvaluationRequest, ModelEvaluationResponse
    from gpustack.schemas.model_sets import ModelSpec

    from compat_client import schema_errors

    what = ("model-evaluations: POST ModelEvaluationRequest(cluster_id=…, model_specs=[…]).model_dump() "
            "answers ModelEvaluationResponse, resource_claim.vram = 0.9 × the GPU (vLLM)")
    spec = ModelSpec(name="compat-eval", source="local_path", local_path=ctx.model_dir, backend="vLLM")
    cluster = ctx.cluster_ids[-1] if ctx.cluster_ids else 1
    body = ModelEvaluationRequest(cluster_id=cluster, model_specs=[spec]).model_dump(mode="json")
    resp = ctx.client.post("/v2/model-evaluations", body)
    if resp.status != 200:
        return ctx.report.fail(what, resp.describe())
    problems = []
    errors = schema_errors(ModelEvaluationResponse, resp.json)
    if errors:
        problems.append(f"not ModelEvaluationResponse: {errors}")
    result = ((resp.json or {}).get("results") or [{}])[0]
    totals = {g.get("memory", {}).get("total") for g in items_of(ctx.client.get("/v2/gpu-devices"))}
    claim = (result.get("resource_claim") or {}).get("vram")
    if not result.get("compatible"):
        problems.append(f"not compatible: {result.get('compatibility_messages')}")
    elif claim not in {int(t * 0.9) for t in totals if t}:
        problems.append(f"resource_claim.vram {claim}, GPUs of {sorted(t for t in totals if t)} bytes")
    ctx.report.check(not problems, what, "; ".join(problems))


def run_all(ctx):
    evaluation(ctx)
    if not ctx.admin_password:
        return ctx.report.fail("SDK: ClientSet with a user name and password", "skipped: no --password")
    basic_auth(ctx)
    measured = admin_calls(ctx, client_set(ctx, api_key=ctx.client.key), "admin, API key")
    ctx.sdk = measured
    cs = client_set(ctx, username="admin", password=ctx.admin_password)
    for attr in ("models", "workers", "inference_backends"):
        out, detail = outcome(ctx, cs, lambda: getattr(cs, attr).list(use_cache=False))
        ctx.report.check(out == "works", f"SDK (admin, Basic): ClientSet.{attr}.list() works", f"{out}: {detail}")
    live_watch(ctx, cs, "admin, Basic")
    username = "compat-sdk-regular"
    made = ctx.client.post("/v2/users", {"username": username, "password": USER_PASSWORD, "is_admin": False})
    if not made.ok:
        return ctx.report.fail("SDK: a regular user to log in as", made.describe())
    try:
        user_calls(ctx, username, USER_PASSWORD)
    finally:
        ctx.client.delete(f"/v2/users/{made.json['id']}")


def sdk_table(measured):
    """The doc's table of SDK calls: one row per class, a cell per call, then the notes."""
    if not measured:
        return []
    out = ["### GPUStack's SDK (`gpustack.client.ClientSet`)", "",
           "Each call made with GPUStack 2.3.0's own SDK classes against the server, as an administrator "
           "(API key). *works*: the SDK's own validation accepts the answer; *refused*: a 4xx on purpose "
           "(the notes say why); *not built*: no such route here; *not called*: the suite keeps its one worker "
           "(`DELETE /v2/workers/{id}` is tested in `tests/it`).", "",
           "| SDK class | " + " | ".join(f"`{c}`" for c in CALLS) + " | notes |",
           "| --- | " + " | ".join("---" for _ in CALLS) + " | --- |"]
    for attr, _ in SDK_CLASSES:
        cells = [measured.get((attr, c), ("not measured", ""))[0] for c in CALLS]
        out.append(f"| `{attr}` | " + " | ".join(cells) + f" | {NOTES.get(attr, '')} |")
    return out
