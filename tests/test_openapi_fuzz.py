"""Bad input never gets a 500, anywhere a client can reach: every service, the gateway and
the console's API.

- schemathesis generates requests from each service's OpenAPI schema (valid requests, and
  invalid ones: wrong types, missing fields, bad paths and queries) and sends them to the
  running system: to the service itself and through the gateway (the paths it routes
  there). tests/console/test_openapi_fuzz.py does the same for the console's API.
- A fixed corpus of hostile requests goes to every operation of the same schemas: invalid
  UTF-8 and lone surrogates, huge and overflowing numbers, NUL bytes and long values in
  paths and query strings; garbage in the headers the system reads (trace context,
  baggage, request ID, content type and encoding, cookies); bodies nested 100,000 deep,
  with numbers of 5,000 digits, in the wrong content type, or over the size limit (413).

A 4xx must be JSON. Failures the API offers on purpose (``/error-simulation``, the chain's
``simulate_failure`` field) are the only 5xx allowed. A dependency's deadline (the JSON 503
or 504 of ``services.errors`` naming the database, the cache or another service, or a 503
from ``/ready``) can fire on a host short of CPU: such a request is sent once more and the
second answer is judged, so an input that makes a dependency fail every time still fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar
from urllib.parse import quote_from_bytes

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from otel_lab.runtime.harness import RunningSystem
from otel_lab.services.gateway.routes import owner_of

SERVICES = ("api", "user-service", "order-service", "audit-service")
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
# A few hundred requests per test: user-service's through the gateway took 33 s on a quiet
# host and 124 s at load 20-25, past the suite's 120 s (a guard against hangs).
pytestmark = pytest.mark.timeout(360)


def schema_url(system: RunningSystem, service: str) -> str:
    path = "/api/openapi.json" if service == "console" else "/openapi.json"
    return system.url(service) + path


def _failure_on_purpose(case: schemathesis.Case) -> bool:
    if case.path == "/error-simulation":
        return True
    body = case.body if isinstance(case.body, dict) else {}
    return bool(body.get("simulate_failure"))


class _Answer(Protocol):
    status_code: int

    def json(self) -> Any: ...


A = TypeVar("A", bound=_Answer)


def _dependency_failed(response: _Answer) -> bool:
    """A dependency missed its deadline: services.errors' DependencyUnavailableError (503,
    ``<dependency>_unavailable``) or DependencyTimeoutError (504, ``upstream_timeout``), or
    ``/ready``'s 503 (a dependency's check did not answer in time)."""
    if response.status_code not in (503, 504):
        return False
    try:
        body = response.json()
        error_type = str(body.get("error_type", ""))
    except (ValueError, AttributeError):
        return False
    return (
        error_type.endswith("_unavailable")
        or error_type == "upstream_timeout"
        or body.get("status") == "not ready"
    )


def answer(send: Callable[[], A]) -> A:
    """``send()``'s response; after a dependency's 503/504, the response to a second try
    (the deadline fired on a busy host, or the input makes it fail every time)."""
    response = send()
    return send() if _dependency_failed(response) else response


def check(case: schemathesis.Case, base_url: str) -> None:
    response = answer(lambda: case.call(base_url=base_url, timeout=30))
    if _failure_on_purpose(case):
        return
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
        f"\nbody: {json.dumps(case.body, default=str)[:500]}"
    )
    if response.status_code >= 400:
        (content_type,) = response.headers["content-type"]  # schemathesis: header -> values
        assert content_type.startswith("application/json"), response.text


@pytest.mark.parametrize("via", ["direct", "gateway"])
@pytest.mark.parametrize("service", SERVICES)
def test_generated_requests_never_get_a_5xx(system: RunningSystem, service: str, via: str) -> None:
    schema = schemathesis.openapi.from_url(schema_url(system, service))
    base_url = system.url("gateway" if via == "gateway" else service)
    operations = [result.ok() for result in schema.get_all_operations()]
    if via == "gateway":
        operations = [op for op in operations if owner_of(op.path) == service]
        assert operations, f"the gateway routes none of {service}'s paths"
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: schemathesis.Case) -> None:
                check(case, base_url)

            try:
                fuzz()
            except Unsatisfiable:
                # An operation without parameters or body has no invalid form to generate.
                assert mode is schemathesis.GenerationMode.NEGATIVE


# -- hostile requests: a fixed corpus on every operation of every service, the gateway and
# the console's API -------------------------------------------------------------------------

HOSTILE_VALUES = {
    # percent-encoded as sent on the wire: a lone surrogate as UTF-8 is not valid UTF-8
    "lone surrogate": "%ED%A0%80",
    "invalid utf-8": "%FF%FE",
    "nul": "a%00b",
    "huge number": "9" * 5000,
    "float overflow": "1e999",
    "huge negative": "-" + "9" * 40,
    "NaN": "NaN",
    "long": "x" * 8000,
    "path climb": "..%2F..%2Fetc%2Fpasswd",
}

HOSTILE_HEADERS: dict[str, dict[str, bytes]] = {
    "traceparent garbage": {"traceparent": b"00-zzzz-\xff\xfe-01", "tracestate": b"=,=,=" * 100},
    "baggage flood": {"baggage": b",".join(b"k%d=v%%FF%%ED%%A0%%80" % i for i in range(500))},
    "request id": {"x-request-id": b"\xff\xfe<script>" + b"x" * 2000},
    "latin-1 bytes": {"user-agent": b"\xe9\xff\x80", "accept-language": b"\xff"},
    "bad accept": {"accept": b"*/*;q=banana, \xff/\xff"},
    "idempotency key": {"idempotency-key": b"\xff" * 300},
    "request timeout": {"x-request-timeout-ms": b"-1e999\xff" + b"9" * 300},  # ignored
    "utf-16 json": {"content-type": b"application/json; charset=utf-16"},
    "bogus encoding": {"content-encoding": b"gzip"},
    "cookie flood": {"cookie": b"; ".join(b"c%d=\xff" % i for i in range(300))},
}

HOSTILE_BODIES = {
    "lone surrogate": (b'{"name": "\\ud800", "user_name": "\\udfff"}', "application/json"),
    "invalid utf-8": (b'{"name": "\xff\xfe"}', "application/json"),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    "deep object": (b'{"a": ' * 5000 + b"1" + b"}" * 5000, "application/json"),
    "huge number": (b'{"name": "n", "quantity": ' + b"9" * 5000 + b"}", "application/json"),
    "float overflow": (b'{"name": "n", "price": 1e999, "amount": -1e999}', "application/json"),
    "NaN": (b'{"name": NaN, "price": Infinity}', "application/json"),
    "null": (b"null", "application/json"),
    "truncated": (b'{"name": "x', "application/json"),
    "empty": (b"", "application/json"),
    "text/plain": (b'{"name": "plain"}', "text/plain"),
    "form": (b"name=form&user_name=%FF", "application/x-www-form-urlencoded"),
    "multipart": (b"--b\r\n\r\n--b--", "multipart/form-data; boundary=b"),
    "xml": (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'a'>]><x>&a;</x>", "application/xml"),
    "oversized": (b'{"name": "' + b"x" * 2_000_000 + b'"}', "application/json"),
    # and "oversized, streamed": the same without a Content-Length (hostile_requests)
}


# A query that keeps an operation's plain request cheap: the whole store is not exported
# once per hostile header.
PLAIN_QUERY = {"/api/export": "?trace_id=" + "0" * 32}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # a template: "/items/{item_id}"
    params: dict[str, dict[str, Any]]  # name -> {"in": ..., "schema": ...}
    has_body: bool

    def path_with(self, value: str | None = None) -> str:
        """The path with every path parameter set to ``value`` (raw, already encoded) or to
        a plausible value of its type."""
        path = self.path
        for name, param in self.params.items():
            if param["in"] == "path":
                kind = param.get("schema", {}).get("type")
                plausible = "1" if kind in ("integer", "number") else "x1"
                path = path.replace("{" + name + "}", value or plausible)
        return path


def operations(schema: dict[str, Any]) -> list[Operation]:
    found = []
    for path, methods in schema["paths"].items():
        for method, spec in methods.items():
            if method.upper() not in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                continue
            params = {p["name"]: p for p in spec.get("parameters", []) if p["in"] != "header"}
            found.append(Operation(method.upper(), path, params, "requestBody" in spec))
    return found


Hostile = tuple[str, str, str, dict[str, Any]]  # name, method, relative URL, httpx keywords


@dataclass(frozen=True)
class _Streamed:
    """A body sent in chunks, without a Content-Length (chunked transfer encoding); whole
    again each time it is sent."""

    size: int

    def __iter__(self) -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(self.size // 65536):
            yield b"x" * 65536
        yield b'"}'


def hostile_requests(op: Operation) -> Iterator[Hostile]:
    """Each hostile form of a request for ``op``."""
    plain = op.path_with() + PLAIN_QUERY.get(op.path, "")
    json_headers = {"content-type": "application/json"}
    body: dict[str, Any] = {"content": b"{}", "headers": json_headers} if op.has_body else {}
    if any(p["in"] == "path" for p in op.params.values()):
        for name, value in HOSTILE_VALUES.items():
            yield f"path {name}", op.method, op.path_with(value), {}
    queries = [n for n, p in op.params.items() if p["in"] == "query"] or ["limit"]
    for name, value in HOSTILE_VALUES.items():
        query = "&".join(f"{q}={value}" for q in queries)
        if len(query) > 30_000:  # httpx refuses URLs over 64 KiB: the first parameter only
            query = f"{queries[0]}={value}"
        yield f"query {name}", op.method, f"{op.path_with()}?{query}", body
    yield "query flood", op.method, f"{op.path_with()}?" + "&".join(["a=%FF"] * 2000), body
    for name, headers in HOSTILE_HEADERS.items():
        sent = {
            "content": b"{}" if op.has_body else None,
            "headers": {**json_headers, **headers},
        }
        yield f"headers {name}", op.method, plain, sent
    if op.has_body:
        for name, (content, content_type) in HOSTILE_BODIES.items():
            yield (
                f"body {name}",
                op.method,
                plain,
                {"content": content, "headers": {"content-type": content_type}},
            )
        yield (
            "body oversized, streamed",
            op.method,
            plain,
            {"content": _Streamed(2_000_000), "headers": {"content-type": "application/json"}},
        )


def _allowed_5xx(op: Operation) -> bool:
    return op.path == "/error-simulation"


def _send_hostile(client: httpx.Client, ops: list[Operation]) -> list[str]:
    """Every hostile request to every operation; what broke the rules."""
    broken = []
    for op in ops:
        for name, method, url, sent in hostile_requests(op):
            where = f"{op.method} {op.path} [{name}] via {client.base_url}"
            try:
                response = answer(partial(client.request, method, url, **sent))
            except httpx.HTTPError as exc:
                broken.append(f"{where}: no answer ({exc!r})")
                continue
            if problem := _judge(op, name, response):
                broken.append(f"{where}: {problem}")
    return broken


def _judge(op: Operation, name: str, response: httpx.Response) -> str | None:
    """What is wrong with an answer to a hostile request, if anything."""
    status = response.status_code
    if status >= 500 and not _allowed_5xx(op):
        return f"{status} {response.text[:200]}"
    if status >= 400 and not response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        return f"{status} {response.headers.get('content-type')}"
    if name.startswith("body oversized") and status != 413 and op is not UNROUTED:
        return f"{status}, not 413"
    return None


# Not in any schema: the gateway answers a path it does not route with a 404, before
# reading the body (so an oversized one gets the 404 too).
UNROUTED = Operation("POST", "/nowhere/{x}", {"x": {"in": "path"}}, True)


@pytest.mark.parametrize("service", [*SERVICES, "gateway", "console"])
def test_hostile_requests_get_a_json_4xx_never_a_5xx(system: RunningSystem, service: str) -> None:
    """Every operation of the service's OpenAPI schema, with hostile paths, query strings,
    headers and bodies; a service's operations through the gateway too. A 2xx is fine (a
    header nobody reads); a 4xx must be JSON; a 5xx or a connection reset never happens."""
    schema = httpx.get(schema_url(system, service), timeout=10)
    assert schema.status_code == 200, schema.text
    ops = operations(schema.json())
    if service == "gateway":
        ops.append(UNROUTED)
    assert ops
    broken = []
    with httpx.Client(base_url=system.url(service), timeout=30) as client:
        broken += _send_hostile(client, ops)
    if service in SERVICES:
        with httpx.Client(base_url=system.url("gateway"), timeout=30) as client:
            broken += _send_hostile(client, [op for op in ops if owner_of(op.path) == service])
    assert not broken, f"{len(broken)} hostile requests broke the rules:\n" + "\n".join(broken[:40])


# -- random query strings and headers (hypothesis) ---------------------------------------------

HEADER_NAMES = (
    "traceparent", "tracestate", "baggage", "x-request-id", "idempotency-key", "content-type",
    "content-encoding", "accept", "accept-encoding", "cookie", "authorization", "user-agent",
    "x-forwarded-for", "if-none-match", "range", "origin", "referer", "expect",
)  # fmt: skip
# Any byte a client can put in a header value: h11 (like any HTTP/1.1 server) refuses
# control characters and leading or trailing whitespace before the application sees them.
HEADER_VALUES = st.binary(max_size=300).map(
    lambda raw: bytes(c for c in raw if c == 9 or (c >= 32 and c != 127)).strip(b" \t")
)
QUERIES = st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=300)), max_size=8).map(
    lambda pairs: "&".join(f"{quote_from_bytes(k)}={quote_from_bytes(v)}" for k, v in pairs)
)
RANDOM = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


def _schema_operations(system: RunningSystem, service: str) -> list[Operation]:
    schema = httpx.get(schema_url(system, service), timeout=10)
    assert schema.status_code == 200, schema.text
    return operations(schema.json())


@pytest.mark.parametrize("service", [*SERVICES, "gateway", "console"])
def test_random_query_strings_and_headers_never_get_a_5xx(
    system: RunningSystem, service: str
) -> None:
    """Random bytes as query parameters (names and values) and as the values of the headers
    the system reads, on random operations; through the gateway, on every service's
    operations it routes."""
    ops = _schema_operations(system, service)
    if service == "gateway":
        for owner in SERVICES:
            routed = _schema_operations(system, owner)
            ops += [op for op in routed if owner_of(op.path) == owner]
    ops = [op for op in ops if not _allowed_5xx(op)]
    client = httpx.Client(base_url=system.url(service), timeout=30)

    @RANDOM
    @given(
        op=st.sampled_from(ops),
        query=QUERIES,
        headers=st.dictionaries(st.sampled_from(HEADER_NAMES), HEADER_VALUES, max_size=6),
    )
    def fuzz(op: Operation, query: str, headers: dict[str, bytes]) -> None:
        url = op.path_with() + PLAIN_QUERY.get(op.path, "")
        url += ("&" if "?" in url else "?") + query
        sent = {"content-type": b"application/json", **headers}
        response = answer(
            lambda: client.request(
                op.method, url, content=b"{}" if op.has_body else None, headers=sent
            )
        )
        problem = _judge(op, "random", response)
        assert problem is None, f"{op.method} {url[:300]} {headers!r:.500}: {problem}"

    with client:
        fuzz()
