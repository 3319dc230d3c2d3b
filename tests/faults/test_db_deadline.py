"""The PostgreSQL deadline is a budget for one checkout of a connection (one request's or
task's database work), not for each round trip: a real PostgreSQL, slowed (``pg_sleep``)
or hung (SIGSTOP) for real.

The fault suite once saw a 503 after 3.2 s with PostgreSQL hung: the request's connect
took most of the 1.5 s deadline just before the server hung, then its first statement
waited a whole deadline of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack

import psutil
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from otel_lab.db import (
    POOL_SIZE,
    WARM_CONNECTIONS,
    create_blocking_engine,
    create_engine,
    warm_up,
)
from otel_lab.runtime.embedded import EmbeddedPostgres
from otel_lab.services import deadline as request_deadline
from otel_lab.settings import Settings
from otel_lab.telemetry import Telemetry
from tests.faults.lab import frozen

DEADLINE = 1.0  # the server's statement_timeout is 80 % of it: 0.8 s
SLOW = "SELECT 1 FROM pg_sleep(0.6)"  # well within one deadline; two are not
UNTRACED = Telemetry(enabled=False)  # the deadlines are under test, not the spans


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this module's own: the tests stop it."""
    with EmbeddedPostgres(tmp_path_factory.mktemp("db-deadline")) as server:
        yield server


@pytest.fixture
def settings(postgres: EmbeddedPostgres) -> Settings:
    return Settings.model_validate(
        {"DATABASE_URL": postgres.url, "DEPENDENCY_TIMEOUT_SECONDS": DEADLINE}
    )


def test_one_budget_for_a_checkouts_round_trips(settings: Settings) -> None:
    """Two statements of 0.6 s on one checkout miss the 1 s budget; the next checkout, on a
    new connection, has a budget of its own. The same for the worker's blocking engine."""

    async def scenario() -> None:
        engine = create_engine(settings, UNTRACED)
        try:
            async with engine.connect() as conn:
                await conn.execute(text(SLOW))
                with pytest.raises(DBAPIError, match="did not answer within 1 s"):
                    await conn.execute(text(SLOW))
            async with engine.connect() as conn:
                assert (await conn.execute(text(SLOW))).scalar_one() == 1
        finally:
            await engine.dispose()

    asyncio.run(scenario())

    engine = create_blocking_engine(settings, UNTRACED)
    try:
        with engine.connect() as conn:
            conn.execute(text(SLOW))
            with pytest.raises(DBAPIError, match="did not answer within 1 s"):
                conn.execute(text(SLOW))
        with engine.connect() as conn:
            assert conn.execute(text(SLOW)).scalar_one() == 1
    finally:
        engine.dispose()


def test_a_slow_connect_leaves_less_for_the_first_statement(
    settings: Settings, postgres: EmbeddedPostgres
) -> None:
    """A connect that waited 0.7 s for a hung server leaves 0.3 s of the budget: the first
    statement (0.6 s) misses it, where a deadline per round trip would let it finish."""

    assert postgres.pid is not None
    server = psutil.Process(postgres.pid)
    hung = 0.7

    async def scenario() -> None:
        engine = create_engine(settings, UNTRACED)
        loop = asyncio.get_running_loop()
        try:
            with frozen(postgres.pid):  # the server and its backends
                loop.call_later(hung, lambda: [p.resume() for p in [server, *server.children()]])
                started = time.monotonic()
                async with engine.connect() as conn:
                    assert time.monotonic() - started >= hung  # it waited for the server
                    with pytest.raises(DBAPIError, match="did not answer within 1 s"):
                        await conn.execute(text(SLOW))
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_the_request_deadline_cuts_every_wait_shorter(postgres: EmbeddedPostgres) -> None:
    """Within a request with 0.3 s left, a statement, a wait for a pooled connection and a
    connect to a hung server each give up after about 0.3 s, not the 5 s of their own."""
    assert postgres.pid is not None
    budget = 0.3
    settings = Settings.model_validate(
        {"DATABASE_URL": postgres.url, "DEPENDENCY_TIMEOUT_SECONDS": 5.0}
    )

    async def scenario() -> None:
        engine = create_engine(settings, UNTRACED)
        try:
            with request_deadline.within(budget):
                started = time.monotonic()
                with pytest.raises(DBAPIError, match="within the request's deadline"):
                    async with engine.connect() as conn:
                        await conn.execute(text(SLOW))
                assert time.monotonic() - started < 0.55

            # Every connection the pool may hold (POOL_SIZE) taken: the next checkout waits.
            async with AsyncExitStack() as held:
                for _ in range(POOL_SIZE):
                    await held.enter_async_context(engine.connect())
                with request_deadline.within(budget):
                    started = time.monotonic()
                    with pytest.raises(PoolTimeoutError):
                        await engine.connect().__aenter__()
                    assert time.monotonic() - started < 0.55
        finally:
            await engine.dispose()

        fresh = create_engine(settings, UNTRACED)
        try:
            with frozen(postgres.pid), request_deadline.within(budget):  # a hung server
                started = time.monotonic()
                with pytest.raises(DBAPIError, match="within the request's deadline"):
                    async with fresh.connect() as conn:
                        await conn.execute(text("SELECT 1"))
                assert time.monotonic() - started < 0.55
        finally:
            await fresh.dispose()

    asyncio.run(scenario())


