"""The Celery app as both sides see it: the services publish, the worker consumes.

Publishers use task names (e.g. ``otel_lab.items.ITEM_ENRICHMENT``), not the task functions,
so a service never imports worker code.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Sequence

import redis
import redis.asyncio
from celery import Celery
from kombu.entity import maybe_delivery_mode
from kombu.serialization import dumps as serialize
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual.base import Base64
from kombu.utils.json import dumps as json_dumps
from kombu.utils.uuid import uuid
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff

from otel_lab.cache import redis_url
from otel_lab.settings import Settings
from otel_lab.telemetry.celery import propagate_request_ids

DEFAULT_QUEUE = "celery"
# A broker that is hung (not down: the kernel still takes the bytes) would otherwise hold a
# publish for ever. The consumer's BRPOP (1 s server-side) runs on kombu's event loop,
# which checks the connection's health on its own.
BROKER_SOCKET_TIMEOUT_SECONDS = 1.0


class _QoS(kombu_redis.QoS):
    """Forgets a finished message even when the broker did not hear its ack.

    kombu's Redis QoS removes a message from its prefetch window only after the ack reached
    Valkey. An ack that fails (Valkey hung or restarting while a task finished) left the
    message in the window for good, and once the window (concurrency x prefetch multiplier,
    2 here) was full of them, the worker stopped fetching tasks until it was restarted,
    while the pending sweep kept queueing more. The message itself stays in Valkey's
    unacked set and is delivered again after the visibility timeout: enrichment is
    idempotent, so that costs one extra run.
    """

    def ack(self, delivery_tag: str) -> None:  # the message's uuid
        try:
            kombu_redis.QoS.ack(self, delivery_tag)
        except BaseException:
            self._quick_ack(delivery_tag)
            raise

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        try:
            kombu_redis.QoS.reject(self, delivery_tag, requeue=requeue)
        except BaseException:
            self._quick_ack(delivery_tag)
            raise


class _Channel(kombu_redis.Channel):
    QoS = _QoS
    _sync_client: redis.Redis | None = None

    def _create_client(self, asynchronous: bool = False) -> redis.Redis:
        """One client over the channel's pool, kept for the channel's life.

        kombu built a new ``redis.Redis`` for every command it sent (a publish, an ack),
        which registers its ~170 response callbacks each time: a fifth of the CPU of a
        publish. A client is only a view of the pool (thread-safe, its connections keep
        the socket timeouts), so keeping it changes nothing else.
        """
        if asynchronous:
            fresh: redis.Redis = super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
            return fresh
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:  # a new pool
            client = self._sync_client = super()._create_client()  # type: ignore[no-untyped-call]
        return client


class BrokerTransport(kombu_redis.Transport):
    """kombu's Redis transport, with a prefetch window that a failed ack cannot clog and a
    client kept per channel."""

    Channel = _Channel


def create_celery_app(settings: Settings, *, include: list[str] | None = None) -> Celery:
    """The app both sides use. Its tracing is the caller's: ``instrument_celery(telemetry)``
    with the providers of the service's (or the worker's) telemetry."""
    propagate_request_ids()
    broker = redis_url(settings)
    app = Celery("otel_lab", broker=broker, include=include or [])
    app.conf.update(
        broker_transport=f"{__name__}:BrokerTransport",
        task_default_queue=DEFAULT_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        # A task is acknowledged only once it has run, so a killed worker does not lose it;
        # the broker hands it out again after the visibility timeout.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": 300,
            "socket_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        # A broker outage must not hang the request that publishes: one more try on a fresh
        # connection (a restarted broker), then the caller gives up and the pending sweep
        # (worker.app) queues the task later.
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0},
        worker_hijack_root_logger=False,
        task_ignore_result=True,
    )
    return app


class _Kept:
    """The producer ``Celery.send_task`` is given by :class:`TaskPublisher`: it keeps the
    message it is asked to publish, in the envelope kombu's Redis transport pushes
    (``kombu.Producer.publish``, then the virtual channel's ``prepare_message`` and
    ``basic_publish``), instead of pushing it. Only what the services send: the anonymous
    exchange (a queue's name as routing key), no compression, no priority; anything else
    is refused rather than sent differently from kombu."""

    class connection:  # kombu's attribute: send_task's error translation
        _reraise_as_library_errors = staticmethod(contextlib.nullcontext)  # no I/O here

    def __init__(self) -> None:
        self.queue = ""
        self.message = ""

    def publish(  # kombu.Producer.publish's parameters, as send_task_message passes them
        self,
        body: object,
        routing_key: str = "",
        delivery_mode: int | str | None = None,
        mandatory: bool = False,  # AMQP's; kombu's Redis transport ignores both
        immediate: bool = False,
        priority: int = 0,
        content_type: str | None = None,
        content_encoding: str | None = None,
        serializer: str | None = None,
        headers: dict[str, object] | None = None,
        compression: str | None = None,
        exchange: str | None = None,
        retry: bool = False,  # the retries are the broker client's (create_task_publisher)
        retry_policy: dict[str, object] | None = None,
        declare: object = None,  # the worker declares its queue and binding; the
        # anonymous exchange needs neither
        expiration: float | None = None,
        timeout: float | None = None,
        confirm_timeout: float | None = None,
        **properties: object,
    ) -> None:
        if exchange or compression or priority or content_type or expiration is not None:
            raise ValueError(
                "TaskPublisher sends to a queue by name: no exchange, compression, priority, "
                "expiration or serialized body"
            )
        content_type, content_encoding, data = serialize(body, serializer=serializer)
        self.queue = routing_key
        self.message = json_dumps(
            {
                "body": Base64().encode(data),
                "content-encoding": content_encoding,
                "content-type": content_type,
                "headers": headers or {},
                "properties": {
                    **properties,
                    "delivery_mode": maybe_delivery_mode(delivery_mode),
                    "delivery_info": {"exchange": "", "routing_key": routing_key},
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": uuid(),
                },
            }
        )


class TaskPublisher:
    """Queues Celery tasks by name from an event loop, on an asyncio Redis client.

    ``Celery.send_task`` writes with kombu's blocking client, so the api called it on a
    thread. Under ``POST /items`` alone that publish was about 31 % of the api's CPU (py-spy
    at 04:06 on 2026-12-01, about 0.55 ms a request: the hand-off to the thread and back,
    kombu's producer pool, ``ensure`` and declare around one LPUSH; docs/performance.md).
    Here Celery's own ``send_task`` still builds the message and sends the publish signals
    (the contrib instrumentation's PRODUCER span, the trace context and ``request_id``
    headers are made there), given a producer (:class:`_Kept`) that keeps the envelope kombu
    would push; the event loop's client pushes it, as kombu does (LPUSH onto the queue's
    list). tests/test_queue.py checks the message against ``send_task``'s own.

    A failed or hung broker: the client's socket timeouts and one more try on a fresh
    connection, as Celery's publish retry policy says; the caller's deadline cancels the
    wait (and the command: its connection is dropped). The PRODUCER span ends when
    ``send_task`` returns, before the LPUSH, so it does not show a failed push: the caller
    records that on its own span (``item_service``: the ``enrichment.enqueue_failed`` event).
    """

    def __init__(self, app: Celery, client: redis.asyncio.Redis) -> None:
        self.app = app
        self.client = client

    async def send_task(self, name: str, args: Sequence[object]) -> None:
        kept = _Kept()
        # In a copy of the caller's context: the instrumentation makes its PRODUCER span
        # current in before_task_publish and detaches it in after_task_publish, which a
        # send_task that fails in between never sends; the request's context stays clean.
        contextvars.copy_context().run(
            self.app.send_task, name, args=list(args), producer=kept, retry=True
        )
        await self.client.lpush(kept.queue, kept.message)

    async def aclose(self) -> None:
        await self.client.aclose()


def create_task_publisher(settings: Settings) -> TaskPublisher:
    """A publisher on the broker with the Celery app's timeouts and publish retries."""
    app = create_celery_app(settings)
    policy = app.conf.task_publish_retry_policy
    client = redis.asyncio.Redis.from_url(
        redis_url(settings),
        socket_timeout=BROKER_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=BROKER_SOCKET_TIMEOUT_SECONDS,
        retry=Retry(ConstantBackoff(policy["interval_start"]), policy["max_retries"]),
    )
    return TaskPublisher(app, client)
