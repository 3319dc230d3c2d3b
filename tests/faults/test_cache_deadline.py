"""The api's cache calls under the request's deadline: a real Valkey, hung for real (SIGSTOP).

The cache's own timeout is 0.5 s; a request with less left than that used to wait the whole
0.5 s for a hung cache anyway, and then charge the cache's breaker for a timeout that was
the request's.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from otel_lab.cache import CACHE_TIMEOUT_SECONDS, create_async_redis
from otel_lab.runtime.embedded import embedded_valkey
from otel_lab.services import deadline
from otel_lab.services.api import item_service
from otel_lab.settings import Settings
from otel_lab.telemetry import Telemetry
from tests.faults.lab import frozen

BUDGET = 0.1  # what the request has left: a fifth of the cache's own timeout


def test_a_cache_call_gets_no_more_than_the_request_has_left(tmp_path: Path) -> None:
    with embedded_valkey(tmp_path) as valkey:
        assert valkey.pid is not None
        settings = Settings.model_validate({"REDIS_URL": valkey.url})
        breaker = item_service.cache_breaker

        async def scenario() -> None:
            client = create_async_redis(settings, Telemetry(enabled=False))
            try:
                assert await client.set("k", "v") and await client.get("k") == "v"
                failures = breaker._failures
                with frozen(valkey.pid):
                    # A read the answer needs: 504 naming the cache, within the budget.
                    with deadline.within(BUDGET):
                        started = time.monotonic()
                        with pytest.raises(deadline.DeadlineExceededError) as cut:
                            await item_service._cached(lambda: client.get("k"), "cache.unavailable")
                        waited = time.monotonic() - started
                    assert cut.value.dependency == "cache"
                    assert waited < CACHE_TIMEOUT_SECONDS, waited
                    # A fill (the answer is already there): given up quietly.
                    with deadline.within(BUDGET):
                        filled = await item_service._cached(
                            lambda: client.set("k", "w"), "cache.fill_failed", needed=False
                        )
                    assert filled == (False, None)
                    # The request's deadline cut them, not a cache failure: not charged.
                    assert breaker._failures == failures
                    # Without a request's deadline the cache's own timeout still applies.
                    assert await item_service._cached(lambda: client.get("k"), "x") == (False, None)
                    assert breaker._failures == failures + 1
                breaker.record_success()
                assert await client.get("k") == "v"  # the connection cut was replaced
            finally:
                breaker.record_success()
                await client.aclose()

        asyncio.run(scenario())
