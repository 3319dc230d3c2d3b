"""Chaos mode (``CHAOS_ENABLED=true``): a share of requests is delayed, visibly on the
request's server span (a ``chaos.delay_ms`` attribute and a ``chaos.delay`` event).

A middleware of its own, installed inside the telemetry middleware and only when chaos
mode is on, so a service without chaos pays nothing for it.
"""

from __future__ import annotations

import asyncio
import random

from opentelemetry import trace
from starlette.types import ASGIApp, Receive, Scope, Send

from otel_lab.settings import Settings


class ChaosMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.rate = settings.chaos_rate
        self.min_delay_ms = settings.chaos_min_delay_ms
        self.max_delay_ms = settings.chaos_max_delay_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and random.random() < self.rate:
            delay_ms = round(random.uniform(self.min_delay_ms, self.max_delay_ms), 1)
            span = trace.get_current_span()
            span.set_attribute("chaos.delay_ms", delay_ms)
            span.add_event("chaos.delay", {"delay_ms": delay_ms})
            await asyncio.sleep(delay_ms / 1000)
        await self.app(scope, receive, send)
