"""The Celery broker's client when Valkey hangs while tasks finish: a real Valkey, kombu's real
Redis transport (with ours on top), SIGSTOP for real.

The fault suite met this once in CI: Valkey hung while both of the worker's threads were
finishing a task, both acks timed out, kombu kept the two messages in the prefetch window
(2), and the worker never fetched another task, while the pending sweep kept queueing
more. Nothing was enriched again until the worker was restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue

from otel_lab.items import ITEM_ENRICHMENT
from otel_lab.queue import DEFAULT_QUEUE, BrokerTransport, create_task_publisher
from otel_lab.runtime.embedded import embedded_valkey
from otel_lab.services import deadline
from otel_lab.services.api import item_service
from otel_lab.services.api.item_service import PUBLISH_DEADLINE_SECONDS
from otel_lab.settings import Settings
from tests.faults.lab import frozen

QUEUE = Queue("acks", Exchange("acks", type="direct"), routing_key="acks")


def drain(connection: Connection, got: list[Message], count: int) -> None:
    """Let the consumer fetch until ``got`` holds ``count`` messages (at most 5 s)."""
    for _ in range(50):
        if len(got) >= count:
            return
        with contextlib.suppress(TimeoutError):
            connection.drain_events(timeout=0.1)
    raise AssertionError(f"{len(got)} messages fetched, wanted {count}")


def test_a_failed_ack_does_not_clog_the_prefetch_window(tmp_path: Path) -> None:
    with (
        embedded_valkey(tmp_path) as valkey,
        Connection(
            valkey.url,
            transport=BrokerTransport,
            transport_options={"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        ) as connection,
    ):
        producer = Producer(connection.default_channel)
        for n in range(4):
            producer.publish({"n": n}, exchange=QUEUE.exchange, routing_key="acks",
                             declare=[QUEUE])  # fmt: skip
        channel = connection.channel()
        channel.basic_qos(0, 2, False)  # the worker's window: 2 threads x prefetch 1
        got: list[Message] = []
        consumer = Consumer(channel, [QUEUE], callbacks=[lambda _body, m: got.append(m)])
        consumer.consume()
        drain(connection, got, 2)
        assert not channel.qos.can_consume()  # the window is full until an ack

        assert valkey.pid is not None
        with frozen(valkey.pid):  # both tasks finish while Valkey is hung
            for message in got:
                with pytest.raises(redis.RedisError):
                    message.ack()

        assert channel.qos.can_consume()  # kombu alone: False, for ever
        drain(connection, got, 4)
        assert sorted(m.payload["n"] for m in got) == [0, 1, 2, 3]


def test_a_publish_to_a_hung_or_down_broker_gives_up_in_time(tmp_path: Path) -> None:
    """``POST /items``' publish on the event loop (``queue.TaskPublisher``): Valkey hung, the
    request's deadline cuts the wait (and the write is answered, the item left pending for
    the sweep); Valkey down, the connection is refused at once, tried once more, and given
    up. Each failure is the broker breaker's; once Valkey is back, a publish goes through on
    a fresh connection."""
    with embedded_valkey(tmp_path) as valkey:
        assert valkey.pid is not None
        settings = Settings.model_validate({"REDIS_URL": valkey.url})
        broker = redis.Redis.from_url(valkey.url)
        breaker = item_service.broker_breaker

        async def scenario() -> None:
            publisher = create_task_publisher(settings)
            try:
                await item_service._enqueue_enrichment(publisher, 1)
                assert broker.llen(DEFAULT_QUEUE) == 1
                failures = breaker._failures
                with frozen(valkey.pid):
                    with deadline.within(0.6):  # less than the publish's own 1.5 s
                        started = time.monotonic()
                        await item_service._enqueue_enrichment(publisher, 2)
                        waited = time.monotonic() - started
                    assert 0.3 < waited < 0.6, waited
                    assert breaker._failures == failures + 1
                    started = time.monotonic()  # without a request's deadline: 1.5 s at most
                    await item_service._enqueue_enrichment(publisher, 3)
                    waited = time.monotonic() - started
                    assert 1.0 < waited < PUBLISH_DEADLINE_SECONDS + 0.3, waited
                    assert breaker._failures == failures + 2
                breaker.record_success()
                await item_service._enqueue_enrichment(publisher, 4)
                queued = broker.lrange(DEFAULT_QUEUE, 0, -1)
                args = [json.loads(message)["headers"]["argsrepr"] for message in queued]
                assert "[4]" in args and "[1]" in args, args

                valkey.stop()
                started = time.monotonic()
                with pytest.raises(redis.ConnectionError):
                    await publisher.send_task(ITEM_ENRICHMENT, [5])
                assert time.monotonic() - started < 0.5
            finally:
                breaker.record_success()
                await publisher.aclose()

        asyncio.run(scenario())
