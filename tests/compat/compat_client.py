"""HTTP client, check reporting and pydantic helpers for the GPUStack compatibility suite.

Only the standard library talks to the server (urllib, no redirects followed, bounded reads), so
what is measured is exactly what the server answered.
"""

import json
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

from pydantic import TypeAdapter, ValidationError


class Response:
    """One HTTP answer: status (0 when no answer came), raw body, parsed JSON (or None)."""

    def __init__(self, status, body=b"", headers=None):
        self.status = status
        self.body = body
        self.headers = headers or {}
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def ok(self):
        return 200 <= self.status < 300

    def error_text(self):
        """The server's error in one line: `reason: message (field)` or a body excerpt."""
        j = self.json
        if isinstance(j, dict) and ("message" in j or "detail" in j):
            field = f" (field {j['field']})" if j.get("field") else ""
            msg = str(j.get("message", j.get("detail")))
            if len(msg) > 140:  # serde's "expected one of <every field>" lists are long
                msg = msg[:137] + "…"
            return f"{j.get('reason', '')}: {msg}{field}".strip(": ")
        text = self.body[:200].decode("utf-8", "replace")
        return text or "(empty body)"

    def describe(self):
        return f"{self.status} {self.error_text()}" if not self.ok else str(self.status)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Client:
    """A management-API client authenticated with one admin API key."""

    def __init__(self, base, key):
        self.base = base.rstrip("/")
        self.key = key
        self._opener = urllib.request.build_opener(_NoRedirect)

    def request(self, method, path, body=None, *, form=None, auth=True, timeout=10.0, headers=None):
        """Sends one request; `body` is JSON-encoded, `form` URL-encoded. Never raises for HTTP."""
        headers = {"Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if auth:
            headers["Authorization"] = f"Bearer {self.key}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            resp = self._opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            return Response(e.code, _read_bounded(e, timeout), dict(e.headers or {}))
        except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
            return Response(0, str(e).encode())
        with resp:
            return Response(resp.status, _read_bounded(resp, timeout), dict(resp.headers))

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


def _read_bounded(resp, timeout, limit=4 << 20):
    """Reads until EOF, `limit` bytes or `timeout` seconds (a stream that never ends is cut)."""
    deadline = time.monotonic() + timeout
    chunks, size = [], 0
    try:
        while size < limit and time.monotonic() < deadline:
            chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (socket.timeout, OSError, ValueError):
        pass
    return b"".join(chunks)


def quote_id(value):
    """An id for a URL path (GPU ids look like `worker:cuda:0`)."""
    return urllib.parse.quote(str(value), safe=":")


class Report:
    """Prints one line per check and counts them."""

    def __init__(self):
        self.passed = 0
        self.failures = []

    def ok(self, what):
        self.passed += 1
        print(f"ok   {what}", flush=True)

    def fail(self, what, why):
        self.failures.append(f"{what}: {why}")
        print(f"FAIL {what}: {why}", flush=True)

    def check(self, passed, what, why=""):
        if passed:
            self.ok(what)
        else:
            self.fail(what, why)
        return passed

    def summary(self, label):
        total = self.passed + len(self.failures)
        return f"{label}: {total} checks, {self.passed} ok, {len(self.failures)} FAIL"


def schema_errors(schema, data, limit=12):
    """None if `data` validates as `schema` (a class or a typing form), else pydantic's errors in
    one line: `loc: message (got …)`, list positions folded into `*` and repeats counted."""
    try:
        TypeAdapter(schema).validate_python(data)
        return None
    except ValidationError as e:
        counts = {}
        for err in e.errors():
            loc = ".".join("*" if isinstance(p, int) else str(p) for p in err["loc"]) or "(object)"
            text = f"{loc}: {err['msg']}"
            if err["type"] != "missing" and "input" in err and not isinstance(err["input"], dict):
                got = json.dumps(err["input"], default=str)
                text += f" (got {got[:40]}{'…' if len(got) > 40 else ''})"
            counts[text] = counts.get(text, 0) + 1
        parts = [t + (f" (x{n})" if n > 1 else "") for t, n in counts.items()]
        more = f"; … {len(parts) - limit} more" if len(parts) > limit else ""
        return "; ".join(parts[:limit]) + more


def names_field(resp, field):
    """Whether a refusal names `field`: its `field` is it (or a path under it), or its message
    mentions it as a word."""
    j = resp.json if isinstance(resp.json, dict) else {}
    named = str(j.get("field") or "")
    if named == field or named.startswith(field + ".") or named.startswith(field + "["):
        return True
    text = json.dumps(j) if j else resp.body.decode("utf-8", "replace")
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(field)}(?![A-Za-z0-9_])", text) is not None


def reads_back(sent, got):
    """Whether `got` (what the server answered) holds `sent`: equal scalars, lists equal (scalars
    in any order), dicts holding every non-null key sent."""
    if isinstance(sent, dict):
        return isinstance(got, dict) and all(
            v is None or (k in got and reads_back(v, got[k])) for k, v in sent.items()
        )
    if isinstance(sent, list):
        if not isinstance(got, list) or len(got) != len(sent):
            return False
        if all(not isinstance(v, (dict, list)) for v in sent):
            key = lambda v: json.dumps(v, sort_keys=True)  # noqa: E731
            return sorted(sent, key=key) == sorted(got, key=key)
        return all(reads_back(s, g) for s, g in zip(sent, got))
    if isinstance(sent, bool) or isinstance(got, bool):
        return sent is got
    return sent == got