def test_a_statement_whose_client_gave_up_stops_on_the_server(postgres: EmbeddedPostgres) -> None:
    """A request's deadline closes the connection of a statement it no longer waits for;
    the server notices within its client check interval and stops the statement, instead
    of running it (or, for a write waiting on a lock, doing it) until statement_timeout."""
    settings = Settings.model_validate(
        {"DATABASE_URL": postgres.url, "DEPENDENCY_TIMEOUT_SECONDS": 5.0}
    )
    marker = f"orphan-{time.monotonic_ns()}"

    async def scenario() -> None:
        engine = create_engine(settings, UNTRACED)
        try:
            with (
                request_deadline.within(0.3),
                pytest.raises(DBAPIError, match="within the request's deadline"),
            ):
                async with engine.connect() as conn:
                    await conn.execute(text(f"SELECT pg_sleep(3) /* {marker} */"))
        finally:
            await engine.dispose()

    asyncio.run(scenario())
    gave_up = time.monotonic()
    dsn = postgres.url.replace("+psycopg", "")
    query = "SELECT 1 FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()"
    with psycopg.connect(dsn, autocommit=True) as conn:
        while conn.execute(query, (f"%{marker}%",)).fetchall():
            # pg_sleep(3) under a 4 s statement_timeout: without the client check it runs on.
            assert time.monotonic() - gave_up < 1.5, "the server still runs the orphan"
            time.sleep(0.05)


def test_a_cut_wait_drops_its_connection_not_the_pool(postgres: EmbeddedPostgres) -> None:
    """A statement cut by the request's deadline closes its connection; the pool's other
    connections stay (the same server backends answer afterwards). SQLAlchemy alone takes
    the closed connection for a lost server and makes every pooled connection reconnect."""
    settings = Settings.model_validate(
        {"DATABASE_URL": postgres.url, "DEPENDENCY_TIMEOUT_SECONDS": 5.0}
    )
    pid = text("SELECT pg_backend_pid()")

    async def backends(engine: AsyncEngine, count: int) -> set[int]:
        """The server pids of ``count`` connections checked out at once."""
        async with AsyncExitStack() as held:
            conns = [await held.enter_async_context(engine.connect()) for _ in range(count)]
            return {(await conn.execute(pid)).scalar_one() for conn in conns}

    async def scenario() -> None:
        engine = create_engine(settings, UNTRACED)
        try:
            before = await backends(engine, 3)
            assert engine.pool.checkedin() == 3
            with (
                request_deadline.within(0.3),
                pytest.raises(DBAPIError, match="within the request's deadline"),
            ):
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT pg_sleep(3)"))
            after = await backends(engine, 3)
            assert engine.pool.checkedin() == 3
            # Two of the three pooled connections are the same; the cut one is new.
            assert len(before & after) == 2, (before, after)
        finally:
            await engine.dispose()

    asyncio.run(scenario())

    blocking = create_blocking_engine(settings, UNTRACED)
    try:
        conns = [blocking.connect() for _ in range(3)]
        before_sync = {c.execute(pid).scalar_one() for c in conns}
        for c in conns:
            c.close()
        with (
            request_deadline.within(0.3),
            pytest.raises(DBAPIError, match="within the request's deadline"),
            blocking.connect() as conn,
        ):
            conn.execute(text("SELECT pg_sleep(3)"))
        conns = [blocking.connect() for _ in range(3)]
        after_sync = {c.execute(pid).scalar_one() for c in conns}
        for c in conns:
            c.close()
        assert len(before_sync & after_sync) == 2, (before_sync, after_sync)
    finally:
        blocking.dispose()


def test_warm_up_fills_the_pool_and_gives_up_on_a_hung_server(
    settings: Settings, postgres: EmbeddedPostgres
) -> None:
    """A starting service opens its pool's first connections before it serves; with the
    server hung it gives up after its bound (and starts cold) instead of never serving."""
    assert postgres.pid is not None

    async def scenario() -> None:
        engine = create_engine(settings, UNTRACED)
        try:
            with frozen(postgres.pid):
                assert await warm_up(engine, within=0.5) is False
            assert engine.pool.checkedin() == 0
            assert await warm_up(engine) is True
            assert engine.pool.checkedin() == WARM_CONNECTIONS
        finally:
            await engine.dispose()

    asyncio.run(scenario())
