"""The Celery app as both sides see it: the services publish, the worker consumes.

Publishers use task names (e.g. ``otel_lab.items.ITEM_ENRICHMENT``), not the task functions,
so a service never imports worker code.
"""

from __future__ import annotations

import redis
from celery import Celery
from kombu.transport import redis as kombu_redis

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
