"""The in-process tier: each service's ``create_app(settings, telemetry)`` served through
httpx's ASGI transport, its telemetry in in-memory exporters passed in as providers.

No process is spawned and nothing global is installed; where a route needs PostgreSQL or
Valkey it gets the real embedded servers of the runtime's pytest plugin (migrated once).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY
from starlette.types import Receive, Scope, Send

from otel_lab.runtime.embedded import EmbeddedPostgres, EmbeddedValkey
from otel_lab.runtime.plan import MIGRATIONS_INI
from otel_lab.runtime.procs import free_port
from otel_lab.runtime.pytest_plugin import embedded_data_dir, embedded_kv, embedded_pg
from otel_lab.settings import Settings
from otel_lab.telemetry import Telemetry

__all__ = ["embedded_data_dir", "embedded_kv", "embedded_pg"]  # session fixtures, re-exported

T = TypeVar("T")


@dataclass
class Recorded:
    """The in-memory telemetry a test's app reports to."""

    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    telemetry: Telemetry

    def server_span(self) -> ReadableSpan:
        """The one SERVER span recorded (the request's)."""
        (server,) = [s for s in self.spans.get_finished_spans() if s.kind is SpanKind.SERVER]
        return server


def recording() -> Recorded:
    """Fresh in-memory exporters and the telemetry that reports to them."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": "in-process"}))
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = Telemetry(tracer_provider, MeterProvider(metric_readers=[reader]))
    return Recorded(spans, reader, telemetry)


@pytest.fixture
def recorded() -> Recorded:
    return recording()


def errors_total(error_type: str) -> float:
    """``errors_total{error_type}`` as the process's /metrics would show it."""
    return REGISTRY.get_sample_value("errors_total", {"error_type": error_type}) or 0.0


def closed_url() -> str:
    """A loopback URL nothing listens on: a dependency that is down."""
    return f"http://127.0.0.1:{free_port()}"


def settings_for(**values: Any) -> Settings:
    """Settings from the given values (by their environment names) and the defaults only:
    neither the environment nor ``.env`` leaks in."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k in _SETTING_NAMES}
    try:
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]
    finally:
        os.environ.update(saved)


_SETTING_NAMES = {field.alias or name.upper() for name, field in Settings.model_fields.items()}


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client for ``app`` with its lifespan run around it, as a server would.

    httpx's transport does not run the lifespan nor pass its state, so this does both.
    """
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = dict(state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def run(test: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(test)


@pytest.fixture(scope="session")
def database_url(embedded_pg: EmbeddedPostgres) -> str:
    """The session's PostgreSQL, migrated to head (the runtime's own migration command)."""
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(MIGRATIONS_INI), "upgrade", "head"],
        env={**os.environ, "DATABASE_URL": embedded_pg.url, "OTEL_SDK_DISABLED": "true"},
        check=True,
        capture_output=True,
        timeout=120,
    )
    return embedded_pg.url


@pytest.fixture(scope="session")
def redis_url(embedded_kv: EmbeddedValkey) -> str:
    return embedded_kv.url
