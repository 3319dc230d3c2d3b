"""``db.execute`` and ``db.execute_blocking`` (hot statements straight on psycopg) against
SQLAlchemy's own ``Connection.execute``: the same rows, the same database span and metric,
the same errors, on the system's real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sqlalchemy.ext.asyncio import AsyncConnection

from otel_lab import db
from otel_lab.items import ItemRow, items
from otel_lab.runtime.harness import RunningSystem
from otel_lab.settings import Settings
from otel_lab.telemetry import metrics as prom
from otel_lab.telemetry.setup import Telemetry

_INSERT = (
    sa.insert(items)
    .values(name=sa.bindparam("name"), description=sa.bindparam("description"))
    .returning(*items.c)
)  # ``status`` comes from the column's Python-side default
_GET = sa.select(items).where(items.c.id == sa.bindparam("item_id"))
_COUNT = sa.select(sa.func.count()).select_from(items).where(items.c.name == sa.bindparam("name"))
_BAD_ID = sa.text("SELECT CAST(:value AS integer) AS n")
_GET_TYPED = db.Statement(_GET, ItemRow)


class _NotAnItem(NamedTuple):
    id: int
    title: str


_GET_MISTYPED = db.Statement(_GET, _NotAnItem)


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _db_operations(operation: str) -> float:
    for metric in prom.DB_OPERATION.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels.get("operation") == operation:
                return float(sample.value)
    return 0.0


Params = dict[str, Any]
Steps = list[tuple[Any, Params]]  # (a statement built once, its parameters)
Run = Callable[[AsyncConnection, Any, Params], Awaitable[Any]]


async def _sqlalchemy(connection: AsyncConnection, statement: Any, params: Params) -> Any:
    return (await connection.execute(statement, params)).all()


async def _driver(connection: AsyncConnection, statement: Any, params: Params) -> Any:
    return list(await db.execute(connection, statement, params))


def _traced(
    system: RunningSystem, run: Run, steps: Steps
) -> tuple[list[Any], tuple[ReadableSpan, ...]]:
    """Run ``steps`` on one autocommit connection of a service engine; (results, spans)."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry(tracer_provider=provider)
    settings = Settings(DATABASE_URL=system.database_url)

    async def go() -> list[Any]:
        engine = db.create_engine(settings, telemetry, autocommit=True)
        try:
            results = []
            async with engine.connect() as connection:
                for statement, params in steps:
                    try:
                        results.append(await run(connection, statement, params))
                    except sa.exc.DBAPIError as exc:
                        results.append(type(exc))
                # A failed statement (not a disconnect) leaves the connection usable.
                results.append(await run(connection, sa.text("SELECT 1 AS one"), {}))
            return results
        finally:
            await engine.dispose()

    return asyncio.run(go()), spans.get_finished_spans()


def test_rows_spans_and_errors_are_sqlalchemys(system: RunningSystem) -> None:
    name = f"db-execute {uuid.uuid4().hex[:8]}"
    steps: Steps = [
        (_INSERT, {"name": name, "description": "one"}),
        (_COUNT, {"name": name}),
        (_BAD_ID, {"value": "not a number"}),
    ]
    inserts_before = _db_operations("INSERT")
    theirs, their_spans = _traced(system, _sqlalchemy, steps)
    ours, our_spans = _traced(system, _driver, steps)
    # Two items were written, one by each; the metric saw both inserts.
    assert _db_operations("INSERT") == inserts_before + 2

    (their_item,), (our_item,) = theirs[0], ours[0]
    assert our_item.status == their_item.status == "pending"  # the column's default
    assert (our_item.name, our_item.description) == (their_item.name, their_item.description)
    assert our_item._mapping.keys() == their_item._mapping.keys()
    assert theirs[1] == [(1,)] and ours[1] == [(2,)]  # after each insert (theirs ran first)
    assert ours[2] is theirs[2] is sa.exc.DataError  # psycopg's error, wrapped alike
    assert ours[3] == theirs[3] == [(1,)]

    assert [s.name for s in our_spans] == [s.name for s in their_spans]
    for mine, theirs_span in zip(our_spans, their_spans, strict=True):
        assert _attributes(mine) == _attributes(theirs_span)
        assert mine.status.status_code == theirs_span.status.status_code
    failed = our_spans[2]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["error.type"]

    async def read_back() -> Any:
        engine = db.create_engine(
            Settings(DATABASE_URL=system.database_url), Telemetry(enabled=False)
        )
        try:
            async with engine.connect() as connection:
                return (
                    (await db.execute(connection, _GET, {"item_id": our_item.id})).one(),
                    (await db.execute(connection, _GET_TYPED, {"item_id": our_item.id})).one(),
                )
        finally:
            await engine.dispose()

    untyped, typed = asyncio.run(read_back())
    assert untyped == typed == our_item
    assert type(typed) is ItemRow and typed.name == name  # a db.Statement's row type


def test_blocking_rows_and_errors(system: RunningSystem) -> None:
    engine = db.create_blocking_engine(
        Settings(DATABASE_URL=system.database_url), Telemetry(enabled=False), autocommit=True
    )
    try:
        with engine.connect() as connection:
            name = f"db-execute-blocking {uuid.uuid4().hex[:8]}"
            item = db.execute_blocking(
                connection, _INSERT, {"name": name, "description": None}
            ).one()
            assert item.status == "pending" and item.name == name
            assert db.execute_blocking(connection, _GET, {"item_id": item.id}).one() == item
            typed = db.execute_blocking(connection, _GET_TYPED, {"item_id": item.id}).one()
            assert type(typed) is ItemRow and typed == item
            # A row type whose fields are not the statement's columns fails at the first run.
            with pytest.raises(TypeError, match="_NotAnItem"):
                db.execute_blocking(connection, _GET_MISTYPED, {"item_id": item.id})
            with pytest.raises(sa.exc.DataError):
                db.execute_blocking(connection, _BAD_ID, {"value": "x"})
            assert db.execute_blocking(connection, _COUNT, {"name": name}).one() == (1,)
    finally:
        engine.dispose()


def test_statements_built_per_call_do_not_pile_up_in_the_compile_cache() -> None:
    """A statement built per call is compiled each time, and the cache keeps at most
    ``_MAX_COMPILED`` of them alive, not every one ever passed."""
    dialect = sa.create_engine("postgresql+psycopg://").dialect
    built = [sa.select(items.c.id).where(items.c.id == i) for i in range(db._MAX_COMPILED + 50)]
    for statement in built:
        db._compile(statement, dialect)
    assert 0 < len(db._compiled) <= db._MAX_COMPILED
    assert db._compile(built[-1], dialect) is db._compiled[id(built[-1])][1]  # still cached
