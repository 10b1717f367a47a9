"""Field classification, generated from GPUStack's `*Create` schemas.

For each resource the SDK-default body (`XCreate(<required>).model_dump(mode="json")`: every field,
nulls and defaults included) is posted first. A field that even its neutral value gets refused for
is `refused` (and left out of the later bodies, so the other fields can still be measured). Then
every other field is posted, one at a time, with a non-default sample value (derived from its type,
or written out below where the type says too little) and classified:

- `supported`: 2xx and a fresh read shows the value;
- `neutral only`: refused with a 4xx naming the field (so it is accepted only when null/default);
- `nulls refused`: accepted only once the nulls the SDK puts inside the value are taken out
  (e.g. `targets[0].id: null`), a failure;
- `read-only`: 2xx but not stored, for fields GPUStack's own server sets (acceptable);
- `ignored`: 2xx but not stored, for a field GPUStack stores (silently dropped: a failure);
- `error`: anything else (5xx, or a refusal naming a different field).
"""

import json
import re
import typing
from enum import Enum

from pydantic import ValidationError

from compat_client import names_field, reads_back, schema_errors
from compat_resources import BACKEND_VERSIONS, USER_PASSWORD, items_of

NO_SAMPLE = object()

# Outcomes that are acceptable, and the table column each lands in.
ACCEPTABLE = {"supported", "neutral only", "read-only"}


class Resource:
    """How to probe one create schema: its path, the base body's arguments (required fields), the
    sample values that cannot be derived from types, GPUStack's read-only fields, and readers for
    fields that do not come back under their own name."""

    def __init__(self, path, create_cls, short, base, samples=None, read_only=(), readers=None):
        self.path = path
        self.create_cls = create_cls
        self.short = short
        self.base = base
        self.samples = samples or {}
        self.read_only = set(read_only)
        self.readers = readers or {}

    @property
    def schema(self):
        return self.create_cls.__name__


def resources(ctx):
    """The probed resources. Imports are here so that the module reads top-down."""
    from gpustack.schemas.api_keys import ApiKeyCreate
    from gpustack.schemas.clusters import ClusterCreate
    from gpustack.schemas.inference_backend import InferenceBackendCreate
    from gpustack.schemas.model_routes import ModelRouteCreate
    from gpustack.schemas.models import ModelCreate
    from gpustack.schemas.users import UserCreate

    model_id = ctx.ids.get("model")
    return [
        Resource("users", UserCreate, "u", lambda n: {"username": n, "password": USER_PASSWORD},
                 samples={"source": "OIDC", "avatar_url": "https://example.com/avatar.png"},
                 readers={"password": logs_in}),
        Resource("api-keys", ApiKeyCreate, "k", lambda n: {"name": n},
                 samples={"allowed_model_names": ["compat-model"], "expires_in": 3600,
                          "custom": lambda n: f"sk-compat-{n}"},
                 readers={"expires_in": expires_at_set, "custom": custom_value_returned}),
        Resource("clusters", ClusterCreate, "c", lambda n: {"name": n},
                 samples={
                     "gateway_endpoint": "127.0.0.1:8080",
                     "server_url": "http://127.0.0.1:8080",
                     "system_default_container_registry": "registry.example.com",
                     "worker_config": {"system_default_container_registry": "registry.example.com"},
                     "k8s_options": {"namespace": "compat"},
                     "topology": {"layers": [{"id": "compat-row", "name": "compat-row", "label_keys": ["compat-row"]}]},
                     "region": "us-east-1",
                     "owner_principal_id": 2,
                     "worker_pools": [{"name": "pool", "instance_type": "t", "os_image": "o", "image_name": "i"}],
                 },
                 readers={"worker_pools": has_worker_pool}),
        # GPUStack's create handler forces backend_source/enabled and drops is_built_in, icon and
        # the source_* fields (routes/inference_backend.py, create_inference_backend).
        Resource("inference-backends", InferenceBackendCreate, "b",
                 lambda n: {"backend_name": f"{n}-custom", "version_configs": BACKEND_VERSIONS,
                            "default_version": "v1"},
                 samples={
                     "default_backend_param": ["--max-model-len=4096"],
                     "default_run_command": "serve {{model_path}} --port {{port}}",
                     "default_entrypoint": "/usr/bin/env",
                     "health_check_path": "/health",
                     "icon": "https://example.com/icon.png",
                     "default_env": {"COMPAT": "yes"},
                     "common_parameters": ["--ctx-size"],
                     "backend_source": "community",
                     "enabled": False,
                     "source_name": "compat",
                     "owner_principal_id": 2,
                 },
                 read_only={"is_built_in", "backend_source", "enabled", "icon", "source_name", "source_type"}),
        # ready_replicas is the controller's, distributable the evaluator's, owner_principal_id the
        # tenant's (routes/models.py overwrites it).
        Resource("models", ModelCreate, "m",
                 lambda n: {"name": n, "source": "local_path", "local_path": ctx.model_dir, "replicas": 0},
                 samples={
                     "huggingface_repo_id": "Qwen/Qwen3-0.6B",
                     "model_scope_model_id": "Qwen/Qwen3-0.6B",
                     "categories": ["embedding"],
                     "gpu_selector": {"gpu_ids": ctx.gpu_ids[:1], "gpus_per_replica": 1},
                     "gpu_type_selector": {"type": "compat-vgpu"},
                     "backend": "SGLang",
                     "backend_version": ctx.other_vllm_version or "x",
                     "backend_parameters": ["--max-model-len=4096"],
                     "image_name": "compat/image:v1",
                     "run_command": "serve {{model_path}} --port {{port}}",
                     "env": {"COMPAT": "yes"},
                     "extended_kv_cache": {"enabled": True},
                     "speculative_config": {"enabled": True, "algorithm": "ngram", "num_draft_tokens": 4,
                                            "ngram_min_match_length": 1, "ngram_max_match_length": 4},
                     "scaling_schedule": {"enabled": True, "baseline_replicas": 0, "rules": [
                         {"start_cron": "0 8 * * *", "duration_seconds": 3600, "replicas": 1, "name": "day"}]},
                     "lora_list": lambda n: [{"lora_name": f"{n}:adapter", "source": "local_path",
                                              "local_path": ctx.model_dir}],
                     "roles": [{"name": "prefill", "replicas": 1}],
                     "disaggregation": {"mode": "vllm-nixl"},
                     "gather": {"strategy": "MustGather", "layer": "rack"},
                     "cluster_id": ctx.ids.get("cluster") or NO_SAMPLE,
                 },
                 read_only={"ready_replicas", "distributable", "owner_principal_id"},
                 readers={"enable_model_route": has_route_named}),
        Resource("model-routes", ModelRouteCreate, "r", lambda n: {"name": n},
                 samples={"categories": ["llm"], "plugins": {"lb": {}},
                          "targets": [{"model_id": model_id, "weight": 100}] if model_id else NO_SAMPLE},
                 readers={"targets": counts_one_target}),
    ]


