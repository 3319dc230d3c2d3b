"""``POST /analyze`` (MicroTrace): the edge validates, the WorkerService computes.

The WorkerService stands in for a downstream dependency, so it gets its own child span
(``WorkerService.analyze``) and its own log line: a trace shows the edge and the worker as
two steps, and MicroTrace's ``analyze_response`` log event carries the request ID.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

from anyio import to_thread
from fastapi import APIRouter
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

from otel_lab import faults
from otel_lab.services.errors import InvalidInputError

# MicroTrace's log events come from "microtrace.api"; ours keep the project's prefix.
logger = logging.getLogger("otel_lab.api.analyze")
tracer = trace.get_tracer("otel_lab.api.analyze")
CPU_ROUNDS = 400_000  # cpu-hungry: about 0.1 s of CPU per request


router = APIRouter(tags=["analyze"])


class AnalyzeRequest(BaseModel):
    """Two finite numbers. Strict: ``"10.5"`` (a string) or ``true`` are not numbers here."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    a: float = Field(examples=[10.5])
    b: float = Field(examples=[3.5])


class AnalyzeResponse(BaseModel):
    sum: float = Field(examples=[14.0])
    difference: float = Field(examples=[7.0])


@dataclass(frozen=True)
class Analysis:
    sum: float
    difference: float


class WorkerService:
    """The component that does the work, traced as its own step under the request span."""

    def analyze(self, a: float, b: float) -> Analysis:
        with tracer.start_as_current_span(
            "WorkerService.analyze",
            attributes={"operation.type": "computation", "analysis.a": a, "analysis.b": b},
        ) as span:
            result = Analysis(sum=a + b, difference=a - b)
            span.set_attributes(
                {"analysis.sum": result.sum, "analysis.difference": result.difference}
            )
            logger.debug("worker_analysis_completed", extra={"a": a, "b": b})
            return result


worker_service = WorkerService()


async def _derive_key(text: str) -> None:
    """The cpu-hungry fault: a needless key derivation. In a thread (OpenSSL releases the
    GIL), so the service stays responsive and its scrapes keep coming."""
    with tracer.start_as_current_span("derive_key", attributes={"kdf.rounds": CPU_ROUNDS}) as span:
        faults.mark(span, "cpu-hungry")
        await to_thread.run_sync(hashlib.pbkdf2_hmac, "sha256", text.encode(), b"lab", CPU_ROUNDS)


@router.post(
    "/analyze",
    responses={422: {"description": "Missing, non-numeric or non-finite input or result"}},
)
async def analyze(body: AnalyzeRequest) -> AnalyzeResponse:
    """Sum and difference of ``a`` and ``b``, computed by the WorkerService."""
    if faults.active("cpu-hungry"):
        await _derive_key(f"{body.a}:{body.b}")
    result = worker_service.analyze(body.a, body.b)
    if not (math.isfinite(result.sum) and math.isfinite(result.difference)):
        # 1e308 + 1e308 overflows to inf, which JSON cannot carry: the input is at fault.
        raise InvalidInputError("result out of range: a and b are too large")
    logger.info("analyze_response", extra={"sum": result.sum, "difference": result.difference})
    return AnalyzeResponse(sum=result.sum, difference=result.difference)
