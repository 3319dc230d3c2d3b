"""Locust, for those who prefer it: the mix of ``otel-lab load`` (its scenario list,
``otel_lab.loadgen.scenarios``, with the same weights), through the gateway.

    .venv/bin/locust -f scripts/locustfile.py --host http://127.0.0.1:8080

Run it as its own process: importing locust patches the standard library (gevent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from locust import HttpUser, between

from otel_lab.loadgen.scenarios import SCENARIOS, Memory, Scenario


def _task(scenario: Scenario) -> Callable[[OtelLabUser], None]:
    """A Locust task sending the scenario's requests; its expected statuses count as success
    (the 404s and 500s in the mix are on purpose)."""

    def run(user: OtelLabUser) -> None:
        for request in scenario.steps(user.memory):
            with user.client.request(
                request.method, request.path, json=request.json, name=scenario.name,
                catch_response=True,
            ) as response:  # fmt: skip
                if response.status_code not in scenario.expected:
                    response.failure(f"unexpected status {response.status_code}")
                    return
                response.success()
                user.memory.record(request, response.status_code, response.json)

    run.__name__ = scenario.name
    return run


class OtelLabUser(HttpUser):
    wait_time = between(0.2, 1.0)
    tasks: ClassVar = {_task(scenario): scenario.weight for scenario in SCENARIOS}

    def on_start(self) -> None:
        self.memory = Memory()
