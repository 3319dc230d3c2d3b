"""Celery tasks. Each runs in the trace of the request that queued it.

Tasks are plain functions Celery calls, so what they use (settings, the tracer, the
database engine and the cache) is handed over once, by the worker's entry point
(``worker.app``) calling :func:`configure` with its settings and telemetry.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import NamedTuple

import redis
from celery import shared_task
from opentelemetry import trace
from redis.exceptions import RedisError
from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.exc import OperationalError

from otel_lab import faults
from otel_lab.cache import create_redis
from otel_lab.db import Statement, create_blocking_engine, execute_blocking
from otel_lab.items import ITEM_ENRICHMENT, Item, ItemOut, ItemRow, enrichment, items
from otel_lab.settings import Settings
from otel_lab.telemetry import Telemetry

logger = logging.getLogger(__name__)
SCOPE = __name__


class TaskResources:
    """What the tasks use, made from the worker's settings and telemetry; the engine and the
    cache client on first use (neither connects until then)."""

    def __init__(self, settings: Settings, telemetry: Telemetry) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.tracer: trace.Tracer = telemetry.tracer(SCOPE)

    @cached_property
    def engine(self) -> Engine:
        """The worker's engine without BEGIN/COMMIT: each of its statements stands alone."""
        return create_blocking_engine(self.settings, self.telemetry, autocommit=True)

    @cached_property
    def cache(self) -> redis.Redis:
        return create_redis(self.settings, self.telemetry)


_resources: TaskResources | None = None


def configure(settings: Settings, telemetry: Telemetry) -> None:
    """Hand the tasks their settings and telemetry: once per worker process, at start-up."""
    global _resources
    _resources = TaskResources(settings, telemetry)


def resources() -> TaskResources:
    if _resources is None:
        raise RuntimeError("tasks.configure() was not called: start the worker via worker.app")
    return _resources


class _ItemText(NamedTuple):
    """What enrichment is derived from."""

    name: str
    description: str | None


# Built once (db.execute_blocking compiles each once): the task's two round trips.
_READ_ITEM = Statement(
    select(items.c.name, items.c.description).where(items.c.id == bindparam("item_id")), _ItemText
)
_ENRICHED = ("slug", "word_count", "status", "enriched_at")
_ENRICH_ITEM = Statement(
    update(items)
    .where(items.c.id == bindparam("item_id"))
    .values({name: bindparam(f"new_{name}") for name in _ENRICHED})
    .returning(*items.c),
    ItemRow,
)


def _prefixed(values: dict[str, object]) -> dict[str, object]:
    return {f"new_{name}": value for name, value in values.items()}


# item id -> when this process last queued it again (time.monotonic()).
_requeued: dict[int, float] = {}
REQUEUE_BATCH = 500
SLOW_ENRICHMENT_SECONDS = 2.0


def requeue_pending_items(older_than_seconds: float = 30.0) -> int:
    """Queue enrichment again for items left pending, e.g. written while the broker was down
    or whose task died with a worker: the mechanism that makes "0 enrichments lost" hold.

    Enrichment is idempotent, so a task that was in fact still queued does no harm; but an
    item is queued again at most once per ``max(60 s, 5 sweeps)``. Without that, a backlog
    longer than one sweep gets a copy of every pending task each sweep, which lengthens the
    backlog: under load the queue would grow without end and nothing would be enriched.
    """
    worker = resources()
    now = time.monotonic()
    again_after = max(60.0, 5 * older_than_seconds)
    for item_id, when in list(_requeued.items()):
        if now - when > again_after:
            del _requeued[item_id]
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
    with worker.tracer.start_as_current_span("items.requeue_pending") as span:
        with worker.engine.connect() as connection:
            pending = [
                item_id
                for item_id in connection.scalars(
                    select(items.c.id)
                    .where(items.c.status == "pending", items.c.created_at < cutoff)
                    .order_by(items.c.id)
                    .limit(REQUEUE_BATCH + len(_requeued))
                )
                if item_id not in _requeued
            ][:REQUEUE_BATCH]
        for item_id in pending:
            item_enrichment.delay(item_id)
            _requeued[item_id] = now
        span.set_attribute("items.requeued", len(pending))
    if pending:
        logger.info("pending_items_requeued", extra={"count": len(pending)})
    return len(pending)


@shared_task(
    name=ITEM_ENRICHMENT,
    autoretry_for=(OperationalError,),  # database briefly down: try again, with backoff
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=5,
)
def item_enrichment(item_id: int) -> None:
    """Derive an item's slug and word count, mark it enriched, and refresh its cached copy."""
    worker = resources()
    attributes = {"item.id": item_id}
    with worker.tracer.start_as_current_span("item.enrich", attributes=attributes) as span:
        if faults.active("worker-backlog"):  # slow enrichment: the queue outgrows the workers
            faults.mark(span, "worker-backlog")
            time.sleep(SLOW_ENRICHMENT_SECONDS)
        with worker.engine.connect() as connection:  # autocommit: one transaction per statement
            found = execute_blocking(connection, _READ_ITEM, {"item_id": item_id}).first()
            item = None
            if found is not None:
                # Idempotent: an UPDATE that races another run of the task writes the same.
                values = _prefixed(enrichment(found.name, found.description))
                item = execute_blocking(
                    connection, _ENRICH_ITEM, {"item_id": item_id, **values}
                ).first()
        if item is None:  # deleted before the task ran
            span.set_attribute("item.found", False)
            logger.warning("item_enrichment_skipped", extra={"item_id": item_id})
            return
        span.set_attributes({"item.found": True, "item.word_count": item.word_count})
        fresh = ItemOut.model_validate(item).model_dump_json()
        try:
            # Write-through rather than delete: a reader that loaded the old row before this
            # commit fills the cache with SET NX, so it cannot overwrite the fresh copy.
            worker.cache.set(Item.cache_key(item_id), fresh, ex=worker.settings.cache_ttl_seconds)
        except RedisError as exc:
            # The cached copy expires on its own; the database already holds the truth.
            span.add_event("cache.update_failed", {"error.type": type(exc).__name__})
        logger.info("item_enriched", extra={"item_id": item_id, "word_count": item.word_count})