# ---- readers for fields that do not come back under their own name -------------------------------

def logs_in(ctx, name, sent, created, fetched):
    return ctx.client.post("/auth/login", form={"username": name, "password": sent}, auth=False).ok


def expires_at_set(ctx, name, sent, created, fetched):
    return (fetched or created or {}).get("expires_at") is not None


def custom_value_returned(ctx, name, sent, created, fetched):
    return (created or {}).get("value") == sent


def has_worker_pool(ctx, name, sent, created, fetched):
    resp = ctx.client.get(f"/v2/worker-pools?cluster_id={(created or {}).get('id')}")
    return resp.status == 200 and bool(items_of(resp))


def has_route_named(ctx, name, sent, created, fetched):
    return any(r.get("name") == name for r in items_of(ctx.client.get(f"/v2/model-routes?search={name}")))


def counts_one_target(ctx, name, sent, created, fetched):
    targets = (fetched or created or {}).get("targets")
    return targets == 1 or (isinstance(targets, list) and len(targets) == 1)


# ---- samples ------------------------------------------------------------------------------------

def derive_sample(info, current):
    """A value other than `current` (what the SDK body holds) from a field's type: str "x", bool
    flipped, int +1, enum the first other member, dict[str, str] one pair, list[str] one element.
    NO_SAMPLE when the type says too little."""
    ann = info.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if typing.get_origin(ann) is typing.Union and len(args) == 1:
        ann = args[0]
    origin, params = typing.get_origin(ann), typing.get_args(ann)
    if ann is bool:
        return not current if isinstance(current, bool) else True
    if ann is int:
        return (current or 0) + 1
    if ann is str:
        return "x"
    if isinstance(ann, type) and issubclass(ann, Enum):
        return next(m.value for m in ann if m.value != current)
    if origin is dict:
        return {"compat": "yes"}
    if origin is list and params and params[0] is str:
        return ["x"]
    if origin is list and params and isinstance(params[0], type) and issubclass(params[0], Enum):
        return [next(m.value for m in params[0] if m.value not in (current or []))]
    return NO_SAMPLE


