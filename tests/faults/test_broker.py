"""The Celery broker's client when Valkey hangs while tasks finish: a real Valkey, kombu's real
Redis transport (with ours on top), SIGSTOP for real.

The fault suite met this once in CI: Valkey hung while both of the worker's threads were
finishing a task, both acks timed out, kombu kept the two messages in the prefetch window
(2), and the worker never fetched another task, while the pending sweep kept queueing
more. Nothing was enriched again until the worker was restarted.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue

from otel_lab.queue import BrokerTransport
from otel_lab.runtime.embedded import embedded_valkey
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
