"""Each service's ``/openapi.json`` documents the errors its routes answer, in the shared
error shape (``services.errors.document_errors``): bad requests sent to every operation get
only statuses the operation documents."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from otel_lab.services.api.app import create_app as create_api
from otel_lab.services.audit.app import create_app as create_audit
from otel_lab.services.base import MAX_BODY_BYTES
from otel_lab.services.orders.app import create_app as create_orders
from otel_lab.services.users.app import create_app as create_users
from tests.inprocess.conftest import Recorded, closed_url, run, served, settings_for

pytestmark = pytest.mark.timeout(120)

FACTORIES = {
    "api": create_api,
    "user-service": create_users,
    "order-service": create_orders,
    "audit-service": create_audit,
}
ERROR = {"$ref": "#/components/schemas/Error"}


def _app(service: str, recorded: Recorded, database_url: str, redis_url: str) -> FastAPI:
    down = closed_url()  # every other service: a bad request never gets that far
    settings = settings_for(
        DATABASE_URL=database_url, REDIS_URL=redis_url, ORDER_SERVICE_URL=down,
        AUDIT_SERVICE_URL=down, WEATHER_API_URL=down, DOWNSTREAM_RETRY_ATTEMPTS=1,
    )  # fmt: skip
    app: FastAPI = FACTORIES[service](settings, recorded.telemetry)
    return app


def _bad_requests(path: str, operation: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Requests the operation must refuse: an id out of range or unknown in the path, a
    query value of the wrong type, a body that is not JSON, one over the size limit."""
    params = operation.get("parameters", [])
    path_params = [p for p in params if p["in"] == "path"]
    body = {"content": b"{}", "headers": {"content-type": "application/json"}}
    if "requestBody" not in operation:
        body = {}

    def with_path(value: str) -> str:
        url = path
        for param in path_params:
            url = url.replace("{" + param["name"] + "}", value)
        return url

    plausible = with_path("7")
    for value in ("0", "x" * 300, "2000000000"):
        if path_params:
            yield with_path(value), body
    for param in params:
        if param["in"] == "query":
            yield f"{plausible}?{param['name']}=%FF%00-1", body
    if "requestBody" in operation:
        headers = {"content-type": "application/json"}
        yield plausible, {"content": b'{"unexpected": [', "headers": headers}
        yield plausible, {"content": b"[" * (MAX_BODY_BYTES + 1), "headers": headers}


@pytest.mark.parametrize("service", sorted(FACTORIES))
def test_bad_requests_get_only_the_statuses_the_schema_documents(
    recorded: Recorded, database_url: str, redis_url: str, service: str
) -> None:
    """Before, a service's schema named 422 (FastAPI's) and a few hand-written errors: an
    unknown id's 404 on most paths, the 413 of every body and the 503/504 of a dependency
    were not there."""
    app = _app(service, recorded, database_url, redis_url)

    async def go() -> tuple[list[str], set[int]]:
        undocumented, seen = [], set()
        async with served(app) as client:
            spec = (await client.get("/openapi.json")).json()
            for path, operations in spec["paths"].items():
                for method, operation in operations.items():
                    for url, sent in _bad_requests(path, operation):
                        response = await client.request(method, url, **sent)
                        seen.add(response.status_code)
                        if str(response.status_code) not in operation["responses"]:
                            undocumented.append(
                                f"{method.upper()} {url[:80]} -> {response.status_code}"
                                f" {response.text[:200]}"
                            )
        return undocumented, seen

    undocumented, seen = run(go())
    assert not undocumented, "\n".join(undocumented)
    assert {413, 422} <= seen, seen


@pytest.mark.parametrize("service", sorted(FACTORIES))
def test_every_error_is_documented_with_the_error_shape(recorded: Recorded, service: str) -> None:
    """One shape for every error (``Error``: detail, error_type, request_id); a 422 is it
    or FastAPI's list of field errors; ``/ready``'s 503 is its report."""
    spec = FACTORIES[service](settings_for(), recorded.telemetry).openapi()
    assert spec["components"]["schemas"]["Error"]["required"] == [
        "detail", "error_type", "request_id"
    ]  # fmt: skip
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if "requestBody" in operation:
                assert "413" in responses, (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            for code, response in responses.items():
                if code < "400" or path == "/ready":
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert schema == ERROR or ERROR in schema.get("anyOf", []), (method, path, code)
