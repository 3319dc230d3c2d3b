"""The enhanced tracing showcase: one tracing pattern per endpoint, each readable in a minute.

- ``GET /hello``: one manual span under the request span.
- ``GET /error-simulation``: fails on purpose at a probability; the exception is recorded
  on the span, the span is marked ERROR and ``errors_total`` counts it (a JSON 500).
- ``GET /db-operation``: insert, select, update and delete on PostgreSQL, each its own
  span with the driver's statement span beneath it.
- ``GET /complex-operation``: four levels of nested spans, validation -> processing ->
  steps -> transforms, then aggregation.

The routes validate and hand over to :class:`~.showcase_service.Showcase`, which does the
traced work.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from otel_lab.services.api.showcase_service import (
    STEP_NAMES,
    ComplexOut,
    DbOperationOut,
    Greeting,
    Showcase,
    SimulationOut,
)
from otel_lab.services.deps import EngineDep, SettingsDep, lifespan_state
from otel_lab.services.params import MAX_ID

router = APIRouter(tags=["showcase"])


# Made once by the api's lifespan, with the app's telemetry.
ShowcaseDep = Annotated[Showcase, Depends(lifespan_state("showcase"))]

Name = Annotated[
    str,
    Query(min_length=1, max_length=64, pattern=r"^[^\W_][\w .'\-]*$", description="Who to greet"),
]
Probability = Annotated[
    float | None,
    Query(
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Chance of failing, 0..1 (default ERROR_SIMULATION_RATE)",
    ),
]
Rows = Annotated[int, Query(ge=1, le=10, description="Scratch rows to write")]
UserId = Annotated[int, Query(ge=1, le=MAX_ID, description="The user the work is for")]
Steps = Annotated[int, Query(ge=1, le=len(STEP_NAMES), description="Processing steps")]


@router.get("/hello")
async def hello(showcase: ShowcaseDep, name: Name = "World") -> Greeting:
    """The smallest traced endpoint: one manual span with the showcase's attributes."""
    return showcase.hello(name)


@router.get(
    "/error-simulation",
    responses={500: {"description": "The simulated failure (by design)"}},
)
async def error_simulation(
    showcase: ShowcaseDep, settings: SettingsDep, probability: Probability = None
) -> SimulationOut:
    """Fail with ``probability``: the span shows the exception, ERROR status and the odds."""
    chance = settings.error_simulation_rate if probability is None else probability
    return showcase.error_simulation(chance)


@router.get("/db-operation")
async def db_operation(showcase: ShowcaseDep, engine: EngineDep, rows: Rows = 1) -> DbOperationOut:
    """Insert, read, update and delete scratch rows in one transaction, each step a span.

    The rows live in the ``items`` table for the length of the transaction only, with a
    status no other code path uses, so the endpoint leaves no data behind.
    """
    return await showcase.db_operation(engine, rows)


@router.get("/complex-operation")
async def complex_operation(
    showcase: ShowcaseDep, user_id: UserId = 1, steps: Steps = 3
) -> ComplexOut:
    """Nested work four spans deep, the shape a real request handler often has."""
    return await showcase.complex_operation(user_id, steps)
