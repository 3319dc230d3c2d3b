"""Redis/Valkey clients with short timeouts: a cache outage degrades to the database.

Only these clients are traced (``instrument_client``), not the redis module: the Celery
broker's polling would otherwise fill the trace store with meaningless root spans. The
spans are the contrib instrumentation's, made by ``telemetry.redis_client`` at a fraction of
its cost (docs/instrumentation.md).
"""

from __future__ import annotations

from typing import TypedDict, TypeVar

import redis
import redis.asyncio

from otel_lab.settings import Settings
from otel_lab.telemetry.redis_client import instrument_client
from otel_lab.telemetry.setup import Telemetry

# Each call's own bound; within a request, what is left of its deadline when that is less
# (the caller caps it: ``services.deadline.capped``).
CACHE_TIMEOUT_SECONDS = 0.5


class _ClientOptions(TypedDict):
    socket_timeout: float
    socket_connect_timeout: float
    decode_responses: bool


_CLIENT_OPTIONS: _ClientOptions = {
    "socket_timeout": CACHE_TIMEOUT_SECONDS,
    "socket_connect_timeout": CACHE_TIMEOUT_SECONDS,
    "decode_responses": True,
}
ClientT = TypeVar("ClientT", redis.Redis, redis.asyncio.Redis)


class CacheNotConfiguredError(RuntimeError):
    pass


def redis_url(settings: Settings) -> str:
    url = settings.redis_url
    if not url:
        raise CacheNotConfiguredError(
            "REDIS_URL is not set; start the system with `otel-lab up`, "
            "or point REDIS_URL at a Redis or Valkey server"
        )
    return url


def _traced(client: ClientT, telemetry: Telemetry) -> ClientT:
    if telemetry.enabled:
        instrument_client(client, tracer_provider=telemetry.tracer_provider)
    return client


def create_async_redis(settings: Settings, telemetry: Telemetry) -> redis.asyncio.Redis:
    """An async client traced to ``telemetry``'s provider (untraced when it is disabled)."""
    client = redis.asyncio.Redis.from_url(redis_url(settings), **_CLIENT_OPTIONS)
    return _traced(client, telemetry)


def create_redis(settings: Settings, telemetry: Telemetry) -> redis.Redis:
    """A blocking client (the worker's), as :func:`create_async_redis`."""
    client = redis.Redis.from_url(redis_url(settings), **_CLIENT_OPTIONS)
    return _traced(client, telemetry)
