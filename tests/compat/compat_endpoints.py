"""Which of GPUStack 2.3.0's `/v2` operations (from its OpenAPI document) our server answers.

Only safe requests are sent: GETs with the ids of existing rows, and every POST/PUT/PATCH/DELETE
with an empty JSON object to a row that does not exist (id 999999), so nothing real changes. An
operation is `missing` when the answer is 405; or the same "no such route" 404 that an impossible
path gets (the path in its message aside); or the same answer as its twin, the path with its last
literal segment replaced by nonsense (`/v2/models/adapters` answered by `/v2/models/{id}` with
"adapters" as the id is no `adapters` route). Anything else, a refusal included, means a handler
answered. A 5xx or no answer at all is a failure.
"""

import json
import os
import re
import sys

from compat_client import quote_id

METHODS = ["get", "post", "put", "patch", "delete"]
MISSING_ROW = "999999"
# Path parameters that are not row ids: what to put there for a GET.
NAMED_PARAMS = {"backend_name": "vLLM"}
# The first path segment after /v2/ → the key of an id the suite knows.
ID_OF_AREA = {
    "models": "model",
    "model-instances": "instance",
    "workers": "worker",
    "users": "user",
    "clusters": "cluster",
    "inference-backends": "backend",
    "model-routes": "route",
    "model-route-targets": "target",
    "gpu-devices": "gpu",
    "api-keys": "api_key",
    "my-models": "my_model",
}


class RouteProbe:
    """Tells a missing route from a missing row by comparing with an impossible path's answer."""

    IMPOSSIBLE = "/v2/compat-no-such-route/0"

    def __init__(self, client):
        resp = client.get(self.IMPOSSIBLE)
        self.status = resp.status
        self.shape = self._shape(resp, self.IMPOSSIBLE)

    @staticmethod
    def _shape(resp, path):
        return resp.error_text().replace(path.split("?")[0], "{path}")

    def missing(self, resp, path):
        if resp.status == 405:
            return True
        return resp.status == self.status and self._shape(resp, path) == self.shape


OPERATIONS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpustack-2.3.0-operations.txt")


def gpustack_operations(source=OPERATIONS_FILE):
    """(path, METHOD) of every operation GPUStack documents under /v2/, sorted: from its OpenAPI
    document (a .json) or from the list extracted from it next to this file."""
    if source.endswith(".json"):
        with open(source) as f:
            paths = json.load(f)["paths"]
        return sorted(
            (path, method.upper())
            for path, item in paths.items()
            if path.startswith("/v2/")
            for method in METHODS
            if method in item
        )
    with open(source) as f:
        rows = [line.split() for line in f if line.strip() and not line.startswith("#")]
    return sorted((path, method) for method, path in rows)


def fill(path, method, ids):
    """The path with its parameters filled in: known ids for a GET, a missing row otherwise."""
    area = path.split("/")[2]

    def value(match):
        param = match.group(1)
        if method != "GET":
            return MISSING_ROW
        if param in NAMED_PARAMS:
            return NAMED_PARAMS[param]
        if param == "id" and ids.get(ID_OF_AREA.get(area)) is not None:
            return quote_id(ids[ID_OF_AREA[area]])
        return "1"

    return re.sub(r"\{([^}]+)\}", value, path)


NONSENSE = "compat-nonsense"


def twin(path):
    """The path with its last literal segment replaced by nonsense (and that literal)."""
    segments = path.split("/")
    i = max(i for i, seg in enumerate(segments) if seg and not seg.startswith("{"))
    literal, segments[i] = segments[i], NONSENSE
    return "/".join(segments), literal


def same_answer(a, a_literal, b, b_literal):
    """Whether two answers are the same refusal, each one's own literal aside."""
    if a.status != b.status or a.ok:
        return False
    return a.error_text().replace(a_literal, "{}") == b.error_text().replace(b_literal, "{}")


def probe_all(ctx, source=OPERATIONS_FILE):
    """Probes every operation; answers {(path, METHOD): answered?} and fails on 5xx or silence."""
    results = {}
    for path, method in gpustack_operations(source):
        url = fill(path, method, ctx.ids)
        body = None if method == "GET" else {}
        resp = ctx.client.request(method, url, body, timeout=5.0)
        if resp.status == 0 or resp.status >= 500:
            ctx.report.fail(f"endpoints: {method} {url}", f"answered {resp.describe() if resp.status else 'nothing'}")
        twin_url, literal = twin(url)
        other = ctx.client.request(method, twin_url, body, timeout=5.0)
        missing = ctx.routes.missing(resp, url) or same_answer(resp, literal, other, NONSENSE)
        results[(path, method)] = not missing
    answered = sum(results.values())
    print(f"     GPUStack operations under /v2 answered: {answered} of {len(results)}")
    return results


if __name__ == "__main__":
    # Regenerates the operations list: python3 compat_endpoints.py gpustack-openapi-2.3.0.json
    with open(OPERATIONS_FILE, "w") as out:
        out.write("# Every /v2 operation of GPUStack 2.3.0's OpenAPI document (/openapi.json of a running\n"
                  "# server), extracted by `python3 tests/compat/compat_endpoints.py <openapi.json>`.\n")
        out.writelines(f"{method} {path}\n" for path, method in gpustack_operations(sys.argv[1]))
