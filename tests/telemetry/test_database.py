"""``telemetry.database`` against the contrib SQLAlchemy instrumentation it replaces: the same
statements on real PostgreSQL, each engine exporting to its own in-memory exporter."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from otel_lab.runtime.harness import RunningSystem
from otel_lab.telemetry.database import instrument_engine, operation_name
from tests.telemetry.conftest import stable_semantic_conventions

STATEMENTS = (
    "SELECT 1",
    "/* a comment */ select count(*) from items",
    "WITH numbers AS (SELECT 1 AS n) SELECT n FROM numbers",
    "SELECT * FROM no_such_table",
)


class Traced:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def run(self, engine: sa.Engine, statement: str) -> ReadableSpan:
        self.spans.clear()
        tracer = self.tracer_provider.get_tracer("test")
        with (
            tracer.start_as_current_span("request"),
            engine.connect() as connection,
            contextlib.suppress(sa.exc.ProgrammingError),  # the failing statement
        ):
            connection.execute(sa.text(statement))
        spans = [s for s in self.spans.get_finished_spans() if s.name not in {"request", "connect"}]
        (span,) = spans
        (request,) = [s for s in self.spans.get_finished_spans() if s.name == "request"]
        assert span.parent is not None and span.parent.span_id == request.context.span_id
        return span


@pytest.fixture(scope="module")
def engines(system: RunningSystem) -> Iterator[tuple[Traced, sa.Engine, Traced, sa.Engine]]:
    url = system.database_url
    theirs, ours = Traced(), Traced()
    with stable_semantic_conventions():
        contrib_engine, our_engine = sa.create_engine(url), sa.create_engine(url)
        instrumentor = SQLAlchemyInstrumentor()
        instrumentor.instrument(
            engine=contrib_engine,
            tracer_provider=theirs.tracer_provider,
            meter_provider=theirs.meter_provider,
            enable_commenter=False,
        )
        instrument_engine(our_engine, ours.tracer_provider, ours.meter_provider)
        try:
            yield theirs, contrib_engine, ours, our_engine
        finally:
            instrumentor.uninstrument()
            contrib_engine.dispose()
            our_engine.dispose()


@pytest.mark.parametrize("statement", STATEMENTS)
def test_statement_spans_match_the_contrib_instrumentation(
    engines: tuple[Traced, sa.Engine, Traced, sa.Engine], statement: str
) -> None:
    theirs, contrib_engine, ours, our_engine = engines
    expected = theirs.run(contrib_engine, statement)
    actual = ours.run(our_engine, statement)

    assert actual.name == expected.name
    assert actual.kind == expected.kind == SpanKind.CLIENT
    assert actual.status.status_code == expected.status.status_code
    expected_attributes = dict(expected.attributes or {})
    actual_attributes = dict(actual.attributes or {})
    # The two deliberate differences (telemetry/database.py's docstring): the operation alone
    # in db.operation.name, and error.type on a failed statement.
    assert actual_attributes.pop("db.operation.name") == operation_name(statement)
    assert expected_attributes.pop("db.operation.name").startswith(operation_name(statement))
    if actual.status.status_code == StatusCode.ERROR:
        assert actual_attributes.pop("error.type") == "UndefinedTable"
        assert expected.status.description == actual.status.description
    assert actual_attributes == expected_attributes
    assert actual_attributes["db.system.name"] == "postgresql"
    assert actual_attributes["db.query.text"] == statement


def test_the_pool_is_observed_by_state(
    engines: tuple[Traced, sa.Engine, Traced, sa.Engine],
) -> None:
    _, _, ours, our_engine = engines
    with our_engine.connect():
        data = ours.reader.get_metrics_data()
    points = {
        point.attributes["db.client.connection.state"]: point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "db.client.connection.count"
        for point in metric.data.data_points
    }
    assert points["used"] == 1
    assert points["idle"] >= 0


def test_operation_names() -> None:
    assert operation_name("select 1") == "select"
    assert operation_name("  -- why\n/* how */ INSERT INTO t VALUES (1)") == "INSERT"
    assert operation_name("   ") is None
