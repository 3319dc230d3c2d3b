"""Bad input never gets a 500: schemathesis generates requests from each service's own
OpenAPI schema (valid requests, and invalid ones: wrong types, missing fields, bad
paths and queries) and sends them to the running system, to the service itself and through
the gateway (the paths the gateway routes to it). Failures the API offers on purpose
(``/error-simulation``, the chain's ``simulate_failure`` field) are the only 5xx allowed."""

from __future__ import annotations

import json

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
