"""The api's publish (``queue.TaskPublisher``) against Celery's own: a real Valkey, the same
message on the broker's list, the same publish signals (the instrumentation's PRODUCER span,
the trace context and the ``request_id`` header come from them), and a worker-side decode."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.signals import after_task_publish, before_task_publish
from kombu import Connection, Consumer, Message
from opentelemetry.trace import SpanKind

from otel_lab.items import ITEM_ENRICHMENT
from otel_lab.queue import (
    DEFAULT_QUEUE,
    BrokerTransport,
    create_celery_app,
    create_task_publisher,
)
from otel_lab.runtime.embedded import EmbeddedValkey, embedded_valkey
from otel_lab.settings import Settings
from otel_lab.telemetry import Telemetry
from otel_lab.telemetry.celery import instrument_celery
from otel_lab.telemetry.context import request_id_var
from tests.inprocess.conftest import Recorded, recording

# What differs from one publish to the next: the task's id (and what repeats it), the
# delivery tag, the reply address Celery derives from the app and the thread, and the
# trace context of the publish's own PRODUCER span.
IDS = {("headers", "id"), ("headers", "root_id"), ("headers", "traceparent"),
       ("properties", "correlation_id"), ("properties", "delivery_tag"),
       ("properties", "reply_to")}  # fmt: skip


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    """Celery's instrumentation on in-memory telemetry, whatever an earlier test left."""
    recorded = recording()
    instrument_celery(recorded.telemetry)
    yield recorded
    instrument_celery(Telemetry(enabled=False))


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    with embedded_valkey(tmp_path) as server:
        yield server


def _without_ids(message: dict[str, Any]) -> dict[str, Any]:
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in message.items()}
    for part, key in IDS:
        assert isinstance(out[part][key], str) and out[part][key], (part, key)
        out[part][key] = "<id>"
    return out


def _noop(item_id: int) -> None:
    del item_id


def _register(app: Celery) -> Celery:
    app.task(name=ITEM_ENRICHMENT, shared=False, serializer="json", ignore_result=True)(_noop)
    assert app.tasks[ITEM_ENRICHMENT]._get_exec_options()["serializer"] == "json"  # finalized
    return app


def _app(settings: Settings, registered: bool) -> Celery:
    app = create_celery_app(settings)
    return _register(app) if registered else app


@pytest.mark.parametrize("registered", [False, True], ids=["the api", "task registered"])
def test_the_publisher_sends_celery_s_own_message(
    valkey: EmbeddedValkey, recorded: Recorded, registered: bool
) -> None:
    """In the api the task is a name only; a process that has it registered (a test that
    imported the worker's tasks) gets its execution options merged by ``send_task``."""
    settings = Settings.model_validate({"REDIS_URL": valkey.url})
    broker = redis.Redis.from_url(valkey.url)
    signals: list[tuple[str, dict[str, Any]]] = []

    def record(signal: Any, **kwargs: Any) -> None:
        signals.append((signal.name, kwargs))

    before_task_publish.connect(record, weak=False, dispatch_uid="test-queue-before")
    after_task_publish.connect(record, weak=False, dispatch_uid="test-queue-after")
    token = request_id_var.set("rid-publish")
    try:
        _app(settings, registered).send_task(ITEM_ENRICHMENT, args=[7], retry=True)
        (theirs,) = broker.lrange(DEFAULT_QUEUE, 0, -1)
        broker.delete(DEFAULT_QUEUE)
        their_signals = signals[:]
        signals.clear()

        async def publish() -> None:
            publisher = create_task_publisher(settings)
            if registered:
                _register(publisher.app)
            try:
                await publisher.send_task(ITEM_ENRICHMENT, [7])
            finally:
                await publisher.aclose()

        asyncio.run(publish())
        (ours,) = broker.lrange(DEFAULT_QUEUE, 0, -1)
    finally:
        request_id_var.reset(token)
        before_task_publish.disconnect(dispatch_uid="test-queue-before")
        after_task_publish.disconnect(dispatch_uid="test-queue-after")

    # The same JSON, key for key and in kombu's order, but for the ids.
    their_message, our_message = json.loads(theirs), json.loads(ours)
    assert our_message["headers"]["request_id"] == "rid-publish"
    assert _without_ids(our_message) == _without_ids(their_message)
    assert json.dumps(_without_ids(our_message)) == json.dumps(_without_ids(their_message))
    assert our_message["properties"]["correlation_id"] == our_message["headers"]["id"]

    # Each message carries its own publish's PRODUCER span, and the two spans match but
    # for the task's id.
    theirs_span, ours_span = recorded.spans.get_finished_spans()
    for span, message in ((theirs_span, their_message), (ours_span, our_message)):
        assert (span.name, span.kind) == ("apply_async/item_enrichment", SpanKind.PRODUCER)
        context = span.get_span_context()
        trace_id, span_id = message["headers"]["traceparent"].split("-")[1:3]
        assert (int(trace_id, 16), int(span_id, 16)) == (context.trace_id, context.span_id)
    ours_attributes, theirs_attributes = (
        dict(ours_span.attributes or {}),
        dict(theirs_span.attributes or {}),
    )
    assert ours_attributes.pop("messaging.message.id") == our_message["headers"]["id"]
    assert theirs_attributes.pop("messaging.message.id") == their_message["headers"]["id"]
    assert ours_attributes == theirs_attributes

    # The same signals, in the same order, with the same arguments (the message's own ids).
    assert (
        [name for name, _ in our_signals(signals)]
        == [name for name, _ in our_signals(their_signals)]
        == ["before_task_publish", "after_task_publish"]
    )
    for (_, ours_sent), (_, theirs_sent) in zip(signals, their_signals, strict=True):
        assert ours_sent.keys() == theirs_sent.keys()
        for key in ours_sent.keys() - {"headers", "properties"}:
            assert repr(ours_sent[key]) == repr(theirs_sent[key]), key
        assert ours_sent["headers"]["id"] == our_message["headers"]["id"]
        for part in {"headers", "properties"} & ours_sent.keys():
            ids = {key for where, key in IDS if where == part}
            assert {k: v for k, v in ours_sent[part].items() if k not in ids} == {
                k: v for k, v in theirs_sent[part].items() if k not in ids
            }, part

    # And the worker's side reads it as Celery's: kombu's transport, the task and its args.
    with Connection(valkey.url, transport=BrokerTransport) as connection:
        got: list[Message] = []
        queue = create_celery_app(settings).amqp.default_queue
        callbacks = [lambda _body, message: got.append(message)]
        with Consumer(connection.default_channel, [queue], callbacks=callbacks, accept=["json"]):
            connection.drain_events(timeout=5)
        (message,) = got
        assert message.headers["task"] == ITEM_ENRICHMENT
        assert message.payload[0] == [7]
        message.ack()


def our_signals(signals: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, kwargs) for name, kwargs in signals if kwargs.get("sender") == ITEM_ENRICHMENT]
