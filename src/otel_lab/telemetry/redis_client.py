"""Redis/Valkey client spans: the spans ``opentelemetry-instrumentation-redis`` makes for a
client's commands, with its attributes worked out once per client and command shape.

The contrib's ``instrument_client`` reads the connection's settings again, formats the
statement and sets each attribute with its own call (a lock and a validation each) on every
command, inside ``start_as_current_span``: about 16 us per command above a span with the
same attributes started by hand (``scripts/bench_instrumentation.py``), on every cache read
of the api. Here a client's connection attributes and each (command, argument count)'s
statement are computed once (the contrib's own helpers, so the attributes follow
``OTEL_SEMCONV_STABILITY_OPT_IN`` as its do) and the span is started with all of them.
``tests/telemetry/test_redis_client.py`` compares the spans with the contrib's for the same
commands, failures included. Commands only: the services run no pipelines (the contrib
traces those too).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio
from opentelemetry import trace
from opentelemetry.instrumentation._semconv import (
    _get_schema_url_for_signal_types,
    _get_semconv_opt_in_modes,
    _OpenTelemetrySemanticConventionStability,
    _OpenTelemetryStabilitySignalType,
    _set_db_statement,
)
from opentelemetry.instrumentation.redis.util import (
    _build_span_name,
    _extract_conn_attributes,
    _format_command_args,
)
from opentelemetry.instrumentation.redis.version import __version__
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import SpanKind, Status, StatusCode

# The contrib's scope, so a span says the same whichever made it.
SCOPE = "opentelemetry.instrumentation.redis"
_Client = redis.Redis | redis.asyncio.Redis


_SIGNALS = (_OpenTelemetryStabilitySignalType.DATABASE, _OpenTelemetryStabilitySignalType.HTTP)


def instrument_client(client: _Client, tracer_provider: trace.TracerProvider | None = None) -> None:
    """Trace each command ``client`` sends (sync or asyncio client), as the contrib's
    ``RedisInstrumentor.instrument_client`` does."""
    _OpenTelemetrySemanticConventionStability._initialize()
    modes = _get_semconv_opt_in_modes(_SIGNALS)
    db_mode, http_mode = modes[_SIGNALS[0]], modes[_SIGNALS[1]]
    tracer = trace.get_tracer(
        SCOPE,
        __version__,
        tracer_provider=tracer_provider,
        schema_url=_get_schema_url_for_signal_types(list(_SIGNALS)),
    )
    connection = _extract_conn_attributes(
        client.connection_pool.connection_kwargs, db_mode, http_mode
    )

    @functools.lru_cache(maxsize=256)
    def attributes(command: Any, count: int) -> dict[str, Any]:
        statement: dict[str, Any] = {}
        _set_db_statement(
            statement, _format_command_args([command] + [None] * (count - 1)), db_mode
        )
        return {**statement, "db.redis.args_length": count, **connection}

    def start(args: tuple[Any, ...]) -> trace.Span:
        command = args[0] if args else None
        return tracer.start_span(
            _build_span_name(client, args),
            kind=SpanKind.CLIENT,
            attributes=attributes(command, len(args)),
        )

    def failed(span: trace.Span, error: BaseException) -> None:
        # What ``use_span`` records for an exception leaving the contrib's span.
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))

    original = client.execute_command
    if isinstance(client, redis.asyncio.Redis):
        call: Callable[..., Awaitable[Any]] = original

        async def execute_async(*args: Any, **options: Any) -> Any:
            if not is_instrumentation_enabled():
                return await call(*args, **options)
            span = start(args)
            try:
                return await call(*args, **options)
            except BaseException as error:
                failed(span, error)
                raise
            finally:
                span.end()

        client.execute_command = execute_async  # type: ignore[method-assign]
        return

    def execute(*args: Any, **options: Any) -> Any:
        if not is_instrumentation_enabled():
            return original(*args, **options)
        span = start(args)
        try:
            return original(*args, **options)
        except BaseException as error:
            failed(span, error)
            raise
        finally:
            span.end()

    client.execute_command = execute  # type: ignore[method-assign]
