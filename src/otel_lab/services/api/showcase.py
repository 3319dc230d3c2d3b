"""The enhanced tracing showcase: one tracing pattern per endpoint, each readable in a minute.

- ``GET /hello``: one manual span under the request span.
- ``GET /error-simulation``: fails on purpose at a probability; the exception is recorded
  on the span, the span is marked ERROR and ``errors_total`` counts it (a JSON 500).
- ``GET /db-operation``: insert, select, update and delete on PostgreSQL, each its own
  span with the driver's statement span beneath it.
- ``GET /complex-operation``: four levels of nested spans, validation -> processing ->
  steps -> transforms, then aggregation.

Every manual span carries the showcase's attributes (``api.operation``, ``operation.type``,
``service.name``, and ``database.*``, ``user.id``, ``error.probability`` where they apply).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Query
from opentelemetry import trace
from pydantic import BaseModel
from sqlalchemy import delete, func, insert, select, update

from otel_lab.items import Item
from otel_lab.services.deps import EngineDep, ServiceNameDep, SessionFactoryDep, SettingsDep
from otel_lab.services.errors import ServiceError
from otel_lab.services.params import MAX_ID

logger = logging.getLogger("otel_lab.api.showcase")
tracer = trace.get_tracer("otel_lab.api.showcase")
router = APIRouter(tags=["showcase"])


def _common(service_name: str, operation: str, operation_type: str) -> dict[str, str]:
    return {
        "api.operation": operation,
        "operation.type": operation_type,
        "service.name": service_name,
    }


# ---------------------------------------------------------------------------- /hello

Name = Annotated[
    str,
    Query(min_length=1, max_length=64, pattern=r"^[^\W_][\w .'\-]*$", description="Who to greet"),
]


class Greeting(BaseModel):
    message: str


@router.get("/hello")
async def hello(service_name: ServiceNameDep, name: Name = "World") -> Greeting:
    """The smallest traced endpoint: one manual span with the showcase's attributes."""
    with tracer.start_as_current_span("hello", attributes=_common(service_name, "hello", "simple")):
        return Greeting(message=f"Hello, {name}!")


# ---------------------------------------------------------------------------- /error-simulation


class SimulatedError(ServiceError):
    """Raised on purpose by /error-simulation: a JSON 500 naming the odds."""

    error_type = "simulated_error"

    def __init__(self, probability: float) -> None:
        super().__init__(f"simulated failure (probability {probability})", probability=probability)


class SimulationOut(BaseModel):
    status: str
    probability: float


Probability = Annotated[
    float | None,
    Query(
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Chance of failing, 0..1 (default ERROR_SIMULATION_RATE)",
    ),
]


@router.get(
    "/error-simulation",
    responses={500: {"description": "The simulated failure (by design)"}},
)
async def error_simulation(
    service_name: ServiceNameDep, settings: SettingsDep, probability: Probability = None
) -> SimulationOut:
    """Fail with ``probability``: the span shows the exception, ERROR status and the odds."""
    chance = settings.error_simulation_rate if probability is None else probability
    attributes: dict[str, str | float] = {
        **_common(service_name, "error-simulation", "error_simulation")
    }
    attributes["error.probability"] = chance
    with tracer.start_as_current_span("error_simulation", attributes=attributes) as span:
        failed = random.random() < chance
        span.set_attribute("error.simulated", failed)
        if failed:
            logger.warning("simulated_error", extra={"probability": chance})
            # Leaving the span with an exception records it and sets status ERROR; the
            # error handler then marks the request span and counts errors_total.
            raise SimulatedError(chance)
    return SimulationOut(status="ok", probability=chance)


# ---------------------------------------------------------------------------- /db-operation


class DbStep(BaseModel):
    operation: str
    rows: int
    duration_ms: float


class DbOperationOut(BaseModel):
    database: dict[str, str]
    item_ids: list[int]
    operations: list[DbStep]


SCRATCH_NAME = "db-operation scratch row"


@contextmanager
def _db_step(
    operation: str, db: dict[str, str], steps: list[DbStep], rows: int
) -> Iterator[trace.Span]:
    start = time.perf_counter()
    with tracer.start_as_current_span(
        f"db_operation.{operation}",
        attributes={**db, "operation.type": "database", "db.operation.name": operation.upper()},
    ) as span:
        yield span
    steps.append(
        DbStep(
            operation=operation,
            rows=rows,
            duration_ms=round((time.perf_counter() - start) * 1000, 2),
        )
    )


