"""The fault package's system: one ``otel-lab up`` with steady traffic through the gateway,
shared by the modules that do faults to it (``test_chain_deadline``, ``test_faults``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psutil
import pytest

from otel_lab.runtime.harness import RunningSystem, running_system
from tests.faults.lab import Traffic


@pytest.fixture(scope="package")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningSystem, Traffic]]:
    env = {"PENDING_SWEEP_SECONDS": "2", "OTEL_METRIC_EXPORT_INTERVAL": "1000"}
    with running_system(tmp_path_factory.mktemp("faults"), env=env) as system:
        traffic = Traffic(system).start()
        try:
            yield system, traffic
        finally:
            traffic.stop()
            processes = system.processes()  # the restarted children included
    # Nothing the faults restarted may outlive the system and disturb the modules after
    # this one (a port still taken, a worker still consuming, CPU).
    _, alive = psutil.wait_procs(processes, timeout=15)
    left = []
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            left.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
            proc.kill()
    assert not left, "left behind by the fault suite:\n" + "\n".join(left)
