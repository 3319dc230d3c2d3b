"""The fault suite: each fault of issue 9's table done for real to a running ``otel-lab up``
during steady traffic through the gateway.

For every fault: every request is answered, within 3 s (a hung dependency within the 2 s
budget, give or take the machine); a request that fails is a 5xx whose JSON body names the
dependency, and only where the fault may fail it (a cached read or a write does not need
Valkey; nothing needs the console); a killed child is restarted by the supervisor and the
rest keeps serving; the traffic is clean again within seconds; and every write answered 2xx
is in PostgreSQL and ends enriched. ``scripts/faults.py`` prints the same figures as a table
(docs/reliability.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otel_lab.runtime.harness import RunningSystem, running_system
from tests.faults.lab import FAULTS, Fault, Traffic, run_fault

RECOVER_SECONDS = 15.0
"""Clean traffic again this soon after a fault ends (a killed child: once it serves again;
the gateway's breaker for a service that was down stays open up to 10 s)."""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningSystem, Traffic]]:
    env = {"PENDING_SWEEP_SECONDS": "2", "OTEL_METRIC_EXPORT_INTERVAL": "1000"}
    with running_system(tmp_path_factory.mktemp("faults"), env=env) as system:
        traffic = Traffic(system).start()
        try:
            yield system, traffic
        finally:
            traffic.stop()


# Known gap, owned by issue 10 (services/downstream.py): the gateway retries an idempotent
# request that got a 503 up to 3 times, so a GET behind a hung database answers after
# 3 x 1.5 s instead of 1.5 s. Not strict: a retry that lands after the fault passes.
GATEWAY_RETRIES_503 = pytest.mark.xfail(
    reason="issue 10: the gateway retries 503 answers from a hung database past the 3 s bound"
)


def _param(fault: Fault) -> object:
    marks = [GATEWAY_RETRIES_503] if fault.name == "PostgreSQL hung (SIGSTOP)" else []
    return pytest.param(fault, id=fault.name.split(" (")[0], marks=marks)


@pytest.mark.parametrize("fault", [_param(f) for f in FAULTS])
def test_fault_kept_serving_came_back_nothing_lost(
    lab: tuple[RunningSystem, Traffic], fault: Fault
) -> None:
    system, traffic = lab
    outcome = run_fault(system, traffic, fault)
    summary = f"{fault.name}: {dict(outcome.statuses())}"
    assert outcome.during, f"no traffic during the fault: {summary}"
    assert outcome.answered == len(outcome.during), summary
    assert not outcome.violations(), f"{summary}\n" + "\n".join(outcome.violations()[:20])
    assert outcome.time_to_recover <= RECOVER_SECONDS, summary
    if fault.how == "kill":
        assert outcome.restarts == 1, f"{fault.child} restarted {outcome.restarts} times"
    assert not outcome.lost, f"acknowledged writes lost: {outcome.lost}"
    assert not outcome.not_enriched, f"never enriched: {outcome.not_enriched}"
    assert system.process.poll() is None, system.output()[-3000:]
