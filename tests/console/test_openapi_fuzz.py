"""Bad input never gets a 500 from the console's API: schemathesis generates requests from
the console's own OpenAPI schema (valid ones, and invalid ones: wrong types, out-of-range
numbers, bad ids and times) and every answer is below 500, and JSON when it is an error."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from .conftest import Console

FUZZ = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
# Operations that change what other tests of the shared console read: clearing and importing
# telemetry, switching fault scenarios.
SKIPPED = {("POST", "/api/clear"), ("POST", "/api/import"), ("POST", "/api/scenarios/{name}")}


def test_generated_requests_never_get_a_5xx(console: Console) -> None:
    schema = schemathesis.openapi.from_url(console.ui_url + "/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    checked = [op for op in operations if (op.method.upper(), op.path) not in SKIPPED]
    assert len(checked) >= 20, [op.path for op in checked]
    for operation in checked:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: schemathesis.Case) -> None:
                response = case.call(base_url=console.ui_url, timeout=30)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} {case.query} -> "
                    f"{response.status_code}: {response.text[:500]}"
                )
                if response.status_code >= 400:
                    (content_type,) = response.headers["content-type"]
                    assert content_type.startswith("application/json"), response.text

            try:
                fuzz()
            except Unsatisfiable:
                # An operation without parameters or body has no invalid form to generate.
                assert mode is schemathesis.GenerationMode.NEGATIVE


def test_schema_carries_types_and_ranges(console: Console) -> None:
    doc = console.api("/api/openapi.json").json()
    params = {p["name"]: p["schema"] for p in doc["paths"]["/api/traces"]["get"]["parameters"]}
    assert params["limit"] == {
        "type": "integer", "maximum": 1000, "minimum": 1, "default": 20, "title": "Limit"
    }  # fmt: skip
    assert params["order"]["enum"] == ["start", "duration"]
    assert {"enum": ["error", "ok", "unset"], "type": "string"} in params["status"]["anyOf"]
    assert params["attr"]["type"] == "array"
    logs = {p["name"]: p["schema"] for p in doc["paths"]["/api/logs"]["get"]["parameters"]}
    assert logs["since"]["type"] == "string" and "ISO 8601" in logs["since"]["description"]
