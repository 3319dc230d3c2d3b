"""Database client telemetry for a SQLAlchemy engine: a CLIENT span per statement, the pool's
connection count as an observed metric.

It replaces ``opentelemetry-instrumentation-sqlalchemy`` (0.66b1) on the services' engines
because that one costs about 150 us of CPU per span on this kind of machine, four times the
SDK's own span (docs/instrumentation.md, ``scripts/bench_clients.py``): it rebuilds the
connection attributes from the URL and re-reads the semconv opt-in on every statement, sets
attributes one call each, opens a ``connect`` span on every pool checkout and adds to an
up-down counter four times per checkout. Here the connection attributes are computed once
per engine, each span is started with its attributes in one call, and the pool is observed
when metrics are collected instead of counted on every checkout.

The spans keep the contrib's names (``SELECT otel_lab``: operation and database) and its
stable attributes (``db.system.name``, ``db.namespace``, ``db.query.text``,
``db.operation.name``, ``server.address``, ``server.port``), so traces read the same;
``tests/telemetry/test_database.py`` compares both on the same statements. Two deliberate
differences, both toward the semantic conventions: ``db.operation.name`` is the operation
alone (``SELECT``, where the contrib repeats the span name), and a failed statement also
gets ``error.type``. Not emitted: the contrib's ``connect`` span per checkout (the
conventions define no such span; connection waits show as the parent span's time).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import TypeAlias

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.semconv._incubating.attributes.db_attributes import (
    DB_CLIENT_CONNECTION_POOL_NAME,
    DB_CLIENT_CONNECTION_STATE,
)
from opentelemetry.semconv._incubating.metrics.db_metrics import DB_CLIENT_CONNECTION_COUNT
from opentelemetry.semconv.attributes.db_attributes import (
    DB_NAMESPACE,
    DB_OPERATION_NAME,
    DB_QUERY_TEXT,
    DB_SYSTEM_NAME,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue
from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext, ExecutionContext

SCOPE = "otel_lab.database"
_SPAN_KEY = "_otel_lab_span"  # on SQLAlchemy's execution context, from before to after
# Leading SQL comments (``/* ... */`` and ``-- ...``) before the operation keyword.
_LEADING_COMMENTS = re.compile(r"\A(?:\s*(?:/\*.*?\*/|--[^\n]*\n))*\s*", re.DOTALL)


@functools.lru_cache(maxsize=1024)  # a service runs the same few statements over and over
def operation_name(statement: str) -> str | None:
    """The statement's first keyword as written (``SELECT``, ``with``), as the contrib has it."""
    words = _LEADING_COMMENTS.sub("", statement, count=1).split(None, 1)
    return words[0] if words else None


# The ``context`` a cursor event's listener is given; SQLAlchemy documents that it may be None.
_Context: TypeAlias = ExecutionContext | None


def instrument_engine(
    engine: Engine,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> None:
    """Trace every statement ``engine`` runs and observe its pool (the sync engine of an
    ``AsyncEngine`` too: its statements go through it)."""
    tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
    url = engine.url
    system = engine.dialect.name
    database = url.database or ""
    connection: dict[str, AttributeValue] = {DB_SYSTEM_NAME: system}
    if database:
        connection[DB_NAMESPACE] = database
    if url.host:
        connection[SERVER_ADDRESS] = url.host
    if url.port:
        connection[SERVER_PORT] = url.port
    names: dict[str | None, str] = {}  # span name per operation: a handful per service

    def span_name(operation: str | None) -> str:
        name = names.get(operation)
        if name is None:
            name = names[operation] = " ".join(p for p in (operation, database) if p) or system
        return name

    @event.listens_for(engine, "before_cursor_execute")
    def _start(
        conn: object, cursor: object, statement: str, params: object, context: _Context, many: bool
    ) -> None:
        operation = operation_name(statement)
        attributes = {**connection, DB_QUERY_TEXT: statement}
        if operation:
            attributes[DB_OPERATION_NAME] = operation
        span = tracer.start_span(span_name(operation), kind=SpanKind.CLIENT, attributes=attributes)
        if context is not None:
            setattr(context, _SPAN_KEY, span)

    @event.listens_for(engine, "after_cursor_execute")
    def _end(
        conn: object, cursor: object, statement: str, params: object, context: _Context, many: bool
    ) -> None:
        span = getattr(context, _SPAN_KEY, None)
        if span is not None:
            span.end()
            setattr(context, _SPAN_KEY, None)

    @event.listens_for(engine, "handle_error")
    def _failed(exception_context: ExceptionContext) -> None:
        span = getattr(exception_context.execution_context, _SPAN_KEY, None)
        if span is None:
            return
        error = exception_context.original_exception
        span.set_attribute(ERROR_TYPE, type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end()
        setattr(exception_context.execution_context, _SPAN_KEY, None)

    _observe_pool(engine, meter_provider)


def _observe_pool(engine: Engine, meter_provider: metrics.MeterProvider | None) -> None:
    """``db.client.connection.count`` by state, read from the pool when metrics are collected
    (an asynchronous instrument: no work on the request path)."""
    pool = engine.pool
    name = pool.logging_name or engine.url.render_as_string(hide_password=True)
    idle = {DB_CLIENT_CONNECTION_POOL_NAME: name, DB_CLIENT_CONNECTION_STATE: "idle"}
    used = {DB_CLIENT_CONNECTION_POOL_NAME: name, DB_CLIENT_CONNECTION_STATE: "used"}

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        checked_in = getattr(pool, "checkedin", None)
        checked_out = getattr(pool, "checkedout", None)
        if checked_in is None or checked_out is None:  # a pool without counts (NullPool)
            return []
        return [Observation(checked_in(), idle), Observation(checked_out(), used)]

    meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
    meter.create_observable_up_down_counter(
        DB_CLIENT_CONNECTION_COUNT,
        callbacks=[observe],
        unit="{connection}",
        description="The number of connections that are currently in the state described by "
        "the state attribute.",
    )