def sample_for(res, field, name, current):
    sample = res.samples.get(field, NO_SAMPLE)
    if sample is NO_SAMPLE:
        sample = derive_sample(res.create_cls.model_fields[field], current)
    return sample(name) if callable(sample) else sample


# ---- paths into a body ("targets[0].provider_id", "version_configs.v1.source_name") -------------

def split_path(path):
    parts = []
    for segment in path.split("."):
        name = segment.split("[")[0]
        if name:
            parts.append(name)
        parts += [int(i) for i in re.findall(r"\[(\d+)\]", segment)]
    return parts


def locate(body, path):
    """(container, key) of `path` in `body`, or None."""
    parts = split_path(path)
    node = body
    for part in parts[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    last = parts[-1] if parts else None
    if isinstance(node, dict) and last in node or isinstance(node, list) and isinstance(last, int) and last < len(node):
        return node, last
    return None


def has_nulls(value):
    if isinstance(value, dict):
        return any(v is None or has_nulls(v) for v in value.values())
    if isinstance(value, list):
        return any(has_nulls(v) for v in value)
    return False


def strip_nulls(value):
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def pop_path(body, path):
    loc = locate(body, path)
    if loc is not None and isinstance(loc[0], dict):
        loc[0].pop(loc[1])


# ---- probing ------------------------------------------------------------------------------------

class Prober:
    """Posts bodies for one resource and classifies each field; results land in `ctx.fields`."""

    def __init__(self, ctx, res):
        self.ctx, self.res = ctx, res
        self.count = 0
        self.neutral_refused = []  # paths whose null/default value the server refuses
        self.nulls_refused = {}  # top-level fields refused until the nulls inside are taken out

    def fresh_name(self):
        self.count += 1
        return f"compat-{self.res.short}{self.count}"

    def record(self, field, outcome, detail):
        self.ctx.fields[(self.res.schema, field)] = outcome
        what = f"fields: {self.res.schema}.{field} → {outcome}"
        acceptable = outcome in ACCEPTABLE
        self.ctx.report.check(acceptable, what + (f" ({detail})" if detail and acceptable else ""), detail)

    def body(self, kwargs, field=None):
        """The SDK's dump of `kwargs`, less the values refused even when neutral. A sample that
        GPUStack's own schema refuses is sent raw (and said so)."""
        cls = self.res.create_cls
        try:
            body = cls(**kwargs).model_dump(mode="json")
        except ValidationError:
            if field is None:
                raise
            print(f"     (GPUStack's {cls.__name__} refuses the sample for {field}: "
                  f"{schema_errors(cls, kwargs)}; sending it raw)")
            body = cls(**{k: v for k, v in kwargs.items() if k != field}).model_dump(mode="json")
            body[field] = kwargs[field]
        for path in self.neutral_refused:
            if path != field:
                pop_path(body, path)
        for key in self.nulls_refused:
            if key in body:
                body[key] = strip_nulls(body[key])
        return body

    def post(self, body, base_keys, probed=None):
        """POSTs `body`. While a 4xx names a neutral value (a top-level field left at its default, a
        null inside an object) or the nulls inside the probed or a base value, takes them out (and
        records that) and posts again."""
        while True:
            resp = self.ctx.client.post(f"/v2/{self.res.path}", body)
            path = refused_path(resp, body)
            if resp.ok or path is None:
                return resp
            if path == probed or path in base_keys:
                retry = self.drop_nulls_inside(path, body, resp)
            else:
                retry = self.drop_neutral(path, body, resp)
            if not retry:
                return resp

    def drop_nulls_inside(self, key, body, resp):
        """A value the suite chose was refused: retry once without the nulls the SDK put inside it."""
        if key not in body or key in self.nulls_refused or not has_nulls(body[key]):
            return False
        self.nulls_refused[key] = resp.describe()
        body[key] = strip_nulls(body[key])
        return True

    def drop_neutral(self, path, body, resp):
        """A value the suite left at its default (or a null inside one) was refused: record it as
        refused and take it out of this and every later body."""
        loc = locate(body, path)
        if loc is None or (len(split_path(path)) > 1 and loc[0][loc[1]] is not None):
            return False
        self.neutral_refused.append(path)
        self.record(path, "refused", f"its neutral value {json.dumps(loc[0][loc[1]])} is refused: {resp.describe()}")
        pop_path(body, path)
        return True

    def run(self):
        base_fields = self.probe_base()
        if base_fields is None:
            return
        for field in self.res.create_cls.model_fields:
            if field not in base_fields and field not in self.neutral_refused:
                self.probe_field(field)

    def probe_base(self):
        """Posts the SDK-default body, then classifies the fields the base body sets. Answers
        those fields (None if nothing could be created)."""
        name = self.fresh_name()
        kwargs = self.res.base(name)
        resp = self.post(self.body(kwargs), set(kwargs))
        if not resp.ok:
            self.ctx.report.fail(f"fields: {self.res.schema} base body", f"refused: {resp.describe()}")
            for field in self.res.create_cls.model_fields:
                self.ctx.fields.setdefault((self.res.schema, field), "untested")
            return None
        fetched = self.read(resp)
        for field, sent in kwargs.items():
            outcome = self.outcome_of_stored(field, name, sent, resp.json, fetched)
            if field in self.nulls_refused:
                self.record(field, "nulls refused", f"in the base body ({outcome} once they are out): "
                                                    f"{self.nulls_refused[field]}")
            else:
                self.record(field, outcome, "in the base body")
        self.cleanup(resp, name)
        return set(kwargs)

    def probe_field(self, field):
        name = self.fresh_name()
        base = self.res.base(name)
        sample = sample_for(self.res, field, name, self.body(base).get(field))
        if sample is NO_SAMPLE:
            return self.record(field, "error", "the suite has no sample value for it")
        resp = self.post(self.body({**base, field: sample}, field), set(base), probed=field)
        shown = json.dumps(sample)
        shown = shown if len(shown) <= 60 else shown[:57] + "…"
        if resp.ok:
            outcome = self.outcome_of_stored(field, name, sample, resp.json, self.read(resp))
            if field in self.nulls_refused:
                self.record(field, "nulls refused", f"sent {shown} as the SDK dumps it: "
                                                    f"{self.nulls_refused[field]} ({outcome} once they are out)")
            else:
                self.record(field, outcome, f"sent {shown}" if outcome != "ignored" else
                            f"sent {shown}: accepted ({resp.status}) but not stored, and GPUStack stores it")
            self.cleanup(resp, name)
        elif 400 <= resp.status < 500 and names_field(resp, field):
            self.record(field, "neutral only", f"sent {shown}: {resp.status} naming it")
        else:
            self.record(field, "error", f"sent {shown}: {resp.describe()}")

    def outcome_of_stored(self, field, name, sent, created, fetched):
        reader = self.res.readers.get(field)
        if reader:
            stored = reader(self.ctx, name, sent, created, fetched)
        else:
            row = fetched if fetched is not None else created or {}
            stored = field in row and reads_back(sent, row[field])
        if stored:
            return "supported"
        return "read-only" if field in self.res.read_only else "ignored"

    def read(self, created_resp):
        """A fresh read of what was just created (API keys: from the list, as GPUStack has no GET one)."""
        rid = (created_resp.json or {}).get("id") if isinstance(created_resp.json, dict) else None
        if rid is None:
            return None
        if self.res.path == "api-keys":
            found = [i for i in items_of(self.ctx.client.get("/v2/api-keys?perPage=100")) if i.get("id") == rid]
            return found[0] if found else None
        resp = self.ctx.client.get(f"/v2/{self.res.path}/{rid}")
        return resp.json if resp.status == 200 and isinstance(resp.json, dict) else None

    def cleanup(self, created_resp, name):
        rid = (created_resp.json or {}).get("id") if isinstance(created_resp.json, dict) else None
        if rid is not None:
            self.ctx.client.delete(f"/v2/{self.res.path}/{rid}")
        if self.res.path == "models":  # a route made for the deployment, if it outlived it
            for route in items_of(self.ctx.client.get(f"/v2/model-routes?search={name}")):
                if route.get("name") == name:
                    self.ctx.client.delete(f"/v2/model-routes/{route.get('id')}")


def refused_path(resp, body):
    """The body path a 4xx names: its `field`, else the first top-level key its message mentions."""
    if not 400 <= resp.status < 500:
        return None
    j = resp.json if isinstance(resp.json, dict) else {}
    if j.get("field"):
        return str(j["field"])
    return next((k for k in sorted(body, key=len, reverse=True) if names_field(resp, k)), None)


def probe_all(ctx):
    ctx.other_vllm_version = other_vllm_version(ctx)
    for res in resources(ctx):
        Prober(ctx, res).run()


def other_vllm_version(ctx):
    """A vLLM version that is not its default (for `backend_version`), if the server has one."""
    resp = ctx.client.get("/v2/inference-backends/backend_name/vLLM")
    j = resp.json if resp.status == 200 and isinstance(resp.json, dict) else {}
    versions = sorted((j.get("version_configs") or {}).keys())
    return next((v for v in versions if v != j.get("default_version")), None)
