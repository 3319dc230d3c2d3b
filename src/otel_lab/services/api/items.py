"""``POST /items`` and ``GET /items/{id}``: routes -> ``item_service`` (cache-aside reads,
enrichment on the worker; Valkey optional) -> ``item_repository`` (PostgreSQL).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from starlette.responses import Response

from otel_lab.items import ItemCreate, ItemOut
from otel_lab.services.api import item_service
from otel_lab.services.deps import AutocommitDep, RedisDep, SettingsDep, TaskPublisherDep
from otel_lab.services.params import path_id

router = APIRouter(prefix="/items", tags=["items"])

ItemId = Annotated[int, path_id("The item's id")]


@router.post("", status_code=201)
async def create_item(
    body: ItemCreate, autocommit: AutocommitDep, tasks: TaskPublisherDep
) -> ItemOut:
    """Insert the item, then queue its enrichment in the same trace."""
    return await item_service.create(autocommit, tasks, body)


@router.get("/{item_id}", response_model=ItemOut, responses={404: {"description": "No such item"}})
async def read_item(
    item_id: ItemId, redis: RedisDep, autocommit: AutocommitDep, settings: SettingsDep
) -> ItemOut | Response:
    """Cache-aside: answer from Redis when possible; a miss reads PostgreSQL and fills Redis."""
    return await item_service.read(item_id, redis, autocommit, settings)
