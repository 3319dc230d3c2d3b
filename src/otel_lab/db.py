"""PostgreSQL access shared by the services and the worker.

Engines are instrumented once here: one span per statement (on ``sync_engine``, so async
drivers are not traced twice), and ``db_operation_seconds`` by statement verb.

Every call has a client-side deadline (``DEPENDENCY_TIMEOUT_SECONDS``, 1.5 s): a server that
is down, hung (SIGSTOP: the kernel still accepts connections and acknowledges data, so no
TCP timeout fires) or stuck behind a lock fails the request with a 503 instead of holding
it. The limits:

- one budget per checkout of a connection (one request's or task's database work): all
  its waits for the server together, connecting included for a new connection, get at
  most the deadline. psycopg's own wait gets what is left as its timeout, and a connection
  that misses it is closed (its state is unknown) and dropped, that connection only (the
  rest of the pool stays: the server is not gone). A budget per round trip instead let a
  request that connected slowly just before the server hung wait the deadline twice (3.2 s
  in the fault suite);
- the server's ``statement_timeout``, a little shorter, so a merely slow statement is
  cancelled cleanly by the server and its connection stays usable;
- waiting for a pooled connection.

Within a request, each of these waits also ends with the request's own deadline
(``services.deadline``: the budget the gateway set, shrunk hop by hop), whichever is
sooner; the service then answers 504 naming the database instead of 503.

There is no ``pool_pre_ping`` (a round trip before every checkout): after a PostgreSQL
restart the first statement on a stale connection fails with a disconnect, SQLAlchemy then
drops every pooled connection older than that moment, and the next request reconnects.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, Generic, NamedTuple, NoReturn, TypeAlias, TypeVar, overload

import psycopg
from psycopg import errors as pg_errors
from psycopg.abc import RV, PQGen
from psycopg.rows import TupleRow
from sqlalchemy import Engine, Executable, MetaData, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import Connection, Dialect, ExceptionContext
from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPICursor
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from otel_lab.services import deadline as request_deadline
from otel_lab.settings import Settings
from otel_lab.telemetry import metrics as prom
from otel_lab.telemetry.database import instrument_engine
from otel_lab.telemetry.setup import Telemetry

logger = logging.getLogger(__name__)

# Constraint names that Alembic can rely on across PostgreSQL versions.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class DatabaseNotConfiguredError(RuntimeError):
    pass


def database_url(settings: Settings) -> str:
    url = settings.database_url
    if not url:
        raise DatabaseNotConfiguredError(
            "DATABASE_URL is not set; start the system with `otel-lab up`, "
            "or point DATABASE_URL at a PostgreSQL server"
        )
    return url


# Connections older than this are replaced at checkout (servers and proxies drop idle ones).
POOL_RECYCLE_SECONDS = 1800
# Connections a service's pool may hold, all kept once opened. With 10 kept and 10 more
# "overflow" ones (SQLAlchemy's default split), an 11th concurrent request in a service
# opened a connection and closed it on return: under 16 concurrent chain requests 7-10 % of
# order- and audit-service's CPU was connecting and closing (and PostgreSQL forked a backend
# for each). The ceiling stays 20 per service (4 services and the worker's 15 fit in
# PostgreSQL's default max_connections of 100).
POOL_SIZE = 20
# How often the server checks that a running statement's client is still connected.
CLIENT_CHECK_MS = 250
# psycopg's interval for checking Ctrl-C while it waits (its default).
_WAIT_INTERVAL = 0.1


class DeadlineMissedError(psycopg.OperationalError):
    """A wait for the server was cut by a deadline and its connection closed: that one
    connection is lost, not the server (see :func:`_discard_only_the_cut_connection`)."""


def _missed(conn: psycopg.BaseConnection[TupleRow], deadline: float) -> DeadlineMissedError:
    """Close a connection whose server missed the deadline (a statement may still be in
    flight on it) and say so; SQLAlchemy sees a closed connection and discards it."""
    conn.pgconn.finish()
    return DeadlineMissedError(f"PostgreSQL did not answer within {_which(deadline)}")


def _which(deadline: float) -> str:
    if request_deadline.expired():
        return "the request's deadline"
    return f"{deadline:g} s (client-side deadline)"


class _Budget:
    """Seconds a connection may still wait for its server in the current checkout."""

    deadline: float = 0.0  # set on each class built below
    budget: float | None = None  # None: a full deadline (a connection made outside a pool)
    fresh: bool = False  # just connected: the connect spent part of the first checkout's budget

    def _limit(self, timeout: float | None) -> float:
        left = self.deadline if self.budget is None else max(0.0, self.budget)
        left = request_deadline.capped(left)
        return left if timeout is None else min(timeout, left)

    def _spend(self, started: float) -> None:
        self.budget = (self.deadline if self.budget is None else self.budget) - (
            time.monotonic() - started
        )


@functools.cache
def _async_connection_class(deadline: float) -> type[psycopg.AsyncConnection[TupleRow]]:
    class DeadlineAsyncConnection(_Budget, psycopg.AsyncConnection[TupleRow]):
        async def wait(
            self, gen: PQGen[RV], interval: float = _WAIT_INTERVAL, timeout: float | None = None
        ) -> RV:
            started = time.monotonic()
            try:
                return await super().wait(gen, interval, self._limit(timeout))
            except pg_errors._WaitTimeout:  # psycopg's own "timeout expired" signal
                raise _missed(self, deadline) from None
            finally:
                self._spend(started)

        @classmethod
        async def connect(cls, *args: Any, **kwargs: Any) -> DeadlineAsyncConnection:
            # libpq's connect_timeout cannot go below 2 s; this one can.
            started = time.monotonic()
            try:
                async with asyncio.timeout(min(deadline, request_deadline.remaining())):
                    conn = await super().connect(*args, **kwargs)
            except TimeoutError:
                raise psycopg.OperationalError(
                    f"could not connect to PostgreSQL within {_which(deadline)}"
                ) from None
            conn.fresh = True
            conn._spend(started)
            return conn

    DeadlineAsyncConnection.deadline = deadline
    return DeadlineAsyncConnection


@functools.cache
def _connection_class(deadline: float) -> type[psycopg.Connection[TupleRow]]:
    class DeadlineConnection(_Budget, psycopg.Connection[TupleRow]):
        def wait(
            self, gen: PQGen[RV], interval: float = _WAIT_INTERVAL, timeout: float | None = None
        ) -> RV:
            started = time.monotonic()
            try:
                return super().wait(gen, interval, self._limit(timeout))
            except pg_errors._WaitTimeout:
                raise _missed(self, deadline) from None
            finally:
                self._spend(started)

    DeadlineConnection.deadline = deadline
    return DeadlineConnection


class _DeadlinePool(AsyncAdaptedQueuePool):
    """The services' pool: waiting for a pooled connection ends with the request's deadline
    too (read where the pool reads its timeout, in the request's context)."""

    @property
    def _timeout(self) -> float:
        return request_deadline.capped(self._configured_timeout)

    @_timeout.setter
    def _timeout(self, value: float) -> None:
        self._configured_timeout = value


def _budget_per_checkout(sync_engine: Engine) -> None:
    """Each checkout starts with a full budget; a new connection's first checkout keeps what
    its connect left."""

    @event.listens_for(sync_engine, "checkout")
    def _refill(
        dbapi_connection: DBAPIConnection,
        record: ConnectionPoolEntry,
        proxy: PoolProxiedConnection,
    ) -> None:
        conn = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        if isinstance(conn, _Budget):
            if conn.fresh:
                conn.fresh = False
            else:
                conn.budget = conn.deadline


def _discard_only_the_cut_connection(sync_engine: Engine) -> None:
    """A wait cut by a deadline closed its own connection, which SQLAlchemy takes as a
    disconnect: by default it then invalidates the whole pool (every connection made
    before that moment reconnects at its next checkout), as after a server restart. Here
    the server is fine (or merely slow): only the cut connection is dropped, and the rest of
    the pool stays warm, so a request cut by its deadline does not make the next ten pay a
    connect each (tests/faults/test_db_deadline.py)."""

    @event.listens_for(sync_engine, "handle_error")
    def _keep_the_pool(context: ExceptionContext) -> None:
        if isinstance(context.original_exception, DeadlineMissedError):
            context.invalidate_pool_on_disconnect = False


def _connect_args(settings: Settings) -> dict[str, str | int]:
    deadline = settings.dependency_timeout_seconds
    statement_ms = max(100, int(deadline * 800))  # the server cancels first, cleanly
    return {
        "connect_timeout": max(2, round(deadline)),  # libpq's minimum; see the classes above
        # A statement whose client gave up (a deadline closed its connection) is stopped by
        # the server within a check interval, not left to run, or to write, until its
        # statement_timeout.
        "options": f"-c statement_timeout={statement_ms} "
        f"-c client_connection_check_interval={CLIENT_CHECK_MS}",
    }


def _observe(sync_engine: Engine, telemetry: Telemetry) -> None:
    if telemetry.enabled:
        instrument_engine(
            sync_engine,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
        )

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _start(conn: Connection, *_: object) -> None:
        conn.info.setdefault("query_start", []).append(time.perf_counter())

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _stop(conn: Connection, _cursor: DBAPICursor, statement: str, *_: object) -> None:
        elapsed = time.perf_counter() - conn.info["query_start"].pop()
        operation = statement.lstrip().split(None, 1)[0].upper() if statement else "UNKNOWN"
        prom.DB_OPERATION.labels(operation).observe(elapsed)


def _isolation(autocommit: bool) -> dict[str, str | bool]:
    """An autocommit engine's options: connections made autocommit once, when they connect,
    and no ``rollback()`` when a connection is closed or returned to the pool.

    SQLAlchemy ends every use of a connection with the DBAPI's ``rollback()`` even in
    autocommit mode, where psycopg has nothing to roll back: for the async engine one more
    greenlet switch and the connection's lock, 20-80 us of CPU per checkout (connect, one
    statement, close, 2,000 times against the embedded PostgreSQL, three rounds:
    427-482 us -> 396-444 us). ``skip_autocommit_rollback`` skips it only on a connection
    that psycopg reports as autocommit.
    """
    if not autocommit:
        return {}
    return {"isolation_level": "AUTOCOMMIT", "skip_autocommit_rollback": True}


def create_engine(
    settings: Settings,
    telemetry: Telemetry,
    *,
    autocommit: bool = False,
) -> AsyncEngine:
    """The async engine the HTTP services use, traced to ``telemetry``'s providers.

    ``autocommit``: its connections are made autocommit once, when they connect. An engine
    that only gets the option per use (``execution_options(isolation_level=...)``) sets it
    at every checkout and resets it at every return, two more waits on the connection:
    180-240 us of CPU per checkout (docs/performance.md).
    """
    deadline = settings.dependency_timeout_seconds
    engine = create_async_engine(
        database_url(settings),
        **_isolation(autocommit),
        pool_size=POOL_SIZE,
        max_overflow=0,
        pool_recycle=POOL_RECYCLE_SECONDS,
        pool_timeout=deadline,
        poolclass=_DeadlinePool,
        connect_args={
            **_connect_args(settings),
            "async_creator_fn": _async_connection_class(deadline).connect,
        },
    )
    _budget_per_checkout(engine.sync_engine)
    _discard_only_the_cut_connection(engine.sync_engine)
    _observe(engine.sync_engine, telemetry)
    return engine


def create_blocking_engine(
    settings: Settings,
    telemetry: Telemetry,
    *,
    autocommit: bool = False,
) -> Engine:
    """The synchronous engine the Celery worker uses (its tasks are plain functions);
    ``autocommit`` and ``telemetry`` as for :func:`create_engine`."""
    deadline = settings.dependency_timeout_seconds
    engine = create_sync_engine(
        database_url(settings),
        **_isolation(autocommit),
        pool_size=5,
        pool_recycle=POOL_RECYCLE_SECONDS,
        pool_timeout=deadline,
        connect_args=_connect_args(settings),
    )

    @event.listens_for(engine, "do_connect")
    def _connect(
        dialect: Dialect,
        conn_rec: ConnectionPoolEntry,
        cargs: list[str],
        cparams: dict[str, Any],
    ) -> psycopg.Connection[TupleRow]:
        return _connection_class(deadline).connect(*cargs, **cparams)

    _budget_per_checkout(engine)
    _discard_only_the_cut_connection(engine)
    _observe(engine, telemetry)
    return engine


# Connections a service opens before it reports ready: the background traffic and a first
# user come one or two at a time; more connect on demand.
WARM_CONNECTIONS = 2
# How long a starting service waits for PostgreSQL to accept them (`otel-lab up` starts
# PostgreSQL side by side with the services); past it, the service starts cold.
WARM_UP_SECONDS = 15.0
_WARM_RETRY_SECONDS = 0.1


async def warm_up(
    engine: AsyncEngine, connections: int = WARM_CONNECTIONS, within: float = WARM_UP_SECONDS
) -> bool:
    """Open ``connections`` pooled connections and keep them in the pool (no statement: no
    span, nothing in the metrics);
    False if PostgreSQL did not take them within ``within`` s (the service starts cold).

    A service's first requests otherwise paid for the connect (a server process forked,
    authentication, SQLAlchemy's first-connect queries of the server's settings) inside
    their 1.8 s deadline, on each hop of the chain: on a loaded host the first chains after
    start-up answered 504. Called before the app serves, so "ready" means "can serve within
    its budget" (docs/reliability.md)."""
    started = time.monotonic()
    give_up = started + within
    while True:
        try:
            async with AsyncExitStack() as held:
                for _ in range(connections):  # checked out: connected, not traced
                    await held.enter_async_context(engine.connect())
            elapsed_ms = round((time.monotonic() - started) * 1000)
            logger.info(
                "database_warmed", extra={"connections": connections, "elapsed_ms": elapsed_ms}
            )
            return True
        except (DBAPIError, PoolTimeoutError, OSError) as exc:
            if time.monotonic() >= give_up:
                logger.warning("database_warm_up_failed", extra={"error": str(exc)[:200]})
                return False
            await asyncio.sleep(_WARM_RETRY_SECONDS)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


# -- hot statements on the driver ---------------------------------------------------------


@functools.cache
def _row_maker(names: tuple[str, ...]) -> Callable[[Iterable[Any]], tuple[Any, ...]]:
    """A named tuple per result shape, with ``_mapping`` as SQLAlchemy's rows have it."""
    base = namedtuple("Row", names, rename=True)  # type: ignore[misc]

    class Row(base):
        __slots__ = ()

        @property
        def _mapping(self) -> dict[str, Any]:
            return dict(zip(names, self, strict=True))

    make: Callable[[Iterable[Any]], tuple[Any, ...]] = Row._make
    return make


# A row of an untyped statement (a bare ``Executable``): a named tuple (attribute access,
# ``_mapping``) whose columns mypy does not know; a :class:`Statement` gives typed rows.
Row: TypeAlias = Any


R = TypeVar("R", bound=NamedTuple)


class Statement(Generic[R]):
    """A hot statement (built once, at import) and the ``typing.NamedTuple`` its rows are
    made as, so mypy checks the columns its callers read; at its first run the tuple's
    fields must be the statement's columns, in order (else ``TypeError``)."""

    __slots__ = ("executable", "row")

    def __init__(self, executable: Executable, row: type[R]) -> None:
        self.executable = executable
        self.row = row


class Count(NamedTuple):
    """The row of a ``select(func.count().label("total"))``."""

    total: int


class Rows(list[R]):
    """A statement's rows, with the few ``Result`` methods the repositories use."""

    def first(self) -> R | None:
        return self[0] if self else None

    def one(self) -> R:
        if len(self) != 1:
            raise RuntimeError(f"expected one row, got {len(self)}")
        return self[0]


class _Compiled:
    """A statement compiled once for psycopg: its SQL, its parameters' bind processors (a
    JSONB parameter is serialised by SQLAlchemy's), its columns' constant defaults, and
    what makes its rows (found at its first run: the same SQL always has the same columns)."""

    def __init__(self, statement: Statement[Any] | Executable, dialect: Dialect) -> None:
        self.row: type[NamedTuple] | None = None
        if isinstance(statement, Statement):
            self.row = statement.row
            statement = statement.executable
        self.make: Callable[[Iterable[Any]], Any] | None = None
        compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        if compiled.positional:
            raise ValueError("only named parameters")
        self.sql: str = str(compiled)
        self.processors: Mapping[str, Callable[[Any], Any]] = dict(compiled._bind_processors)
        # Columns' Python-side defaults (``default="pending"``), which SQLAlchemy's execution
        # context would fill in: only constants here.
        self.defaults: dict[str, Any] = {}
        for column in (*compiled.insert_prefetch, *compiled.update_prefetch):
            if column.default is None or not column.default.is_scalar:
                raise ValueError(f"{column.key}: only constant defaults")
            self.defaults[column.key] = column.default.arg

    def parameters(self, params: Mapping[str, Any]) -> dict[str, Any]:
        bound = {**self.defaults, **params}
        for name, process in self.processors.items():
            if name in bound:
                bound[name] = process(bound[name])
        return bound

    def rows(
        self, description: Sequence[psycopg.Column] | None, fetched: Iterable[Any]
    ) -> Rows[Any]:
        if description is None:
            return Rows()
        if self.make is None:
            self.make = self._maker(tuple(column.name for column in description))
        return Rows(map(self.make, fetched))

    def _maker(self, names: tuple[str, ...]) -> Callable[[Iterable[Any]], Any]:
        if self.row is None:
            return _row_maker(names)
        if self.row._fields != names:
            raise TypeError(
                f"{self.row.__name__}'s fields {self.row._fields} are not the columns {names}"
            )
        return self.row._make


Params: TypeAlias = Mapping[str, Any] | None


class _Context:
    """What SQLAlchemy's cursor and error events are given as the execution context: the
    database span lives on it from ``before_cursor_execute`` to ``after_cursor_execute``."""

    executemany = False

    def handle_dbapi_exception(self, e: BaseException) -> None:
        pass


_compiled: dict[int, tuple[Statement[Any] | Executable, _Compiled]] = {}
# The services pass a handful of statements built at import. One built per call would be
# compiled each time, and would otherwise keep every such statement alive here.
_MAX_COMPILED = 256


def _compile(statement: Statement[Any] | Executable, dialect: Dialect) -> _Compiled:
    found = _compiled.get(id(statement))
    if found is None or found[0] is not statement:
        if len(_compiled) >= _MAX_COMPILED:
            _compiled.clear()
        found = _compiled[id(statement)] = (statement, _Compiled(statement, dialect))
    return found[1]


class _Run:
    """One run of a hot statement on a checked-out connection: its SQL and parameters, and
    the engine's cursor listeners around it."""

    def __init__(
        self, sync: Connection, statement: Statement[Any] | Executable, params: Params
    ) -> None:
        self.compiled = compiled = _compile(statement, sync.dialect)
        self.sync = sync
        self.sql, self.parameters = compiled.sql, compiled.parameters(params or {})
        self.context = _Context()
        self.events = sync._has_events or sync.engine._has_events

    def before(self, cursor: object) -> None:
        if self.events:
            self.sync.dispatch.before_cursor_execute(
                self.sync, cursor, self.sql, self.parameters, self.context, False
            )

    def after(self, cursor: object) -> None:
        if self.events:
            self.sync.dispatch.after_cursor_execute(
                self.sync, cursor, self.sql, self.parameters, self.context, False
            )

    def failed(self, exc: BaseException) -> NoReturn:
        """SQLAlchemy's handling of a failed statement, as for its own: raises."""
        self.sync._handle_dbapi_exception(
            exc,
            self.sql,
            self.parameters,
            None,
            self.context,  # type: ignore[arg-type]  # what it reads of one: see _Context
        )
        raise AssertionError("unreachable")  # pragma: no cover


@overload
async def execute(
    connection: AsyncConnection, statement: Statement[R], params: Params = None
) -> Rows[R]: ...
@overload
async def execute(
    connection: AsyncConnection, statement: Executable, params: Params = None
) -> Rows[Row]: ...
async def execute(
    connection: AsyncConnection, statement: Statement[Any] | Executable, params: Params = None
) -> Rows[Any]:
    """Run a hot statement (built once, at import) on ``connection``'s psycopg connection
    directly, without SQLAlchemy's execution path; its rows as named tuples (a
    :class:`Statement`'s as its row type).

    SQLAlchemy's async execution (an execution context, a greenlet switch per driver call,
    its cursor adapter and result) cost 100-150 us of CPU per statement over psycopg's own
    30-70 us (docs/performance.md). What the statement must keep is kept: it runs on the
    connection SQLAlchemy checked out (the pool, the deadline budget of this checkout,
    ``statement_timeout``), with the SQL SQLAlchemy would have sent; the engine's
    ``before_cursor_execute``/``after_cursor_execute`` listeners run around it (the
    database span, ``db_operation_seconds``), and a failure goes through SQLAlchemy's own
    error handling (``handle_error`` listeners, the connection or pool invalidated on a
    disconnect, the error raised as SQLAlchemy's ``OperationalError``, ``DataError``, ...).

    Only for statements whose results need no SQLAlchemy type processing (psycopg's own
    types: integers, text, booleans, timestamps, JSON).
    """
    sync = connection.sync_connection
    if sync is None:
        raise RuntimeError("connection not started")
    raw = sync._dbapi_connection or await connection.get_raw_connection()
    run = _Run(sync, statement, params)
    driver: psycopg.AsyncConnection[TupleRow] = raw.driver_connection  # type: ignore[assignment]
    cursor = driver.cursor()
    run.before(cursor)
    try:
        await cursor.execute(run.sql, run.parameters)
        description = cursor.description  # psycopg builds it anew at every read
        rows = run.compiled.rows(description, await cursor.fetchall() if description else ())
    except BaseException as exc:
        await greenlet_spawn(run.failed, exc)  # closing a connection awaits the driver
    run.after(cursor)
    return rows


@overload
def execute_blocking(
    connection: Connection, statement: Statement[R], params: Params = None
) -> Rows[R]: ...
@overload
def execute_blocking(
    connection: Connection, statement: Executable, params: Params = None
) -> Rows[Row]: ...
def execute_blocking(
    connection: Connection, statement: Statement[Any] | Executable, params: Params = None
) -> Rows[Any]:
    """:func:`execute` for a synchronous engine's connection (the worker's): two statements
    through SQLAlchemy 170 us of CPU, straight on psycopg 64 us."""
    raw = connection.connection
    run = _Run(connection, statement, params)
    driver: psycopg.Connection[TupleRow] = raw.driver_connection  # type: ignore[assignment]
    cursor = driver.cursor()
    run.before(cursor)
    try:
        cursor.execute(run.sql, run.parameters)
        description = cursor.description
        rows = run.compiled.rows(description, cursor.fetchall() if description else ())
    except BaseException as exc:
        run.failed(exc)
    run.after(cursor)
    return rows
