"""Fixtures for the runtime tests (the session servers come from the runtime's plugin)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from otel_lab.runtime.harness import up_environment
from otel_lab.runtime.pytest_plugin import embedded_data_dir, embedded_kv, embedded_pg

__all__ = ["embedded_data_dir", "embedded_kv", "embedded_pg"]  # session fixtures, re-exported


@pytest.fixture
def up_env(tmp_path: Path) -> dict[str, str]:
    """Environment for `otel-lab up`: embedded mode, a temp data dir, every port free."""
    return up_environment(tmp_path / "data")


def run_up_to_exit(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `otel-lab up` expecting it to stop by itself (a start-up failure)."""
    return subprocess.run(
        [sys.executable, "-m", "otel_lab.runtime.cli", "up", "--no-traffic"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