@router.get("/db-operation")
async def db_operation(
    engine: EngineDep,
    sessions: SessionFactoryDep,
    service_name: ServiceNameDep,
    rows: Annotated[int, Query(ge=1, le=10, description="Scratch rows to write")] = 1,
) -> DbOperationOut:
    """Insert, read, update and delete scratch rows in one transaction, each step a span.

    The rows live in the ``items`` table for the length of the transaction only, with a
    status no other code path uses, so the endpoint leaves no data behind.
    """
    db = {"database.system": "postgresql", "database.name": engine.url.database or ""}
    steps: list[DbStep] = []
    with tracer.start_as_current_span(
        "db_operation", attributes={**_common(service_name, "db-operation", "database"), **db}
    ) as span:
        async with sessions() as session, session.begin():
            with _db_step("insert", db, steps, rows) as step:
                result = await session.execute(
                    insert(Item).returning(Item.id),
                    [
                        {"name": SCRATCH_NAME, "description": f"scratch {n}", "status": "scratch"}
                        for n in range(1, rows + 1)
                    ],
                )
                ids = sorted(result.scalars().all())
                step.set_attribute("item.ids", ids)
            with _db_step("select", db, steps, rows) as step:
                count = await session.scalar(
                    select(func.count()).select_from(Item).where(Item.id.in_(ids))
                )
                step.set_attribute("db.response.returned_rows", count or 0)
            with _db_step("update", db, steps, rows):
                await session.execute(
                    update(Item).where(Item.id.in_(ids)).values(description="scratch, updated")
                )
            with _db_step("delete", db, steps, rows):
                await session.execute(delete(Item).where(Item.id.in_(ids)))
        span.set_attribute("item.ids", ids)
    database = {"system": db["database.system"], "name": db["database.name"]}
    return DbOperationOut(database=database, item_ids=ids, operations=steps)


# ---------------------------------------------------------------------------- /complex-operation

STEP_NAMES = ("normalize", "enrich", "score", "rank", "filter", "dedupe", "weight", "bucket")
UserId = Annotated[int, Query(ge=1, le=MAX_ID, description="The user the work is for")]
Steps = Annotated[int, Query(ge=1, le=len(STEP_NAMES), description="Processing steps")]


class StepOut(BaseModel):
    index: int
    name: str
    value: float


class ComplexOut(BaseModel):
    user_id: int
    steps: list[StepOut]
    result: dict[str, float]
    depth: int


def _step_value(user_id: int, index: int) -> float:
    digest = hashlib.sha256(f"{user_id}:{index}".encode()).digest()
    return round(int.from_bytes(digest[:2]) / 655.35, 2)  # 0..100, same input same value


@router.get("/complex-operation")
async def complex_operation(
    service_name: ServiceNameDep, user_id: UserId = 1, steps: Steps = 3
) -> ComplexOut:
    """Nested work four spans deep, the shape a real request handler often has."""
    common = _common(service_name, "complex-operation", "composite")
    with tracer.start_as_current_span(
        "complex_operation", attributes={**common, "user.id": user_id, "complex.steps": steps}
    ) as root:
        with tracer.start_as_current_span(
            "complex_operation.validation",
            attributes={"operation.type": "validation", "user.id": user_id},
        ):
            plan = list(STEP_NAMES[:steps])

        outputs: list[StepOut] = []
        with tracer.start_as_current_span(
            "complex_operation.processing", attributes={"operation.type": "processing"}
        ):
            for index, name in enumerate(plan, start=1):
                outputs.append(await _process_step(user_id, index, name))

        with tracer.start_as_current_span(
            "complex_operation.aggregation", attributes={"operation.type": "aggregation"}
        ) as aggregation:
            values = [step.value for step in outputs]
            result: dict[str, Any] = {
                "total": round(sum(values), 2),
                "mean": round(sum(values) / len(values), 2),
                "max": max(values),
            }
            aggregation.set_attributes({f"result.{k}": v for k, v in result.items()})
        root.set_attribute("result.total", result["total"])
    logger.info("complex_operation_done", extra={"user_id": user_id, "steps": steps})
    return ComplexOut(user_id=user_id, steps=outputs, result=result, depth=4)


async def _process_step(user_id: int, index: int, name: str) -> StepOut:
    with tracer.start_as_current_span(
        "complex_operation.step",
        attributes={"operation.type": "step", "step.index": index, "step.name": name},
    ) as span:
        with tracer.start_as_current_span(
            "complex_operation.step.transform", attributes={"operation.type": "transform"}
        ):
            # A little awaited work so the waterfall shows real durations.
            await asyncio.sleep(random.uniform(0.001, 0.005))
            value = _step_value(user_id, index)
        span.set_attribute("step.value", value)
        return StepOut(index=index, name=name, value=value)
