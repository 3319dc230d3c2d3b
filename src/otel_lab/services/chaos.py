"""Chaos mode: a share of requests is delayed, visibly on the request's server span (a
``chaos.delay_ms`` attribute and a ``chaos.delay`` event).

On for the process's life with ``CHAOS_ENABLED=true``, or switched on and off at run time
with the ``chaos-delay`` fault (``otel-lab fault on chaos-delay``), which also marks the
span with ``otel_lab.fault``. Installed inside the telemetry middleware; while it is off a
request pays one set lookup (``faults.active``, about 50 ns).
"""

from __future__ import annotations

import asyncio
import random

from opentelemetry import trace
from starlette.types import ASGIApp, Receive, Scope, Send

from otel_lab import faults
from otel_lab.settings import Settings

FAULT = "chaos-delay"


class ChaosMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.always = settings.chaos_enabled
        self.rate = settings.chaos_rate
        self.min_delay_ms = settings.chaos_min_delay_ms
        self.max_delay_ms = settings.chaos_max_delay_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        on = self.always or faults.active(FAULT)
        if on and scope["type"] == "http" and random.random() < self.rate:
            delay_ms = round(random.uniform(self.min_delay_ms, self.max_delay_ms), 1)
            span = trace.get_current_span()
            span.set_attribute("chaos.delay_ms", delay_ms)
            span.add_event("chaos.delay", {"delay_ms": delay_ms})
            if not self.always:
                faults.mark(span, FAULT)
            await asyncio.sleep(delay_ms / 1000)
        await self.app(scope, receive, send)
