"""``POST /analyze`` (MicroTrace): the edge validates, the WorkerService computes
(``analyze_service``), and MicroTrace's ``analyze_response`` log event carries the request ID.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from otel_lab.services.api.analyze_service import WorkerService
from otel_lab.services.deps import lifespan_state

logger = logging.getLogger("otel_lab.api.analyze")
router = APIRouter(tags=["analyze"])


class AnalyzeRequest(BaseModel):
    """Two finite numbers. Strict: ``"10.5"`` (a string) or ``true`` are not numbers here."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    a: float = Field(examples=[10.5])
    b: float = Field(examples=[3.5])


class AnalyzeResponse(BaseModel):
    sum: float = Field(examples=[14.0])
    difference: float = Field(examples=[7.0])


# Made once by the api's lifespan, with the app's telemetry.
WorkerDep = Annotated[WorkerService, Depends(lifespan_state("analysis"))]


@router.post(
    "/analyze",
    responses={422: {"description": "Missing, non-numeric or non-finite input or result"}},
)
async def analyze(body: AnalyzeRequest, worker: WorkerDep) -> AnalyzeResponse:
    """Sum and difference of ``a`` and ``b``, computed by the WorkerService."""
    result = await worker.analyze(body.a, body.b)
    logger.info("analyze_response", extra={"sum": result.sum, "difference": result.difference})
    return AnalyzeResponse(sum=result.sum, difference=result.difference)
