"""Bad input never gets a 500: schemathesis generates requests from each service's own
OpenAPI schema (valid requests, and invalid ones: wrong types, missing fields, bad
paths and queries) and sends them to the running system, to the service itself and through
the gateway (the paths the gateway routes to it). Failures the API offers on purpose
(``/error-simulation``, the chain's ``simulate_failure`` field) are the only 5xx allowed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from otel_lab.runtime.harness import RunningSystem
from otel_lab.services.gateway.routes import owner_of

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def _load(system: RunningSystem, service: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(system.url(service) + "/openapi.json")


def _failure_on_purpose(case: schemathesis.Case) -> bool:
    if case.path == "/error-simulation":
        return True
    body = case.body if isinstance(case.body, dict) else {}
    return bool(body.get("simulate_failure"))


def check(case: schemathesis.Case, base_url: str) -> None:
    response = case.call(base_url=base_url, timeout=30)
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
@pytest.mark.parametrize("service", ["api", "user-service", "order-service", "audit-service"])
def test_generated_requests_never_get_a_5xx(system: RunningSystem, service: str, via: str) -> None:
    schema = _load(system, service)
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

SERVICES = ("api", "user-service", "order-service", "audit-service")

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
}


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


def hostile_requests(op: Operation) -> Iterator[tuple[str, httpx.Request]]:
    """Each hostile form of a request for ``op``: its name, and the request (relative URL)."""
    plain = op.path_with()
    json_headers = {"content-type": "application/json"}
    body = b"{}" if op.has_body else None
    if any(p["in"] == "path" for p in op.params.values()):
        for name, value in HOSTILE_VALUES.items():
            yield f"path {name}", httpx.Request(op.method, op.path_with(value))
    queries = [n for n, p in op.params.items() if p["in"] == "query"] or ["limit"]
    for name, value in HOSTILE_VALUES.items():
        query = "&".join(f"{q}={value}" for q in queries)
        yield f"query {name}", httpx.Request(op.method, f"{plain}?{query}", content=body,
                                             headers=json_headers)  # fmt: skip
    yield "query flood", httpx.Request(op.method, f"{plain}?" + "&".join(["a=%FF"] * 2000))
    for name, headers in HOSTILE_HEADERS.items():
        yield (
            f"headers {name}",
            httpx.Request(op.method, plain, content=body, headers={**json_headers, **headers}),
        )
    if op.has_body:
        for name, (content, content_type) in HOSTILE_BODIES.items():
            yield (
                f"body {name}",
                httpx.Request(
                    op.method, plain, content=content, headers={"content-type": content_type}
                ),
            )


def _allowed_5xx(op: Operation) -> bool:
    return op.path == "/error-simulation"


def _send_hostile(client: httpx.Client, ops: list[Operation]) -> list[str]:
    """Every hostile request to every operation; what broke the rules."""
    broken = []
    for op in ops:
        for name, request in hostile_requests(op):
            where = f"{op.method} {op.path} [{name}] via {client.base_url}"
            try:
                response = client.send(client.build_request(
                    request.method, str(request.url), content=request.content,
                    headers=request.headers,
                ))  # fmt: skip
            except httpx.HTTPError as exc:
                broken.append(f"{where}: no answer ({exc!r})")
                continue
            status = response.status_code
            if status >= 500 and not _allowed_5xx(op):
                broken.append(f"{where}: {status} {response.text[:200]}")
            elif status >= 400 and not response.headers.get("content-type", "").startswith(
                "application/json"
            ):
                broken.append(f"{where}: {status} {response.headers.get('content-type')}")
            elif name == "body oversized" and status != 413:
                broken.append(f"{where}: {status}, not 413")
    return broken


@pytest.mark.parametrize("service", [*SERVICES, "console"])
def test_hostile_requests_get_a_json_4xx_never_a_5xx(system: RunningSystem, service: str) -> None:
    """Every operation of the service's OpenAPI schema, with hostile paths, query strings,
    headers and bodies; the services' operations through the gateway too. A 2xx is fine (a
    header nobody reads); a 4xx must be JSON; a 5xx or a connection reset never happens."""
    base = system.url(service)
    schema_path = "/api/openapi.json" if service == "console" else "/openapi.json"
    ops = operations(httpx.get(base + schema_path, timeout=10).json())
    assert ops
    broken = []
    with httpx.Client(base_url=base, timeout=30) as client:
        broken += _send_hostile(client, ops)
    if service != "console":
        with httpx.Client(base_url=system.url("gateway"), timeout=30) as client:
            broken += _send_hostile(client, [op for op in ops if owner_of(op.path) == service])
            broken += _send_hostile(client, [Operation("GET", "/health", {}, False)])
            broken += _send_hostile(
                client, [Operation("POST", "/nowhere/{x}", {"x": {"in": "path"}}, True)]
            )
    assert not broken, f"{len(broken)} hostile requests broke the rules:\n" + "\n".join(broken[:40])
