"""Send the mix with bounded concurrency; keep per-scenario latencies for the summary."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from otel_lab.loadgen.scenarios import SCENARIOS, Memory, Scenario, pick


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    unexpected: int = 0
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Report:
    elapsed: float
    stats: dict[str, Stats]

    @property
    def total(self) -> int:
        return sum(len(s.latencies) for s in self.stats.values())


@dataclass
class LoadPlan:
    host: str
    runs: int = 10
    concurrency: int = 3
    delay: float = 0.5
    duration: float | None = None  # seconds; when set, runs until it elapses instead
    scenarios: tuple[Scenario, ...] = SCENARIOS
    timeout: float = 10.0


async def run(plan: LoadPlan, on_request: Callable[[], None] | None = None) -> Report:
    """A run is one round of ``concurrency`` requests; ``delay`` seconds separate rounds."""
    stats: dict[str, Stats] = defaultdict(Stats)
    memory = Memory()
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=plan.concurrency * 2)

    async def one(client: httpx.AsyncClient, scenario: Scenario) -> None:
        t0 = time.perf_counter()
        try:
            response = await scenario.call(client, memory)
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        entry = stats[scenario.name]
        entry.latencies.append(time.perf_counter() - t0)
        entry.statuses[status] += 1
        if status not in scenario.expected:
            entry.unexpected += 1
        if on_request is not None:
            on_request()

    async with httpx.AsyncClient(base_url=plan.host, timeout=plan.timeout, limits=limits) as client:
        run_index = 0
        while True:
            if plan.duration is not None:
                if time.perf_counter() - started >= plan.duration:
                    break
            elif run_index >= plan.runs:
                break
            await asyncio.gather(
                *(one(client, pick(plan.scenarios)) for _ in range(plan.concurrency))
            )
            run_index += 1
            if plan.delay:
                await asyncio.sleep(plan.delay)
    return Report(elapsed=time.perf_counter() - started, stats=dict(stats))
