"""Items: PostgreSQL, a cache-aside read through Redis, enrichment on the worker."""

from __future__ import annotations

import logging
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, HTTPException, Path, Request
from kombu.exceptions import KombuError
from opentelemetry import trace
from redis.exceptions import RedisError

from otel_lab.services.api.models import Item
from otel_lab.services.api.schemas import ItemCreate, ItemOut
from otel_lab.settings import get_settings
from otel_lab.telemetry import metrics as prom
from otel_lab.worker.queue import ITEM_ENRICHMENT

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/items", tags=["items"])

ItemId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The item's id")]
CACHE_NAME = "items"


@router.post("", status_code=201)
async def create_item(body: ItemCreate, request: Request) -> ItemOut:
    """Insert the item, then queue its enrichment in the same trace."""
    async with request.app.state.sessions() as session:
        item = Item(name=body.name, description=body.description)
        session.add(item)
        await session.commit()
    out = ItemOut.model_validate(item)
    await _enqueue_enrichment(request, out.id)
    logger.info("item_created", extra={"item_id": out.id})
    return out


async def _enqueue_enrichment(request: Request, item_id: int) -> None:
    """A broker outage leaves the item pending rather than failing the write."""
    celery = request.app.state.celery
    try:
        await to_thread.run_sync(
            lambda: celery.send_task(ITEM_ENRICHMENT, args=[item_id], retry=True)
        )
    except (KombuError, RedisError, OSError) as exc:
        span = trace.get_current_span()
        span.add_event("enrichment.enqueue_failed", {"error.type": type(exc).__name__})
        prom.ERRORS.labels("enqueue_failed").inc()
        logger.warning("enrichment_enqueue_failed", extra={"item_id": item_id, "error": str(exc)})


@router.get("/{item_id}")
async def read_item(item_id: ItemId, request: Request) -> ItemOut:
    """Cache-aside: answer from Redis when possible; a miss reads PostgreSQL and fills Redis."""
    span = trace.get_current_span()
    redis = request.app.state.redis
    key = Item.cache_key(item_id)
    try:
        cached = await redis.get(key)
    except RedisError as exc:
        cached = None
        span.add_event("cache.unavailable", {"error.type": type(exc).__name__})
    if cached is not None:
        span.set_attribute("cache.hit", True)
        prom.CACHE_HITS.labels(CACHE_NAME).inc()
        return ItemOut.model_validate_json(cached)

    span.set_attribute("cache.hit", False)
    prom.CACHE_MISSES.labels(CACHE_NAME).inc()
    async with request.app.state.sessions() as session:
        item = await session.get(Item, item_id)
    if item is None:
        raise HTTPException(status_code=404, detail=f"item {item_id} not found")
    out = ItemOut.model_validate(item)
    try:
        # NX: if the worker has written a fresher copy meanwhile, keep it.
        await redis.set(key, out.model_dump_json(), ex=get_settings().cache_ttl_seconds, nx=True)
    except RedisError as exc:
        span.add_event("cache.fill_failed", {"error.type": type(exc).__name__})
    return out
