"""What every router of the console shares: the JSON response, the dependencies, the typed
query parameters and the one place that words a bad parameter as a 400.

Parameters are declared with their types and ranges (so ``/api/openapi.json`` carries
them); an empty value (``?limit=``) means the default, as the UI's forms send it.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import annotated_types
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BeforeValidator, WithJsonSchema
from pydantic_core import PydanticUseDefault
from starlette.exceptions import HTTPException as StarletteHTTPException

from otel_lab.console import analytics, queries, sqlconsole
from otel_lab.console.otlp import dumps
from otel_lab.console.promapi import PromState
from otel_lab.console.queries import QueryError
from otel_lab.console.security import Security
from otel_lab.console.store import MINUTE_NS, Store
from otel_lab.routing import allowed_methods

log = logging.getLogger("otel_lab.console.api")
T = TypeVar("T")


class ConsoleJSON(JSONResponse):
    """Compact JSON that tolerates NaN/Infinity in stored data instead of failing."""

    def render(self, content: object) -> bytes:
        return dumps(content).encode()


def error(status: int, detail: str) -> ConsoleJSON:
    return ConsoleJSON({"detail": detail}, status_code=status)


@dataclass(frozen=True)
class ApiOptions:
    """Settings the UI port needs besides the store."""

    otlp_url: str | None = None
    security: Security = field(default_factory=Security)
    sql_timeout: float = sqlconsole.DEFAULT_TIMEOUT_SECONDS
    sql_max_rows: int = sqlconsole.DEFAULT_MAX_ROWS
    prom: PromState | None = None  # the scraper and the alert rules, when running
    flags_file: Path | None = None  # the fault flags the Scenarios page switches (None: none)


# --------------------------------------------------------------------------- dependencies
# ``async`` so that resolving them does not take a trip through the thread pool.


async def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def _options(request: Request) -> ApiOptions:
    options: ApiOptions = request.app.state.options
    return options


async def _prom(request: Request) -> PromState:
    options: ApiOptions = request.app.state.options
    return options.prom or PromState()  # create_app fills it in


StoreDep = Annotated[Store, Depends(_store)]
OptionsDep = Annotated[ApiOptions, Depends(_options)]
PromDep = Annotated[PromState, Depends(_prom)]


# --------------------------------------------------------------------------- parameters


def _blank(value: T) -> T:
    """An empty parameter is an absent one."""
    if isinstance(value, str) and not value.strip():
        raise PydanticUseDefault()
    return value


def _lower(value: object) -> object:
    return _blank(value).strip().lower() if isinstance(value, str) else value


# Query and path parameters arrive as text.
def _time(name: str, value: str | None) -> int | None:
    return queries.parse_time(_blank(value), name)


def _severity(value: str | None) -> int | None:
    return queries.parse_severity(_blank(value))


def _trace_id(value: object) -> bytes:
    return queries.parse_trace_id(str(value))


def _span_id(value: object) -> bytes:
    return queries.parse_span_id(str(value))


def _window(value: str) -> float | Literal["all"]:
    text = _blank(value).strip()
    return "all" if text == "all" else queries.parse_duration_seconds(text, "window")


def attr_filters(values: list[str]) -> list[queries.AttrFilter]:
    """``attr=key=value`` parameters (already checked by ``Attrs``) as filters."""
    return [queries.parse_attr(v) for v in values if v]


def _check_attrs(values: list[str]) -> list[str]:
    attr_filters(values)
    return values


Blank = BeforeValidator(_blank)
_NS = WithJsonSchema({"type": "string", "description": "unix nanoseconds or ISO 8601"})
_HEX = WithJsonSchema({"type": "string", "pattern": "^[0-9a-fA-F]+$"})

Text = Annotated[str | None, Blank]
Since = Annotated[int | None, BeforeValidator(partial(_time, "since")), _NS]
Until = Annotated[int | None, BeforeValidator(partial(_time, "until")), _NS]
Window = Annotated[
    float | Literal["all"] | None,
    BeforeValidator(_window),
    WithJsonSchema({"type": "string", "description": "15m, 1h, 24h, 7d ... or all"}),
]
Status = Annotated[Literal["error", "ok", "unset"] | None, BeforeValidator(_lower)]
Severity = Annotated[
    int | None,
    BeforeValidator(_severity),
    WithJsonSchema(
        {"type": "string", "description": "TRACE, DEBUG, INFO, WARN, ERROR, FATAL or 1-24"}
    ),
]
TraceId = Annotated[bytes, BeforeValidator(_trace_id), _HEX]
SpanId = Annotated[bytes, BeforeValidator(_span_id), _HEX]
# Query parameters: absent when empty. (A path parameter has no default to fall back to.)
TraceIdParam = Annotated[bytes | None, BeforeValidator(_trace_id), Blank, _HEX]
SpanIdParam = Annotated[bytes | None, BeforeValidator(_span_id), Blank, _HEX]
Signal = Annotated[Literal["spans", "logs", "metrics"], BeforeValidator(_lower)]
# A filter is a condition in the SQL, a group_by key a label of every series: past a few
# dozen, SQLite refuses the expression (more than 1,000 deep: was a 500) and grouping turns
# quadratic (3,000 keys held a request for minutes).
MAX_ATTRS = 50
Attrs = Annotated[
    list[str],
    Query(description="key=value", max_length=MAX_ATTRS),
    AfterValidator(_check_attrs),
]
GroupBy = Annotated[list[str], Query(max_length=MAX_ATTRS)]
Milliseconds = Annotated[float | None, Query(ge=0, le=queries.INT64_MAX / 1_000_000), Blank]


def ms_to_ns(ms: float | None) -> int | None:
    """Nanoseconds, at most int64's (the largest float ``Milliseconds`` allows rounds to
    2^63 ns, one past what SQLite takes)."""
    return min(round(ms * 1_000_000), queries.INT64_MAX) if ms is not None else None


def oldest_ns(conn: sqlite3.Connection, table: str) -> int | None:
    column = {"traces": "start_ns", "logs": "time_ns", "metric_points": "time_ns"}[table]
    first: int | None = conn.execute(f"SELECT min({column}) FROM {table}").fetchone()[0]
    return first


def time_window(
    since: int | None,
    until: int | None,
    window: float | Literal["all"] | None,
    oldest: Callable[[], int | None],
    default_seconds: float = 3600,
) -> analytics.Window:
    """since/until, or window=15m|1h|...|all (up to ``until`` or now)."""
    if window is not None and since is None:
        end = until if until is not None else time.time_ns()
        if window == "all":
            first = oldest()
            return analytics.Window(min(first, end) if first is not None else end - MINUTE_NS, end)
        # A window longer than the epoch starts at the epoch (and stays an int64).
        return analytics.Window(end - int(min(window, end / 1e9) * 1e9), end)
    return analytics.window(since, until, default_seconds)


# --------------------------------------------------------------------------- errors


def _bounds(request: Request, name: str) -> tuple[object, object]:
    """The range a query parameter of the matched route declares."""
    route = request.scope.get("route")
    for param in getattr(getattr(route, "dependant", None), "query_params", ()):
        if param.alias == name:
            lo = hi = None
            for m in param.field_info.metadata:
                if isinstance(m, annotated_types.Ge):
                    lo = m.ge
                elif isinstance(m, annotated_types.Le):
                    hi = m.le
            return lo, hi
    return None, None


def describe(request: Request, problem: Mapping[str, Any]) -> str:
    """One validation problem in the console's words (the UI shows it as it is)."""
    loc: Sequence[str | int] = problem.get("loc", ())
    name = str(loc[-1]) if loc else "request"
    kind = problem.get("type", "")
    given = problem.get("input")
    shown = repr(given[:64]) if isinstance(given, str) else repr(given)
    ctx = problem.get("ctx") or {}
    if kind == "value_error" and isinstance(ctx.get("error"), QueryError):
        return str(ctx["error"])
    if loc and loc[0] == "query":
        if kind in ("greater_than_equal", "less_than_equal"):
            lo, hi = _bounds(request, name)
            if isinstance(lo, float) or isinstance(hi, float):
                return f"{name} must be a number >= {lo:g} (and below {hi:.2g})"
            return f"{name} must be between {lo} and {hi}"
        if kind == "int_parsing":
            return f"{name}={shown} is not an integer"
        if kind == "float_parsing":
            return f"{name}={shown} is not a number"
        if kind == "literal_error":
            return f"{name}={shown}: use {str(ctx.get('expected', '')).replace(chr(39), '')}"
    where = ".".join(str(p) for p in loc)
    return f"{where}: {problem.get('msg', 'invalid')}"


def install_error_handlers(app: FastAPI) -> None:
    """Every error is JSON ``{"detail": ...}``: 400 for a bad parameter, never a 500 for
    bad input; an unexpected failure is logged and answered 500."""

    @app.exception_handler(QueryError)
    async def _bad_query(_: Request, exc: QueryError) -> ConsoleJSON:
        return error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> ConsoleJSON:
        problems = "; ".join(describe(request, e) for e in exc.errors())
        return error(400, problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> ConsoleJSON:
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and (allow := allowed_methods(request.scope)):
            headers["Allow"] = allow
        return ConsoleJSON({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> ConsoleJSON:
        log.exception("unhandled error on %s", request.url.path)
        return error(500, "internal error; see the console's log")
