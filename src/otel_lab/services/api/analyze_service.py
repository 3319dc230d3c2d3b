"""MicroTrace's analysis (routes in ``analyze``): the WorkerService computes, as its own step.

The WorkerService stands in for a downstream dependency, so it gets its own child span
(``WorkerService.analyze``) and its own log line: a trace shows the edge and the worker as
two steps. Its spans go to the app's telemetry (``WorkerService(telemetry)``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

from anyio import to_thread

from otel_lab import faults
from otel_lab.services.errors import InvalidInputError
from otel_lab.telemetry import Telemetry

SCOPE = "otel_lab.api.analyze"
# MicroTrace's log events come from "microtrace.api"; ours keep the project's prefix.
logger = logging.getLogger("otel_lab.api.analyze")
CPU_ROUNDS = 400_000  # cpu-hungry: about 0.1 s of CPU per request


@dataclass(frozen=True)
class Analysis:
    sum: float
    difference: float


class WorkerService:
    """The component that does the work, traced as its own step under the request span."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.tracer = telemetry.tracer(SCOPE)

    async def analyze(self, a: float, b: float) -> Analysis:
        """Sum and difference of ``a`` and ``b``; 422 when they do not fit in a float."""
        if faults.active("cpu-hungry"):
            await self._derive_key(f"{a}:{b}")
        with self.tracer.start_as_current_span(
            "WorkerService.analyze",
            attributes={"operation.type": "computation", "analysis.a": a, "analysis.b": b},
        ) as span:
            result = Analysis(sum=a + b, difference=a - b)
            span.set_attributes(
                {"analysis.sum": result.sum, "analysis.difference": result.difference}
            )
            logger.debug("worker_analysis_completed", extra={"a": a, "b": b})
        if not (math.isfinite(result.sum) and math.isfinite(result.difference)):
            # 1e308 + 1e308 overflows to inf, which JSON cannot carry: the input is at fault.
            raise InvalidInputError("result out of range: a and b are too large")
        return result

    async def _derive_key(self, text: str) -> None:
        """The cpu-hungry fault: a needless key derivation. In a thread (OpenSSL releases
        the GIL), so the service stays responsive and its scrapes keep coming."""
        with self.tracer.start_as_current_span(
            "derive_key", attributes={"kdf.rounds": CPU_ROUNDS}
        ) as span:
            faults.mark(span, "cpu-hungry")
            await to_thread.run_sync(
                hashlib.pbkdf2_hmac, "sha256", text.encode(), b"lab", CPU_ROUNDS
            )
