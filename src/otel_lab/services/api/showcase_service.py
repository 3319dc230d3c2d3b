"""The showcase's traced work, one tracing pattern per operation: routes in ``showcase``,
the scratch rows of ``/db-operation`` in ``showcase_repository``.

Every manual span carries the showcase's attributes (``api.operation``, ``operation.type``,
``service.name``, and ``database.*``, ``user.id``, ``error.probability`` where they apply)
and goes to the app's telemetry (``Showcase(telemetry, ...)``), as every service's spans do.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from otel_lab.services.api import showcase_repository
from otel_lab.services.errors import ServiceError
from otel_lab.telemetry import Telemetry

SCOPE = "otel_lab.api.showcase"
logger = logging.getLogger("otel_lab.api.showcase")

STEP_NAMES = ("normalize", "enrich", "score", "rank", "filter", "dedupe", "weight", "bucket")


class Greeting(BaseModel):
    message: str


class SimulatedError(ServiceError):
    """Raised on purpose by /error-simulation: a JSON 500 naming the odds."""

    error_type = "simulated_error"

    def __init__(self, probability: float) -> None:
        super().__init__(f"simulated failure (probability {probability})", probability=probability)


class SimulationOut(BaseModel):
    status: str
    probability: float


class DbStep(BaseModel):
    operation: str
    rows: int
    duration_ms: float


class DbOperationOut(BaseModel):
    database: dict[str, str]
    item_ids: list[int]
    operations: list[DbStep]


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


class Showcase:
    """The showcase's operations, traced to ``telemetry`` on behalf of ``service_name``."""

    def __init__(self, telemetry: Telemetry, service_name: str) -> None:
        self.tracer = telemetry.tracer(SCOPE)
        self.service_name = service_name

    def _common(self, operation: str, operation_type: str) -> dict[str, str]:
        return {
            "api.operation": operation,
            "operation.type": operation_type,
            "service.name": self.service_name,
        }

    def hello(self, name: str) -> Greeting:
        """The smallest traced operation: one manual span with the showcase's attributes."""
        with self.tracer.start_as_current_span("hello", attributes=self._common("hello", "simple")):
            return Greeting(message=f"Hello, {name}!")

    def error_simulation(self, chance: float) -> SimulationOut:
        """Fail with ``chance``: the span shows the exception, ERROR status and the odds."""
        attributes: dict[str, str | float] = {
            **self._common("error-simulation", "error_simulation")
        }
        attributes["error.probability"] = chance
        with self.tracer.start_as_current_span("error_simulation", attributes=attributes) as span:
            failed = random.random() < chance
            span.set_attribute("error.simulated", failed)
            if failed:
                logger.warning("simulated_error", extra={"probability": chance})
                # Leaving the span with an exception records it and sets status ERROR; the
                # error handler then marks the request span and counts errors_total.
                raise SimulatedError(chance)
        return SimulationOut(status="ok", probability=chance)

    @contextmanager
    def _db_step(
        self, operation: str, db: dict[str, str], steps: list[DbStep], rows: int
    ) -> Iterator[trace.Span]:
        start = time.perf_counter()
        with self.tracer.start_as_current_span(
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

    async def db_operation(self, engine: AsyncEngine, rows: int) -> DbOperationOut:
        """Insert, read, update and delete scratch rows in one transaction, each step a span.

        The rows live in the ``items`` table for the length of the transaction only, with a
        status no other code path uses, so the operation leaves no data behind.
        """
        db = {"database.system": "postgresql", "database.name": engine.url.database or ""}
        steps: list[DbStep] = []
        with self.tracer.start_as_current_span(
            "db_operation", attributes={**self._common("db-operation", "database"), **db}
        ) as span:
            async with engine.begin() as connection:
                with self._db_step("insert", db, steps, rows) as step:
                    ids = await showcase_repository.add(connection, rows)
                    step.set_attribute("item.ids", ids)
                with self._db_step("select", db, steps, rows) as step:
                    count = await showcase_repository.count(connection, ids)
                    step.set_attribute("db.response.returned_rows", count)
                with self._db_step("update", db, steps, rows):
                    await showcase_repository.touch(connection, ids)
                with self._db_step("delete", db, steps, rows):
                    await showcase_repository.remove(connection, ids)
            span.set_attribute("item.ids", ids)
        database = {"system": db["database.system"], "name": db["database.name"]}
        return DbOperationOut(database=database, item_ids=ids, operations=steps)

    async def complex_operation(self, user_id: int, steps: int) -> ComplexOut:
        """Nested work four spans deep, the shape a real request handler often has."""
        tracer = self.tracer
        common = self._common("complex-operation", "composite")
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
                    outputs.append(await self._process_step(user_id, index, name))

            with tracer.start_as_current_span(
                "complex_operation.aggregation", attributes={"operation.type": "aggregation"}
            ) as aggregation:
                values = [step.value for step in outputs]
                result: dict[str, float] = {
                    "total": round(sum(values), 2),
                    "mean": round(sum(values) / len(values), 2),
                    "max": max(values),
                }
                aggregation.set_attributes({f"result.{k}": v for k, v in result.items()})
            root.set_attribute("result.total", result["total"])
        logger.info("complex_operation_done", extra={"user_id": user_id, "steps": steps})
        return ComplexOut(user_id=user_id, steps=outputs, result=result, depth=4)

    async def _process_step(self, user_id: int, index: int, name: str) -> StepOut:
        with self.tracer.start_as_current_span(
            "complex_operation.step",
            attributes={"operation.type": "step", "step.index": index, "step.name": name},
        ) as span:
            with self.tracer.start_as_current_span(
                "complex_operation.step.transform", attributes={"operation.type": "transform"}
            ):
                # A little awaited work so the waterfall shows real durations.
                await asyncio.sleep(random.uniform(0.001, 0.005))
                value = _step_value(user_id, index)
            span.set_attribute("step.value", value)
            return StepOut(index=index, name=name, value=value)
