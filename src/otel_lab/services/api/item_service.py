"""The api's item rules: PostgreSQL, a cache-aside read through Valkey, enrichment on the worker.

Valkey is optional for every request here. As a cache, each call has a 0.5 s timeout
(``otel_lab.cache``; less when the request's deadline leaves less) and a circuit breaker:
after a few consecutive failures the cache is bypassed for a cool-down, so a hung cache
costs a read almost nothing. As the broker, the
publish after ``POST /items`` has a deadline and a breaker of its own; a write whose task
could not be published is still stored and answered (status ``pending``), and the worker's
pending sweep queues its enrichment once the broker is back (``worker.app``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import redis.asyncio
from kombu.exceptions import KombuError
from opentelemetry import trace
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from otel_lab import faults
from otel_lab.cache import CACHE_TIMEOUT_SECONDS
from otel_lab.items import ITEM_ENRICHMENT, Item, ItemCreate, ItemOut
from otel_lab.queue import TaskPublisher
from otel_lab.services import deadline
from otel_lab.services.api import item_repository
from otel_lab.services.downstream import CircuitBreaker, CircuitOpenError
from otel_lab.services.errors import NotFoundError
from otel_lab.settings import Settings
from otel_lab.telemetry import metrics as prom

logger = logging.getLogger("otel_lab.services.api.items")

CACHE_NAME = "items"
PUBLISH_DEADLINE_SECONDS = 1.5
# Three failures in a row (1.5 s of timeouts at worst) open a breaker for 5 s; then one
# trial call decides. Per process, as the failures they count are.
cache_breaker = CircuitBreaker("cache", failure_threshold=3, reset_seconds=5.0)
broker_breaker = CircuitBreaker("broker", failure_threshold=3, reset_seconds=5.0)
T = TypeVar("T")


async def create(autocommit: AsyncEngine, tasks: TaskPublisher, body: ItemCreate) -> ItemOut:
    """Insert the item, then queue its enrichment in the same trace."""
    out = ItemOut.model_validate(await item_repository.add(autocommit, body))
    await _enqueue_enrichment(tasks, out.id)
    logger.info("item_created", extra={"item_id": out.id})
    return out


async def _enqueue_enrichment(tasks: TaskPublisher, item_id: int) -> None:
    """A broker outage leaves the item pending (the sweep queues it later), never fails
    or holds the write: the publish gets a deadline, and is skipped while its breaker is
    open. A publish cut off by the deadline is cancelled (the sweep queues the item if
    its LPUSH did not get through). The deadline is the request's too: what is left of
    it, less the time to answer in. The publish span and the trace context the task
    carries are the request's (``queue.TaskPublisher``: on the event loop, no thread)."""
    try:
        broker_breaker.allow("publish")
        left = deadline.remaining()
        left -= deadline.margin(left)
        with anyio.fail_after(max(0.0, min(PUBLISH_DEADLINE_SECONDS, left))):
            await tasks.send_task(ITEM_ENRICHMENT, [item_id])
    except (KombuError, RedisError, OSError, TimeoutError, CircuitOpenError) as exc:
        if not isinstance(exc, CircuitOpenError):
            broker_breaker.record_failure()
        span = trace.get_current_span()
        span.add_event("enrichment.enqueue_failed", {"error.type": type(exc).__name__})
        prom.ERRORS.labels("enqueue_failed").inc()
        logger.warning("enrichment_enqueue_failed", extra={"item_id": item_id, "error": str(exc)})
    else:
        broker_breaker.record_success()


async def _cached(
    call: Callable[[], Awaitable[T]], event: str, *, needed: bool = True
) -> tuple[bool, T | None]:
    """One cache call behind the breaker: (True, result), or (False, None) when the cache
    failed or is bypassed; the span gets ``event`` or ``cache.bypassed`` saying which.

    The call gets the cache's 0.5 s, or what is left of the request's deadline when that
    is less; cut by the deadline it is not the cache's failure (the breaker is not
    charged), and a ``needed`` call answers 504 naming the cache."""
    span = trace.get_current_span()
    outage = faults.active("cache-outage")
    if outage:
        faults.mark(span, "cache-outage")
    try:
        cache_breaker.allow("cache")
    except CircuitOpenError:
        span.add_event("cache.bypassed")
        return False, None
    timeout = deadline.capped(CACHE_TIMEOUT_SECONDS)
    try:
        if outage:  # the failure an unreachable Valkey gives, through the same path
            raise RedisConnectionError("fault cache-outage: the cache is unreachable")
        if timeout < CACHE_TIMEOUT_SECONDS:  # else the client's own timeout, the same
            with anyio.fail_after(timeout):
                result = await call()
        else:
            result = await call()
    except RedisError as exc:
        cache_breaker.record_failure()
        span.add_event(event, {"error.type": type(exc).__name__})
        return False, None
    except TimeoutError:  # the request's deadline, not the cache's
        cache_breaker.release()
        if not needed:
            span.add_event(event, {"error.type": "deadline_exceeded"})
            return False, None
        deadline.exceeded("cache")
        raise deadline.DeadlineExceededError("cache") from None
    except BaseException:
        cache_breaker.release()
        raise
    cache_breaker.record_success()
    return True, result


async def read(
    item_id: int, redis: redis.asyncio.Redis, autocommit: AsyncEngine, settings: Settings
) -> ItemOut | Response:
    """Cache-aside: answer from Redis when possible; a miss reads PostgreSQL and fills Redis.

    A hit is answered as the JSON the cache holds (written from an ``ItemOut``, by this
    service or the worker), without parsing and serialising it again."""
    span = trace.get_current_span()
    key = Item.cache_key(item_id)
    cache_up, cached = await _cached(lambda: redis.get(key), "cache.unavailable")
    if cached is not None:
        span.set_attribute("cache.hit", True)
        prom.CACHE_HITS.labels(CACHE_NAME).inc()
        return Response(cached, media_type="application/json")

    span.set_attribute("cache.hit", False)
    prom.CACHE_MISSES.labels(CACHE_NAME).inc()
    item = await item_repository.get(autocommit, item_id)
    if item is None:
        raise NotFoundError(f"item {item_id} not found")
    out = ItemOut.model_validate(item)
    if cache_up:  # a cache that just failed is not asked again within the same request
        # NX: if the worker has written a fresher copy meanwhile, keep it.
        ttl = settings.cache_ttl_seconds
        await _cached(lambda: redis.set(key, out.model_dump_json(), ex=ttl, nx=True),
                      "cache.fill_failed", needed=False)  # fmt: skip
    return out
