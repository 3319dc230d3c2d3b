"""The console's UI port: the JSON API (one router per area, :mod:`otel_lab.console.routes`)
and the HTML pages, behind :class:`~otel_lab.console.security.UiGuard`.

Handlers are plain ``def`` functions: FastAPI runs them in its thread pool, each thread
with its own read-only SQLite connection, so a slow query never stalls the event loop
that also serves the OTLP receiver. Every page of the UI is built from these endpoints,
so anything the UI shows can also be fetched as JSON.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import FastAPI

from otel_lab.console import scenarios, web
from otel_lab.console.promapi import PromState
from otel_lab.console.routes import (
    admin,
    alerts,
    dashboards,
    logs,
    metrics,
    prom,
    services,
    sql,
    traces,
)
from otel_lab.console.routes.common import ApiOptions, ConsoleJSON, install_error_handlers
from otel_lab.console.security import UiGuard
from otel_lab.console.store import Store

__all__ = ["ApiOptions", "ConsoleJSON", "create_app"]

ROUTERS = (admin, services, traces, logs, metrics, sql, prom, alerts, dashboards, scenarios)


def create_app(store: Store, *, options: ApiOptions | None = None) -> UiGuard:
    """The UI-port app. Swagger's /docs is off: it loads assets from a CDN, which is
    unreachable offline; the schema is at /api/openapi.json."""
    options = options or ApiOptions()
    if options.prom is None:
        options = replace(options, prom=PromState())
    app = FastAPI(
        title="Otel Lab console",
        description="Traces, logs and metrics received over OTLP/HTTP.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        default_response_class=ConsoleJSON,
    )
    app.state.store = store
    app.state.options = options
    install_error_handlers(app)
    for area in ROUTERS:
        app.include_router(area.router)
    web.mount_static(app)
    app.include_router(web.router)
    _document_errors(app)
    return UiGuard(app, options.security)


_ERROR = {"application/json": {"schema": {"type": "object"}}}


def _document_errors(app: FastAPI) -> None:
    """The schema names the errors the API answers: a bad parameter is a 400 (the error
    handlers turn FastAPI's 422 into it, so a 422 never comes), an unknown item in the path
    a 404; both JSON, ``{"detail": ...}`` (the PromQL endpoints: Prometheus' error shape)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()  # cached by FastAPI: changed in place once
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                responses = operation["responses"]
                if responses.pop("422", None) is not None:
                    responses["400"] = {"description": "Bad parameter", "content": _ERROR}
                if "{" in path:
                    responses["404"] = {"description": "Not found", "content": _ERROR}
                for code, response in responses.items():  # declared by a route: the shape
                    if code.startswith("4"):
                        response.setdefault("content", _ERROR)
        for unused in ("HTTPValidationError", "ValidationError"):
            schema["components"]["schemas"].pop(unused, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
