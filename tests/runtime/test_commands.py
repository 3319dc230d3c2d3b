"""`otel-lab logs`, `open`, `stop`, `reset` and `--version` against a real `otel-lab up`."""

from __future__ import annotations

import select
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from otel_lab import __version__, faults
from otel_lab.runtime.harness import running_system


def otel_lab(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_lab.runtime.cli", *args],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_version(up_env: dict[str, str]) -> None:
    done = otel_lab("--version", env=up_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"otel-lab {__version__}"


def test_fault_on_off_switch_the_flag_file_the_settings_name(
    up_env: dict[str, str], tmp_path: Path
) -> None:
    """`otel-lab fault`: the data dir's flag file (OTEL_LAB_DATA_DIR), or the one
    FLAGD_OFFLINE_FLAG_SOURCE_PATH names (as `otel-lab up` gives its children), or --file."""
    env = {k: v for k, v in up_env.items() if k != faults.PATH_ENV}
    in_data_dir = Path(env["OTEL_LAB_DATA_DIR"]) / faults.FILE_NAME
    done = otel_lab("fault", "on", "slow-database", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "slow-database on; active: slow-database"
    assert faults.read_enabled(in_data_dir) == {"slow-database"}
    listed = otel_lab("fault", "list", env=env).stdout.splitlines()
    assert [line.split()[:2] for line in listed if line.startswith("ON")] == [
        ["ON", "slow-database"]
    ]

    named = tmp_path / "named.flagd.json"
    done = otel_lab("fault", "on", "cache-outage", env={**env, faults.PATH_ENV: str(named)})
    assert done.returncode == 0, done.stderr
    assert faults.read_enabled(named) == {"cache-outage"}
    assert faults.read_enabled(in_data_dir) == {"slow-database"}  # untouched

    done = otel_lab("fault", "off", "slow-database", env=env)
    assert done.stdout.strip() == "slow-database off; active: none"
    assert faults.read_enabled(in_data_dir) == set()
    done = otel_lab("fault", "off", "cache-outage", "--file", str(named), env=env)
    assert done.returncode == 0, done.stderr
    assert faults.read_enabled(named) == set()
    done = otel_lab("fault", "on", "nosuch", env=env)
    assert done.returncode == 2 and "unknown fault 'nosuch'" in done.stderr


def _follow_until(proc: subprocess.Popen[str], needle: str, deadline: float) -> list[str]:
    """Lines `logs -f` printed, up to the first that contains ``needle``."""
    assert proc.stdout is not None
    seen: list[str] = []
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if not ready:
            continue
        line = proc.stdout.readline()
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"`logs -f` never printed {needle!r}; printed: {seen[-5:]}")


@pytest.mark.timeout(360)  # a whole `otel-lab up`, then each command in turn
def test_logs_open_stop_reset(up_env: dict[str, str]) -> None:
    data_dir = Path(up_env["OTEL_LAB_DATA_DIR"])
    with running_system(data_dir, env=up_env, timeout=180) as system:
        # logs NAME: the end of that child's log file, as it is.
        gateway_log = data_dir / "logs" / "gateway.log"
        done = otel_lab("logs", "gateway", "-n", "5", env=up_env)
        assert done.returncode == 0, done.stderr
        shown = done.stdout.splitlines()
        lines = gateway_log.read_text().splitlines()  # may have grown since
        assert len(shown) == 5
        assert any(lines[i : i + 5] == shown for i in range(len(lines) - 4)), shown

        # logs: every child's, each line named.
        done = otel_lab("logs", "-n", "3", env=up_env)
        assert done.returncode == 0, done.stderr
        names = {line.split(" | ", 1)[0] for line in done.stdout.splitlines()}
        assert {"postgres", "valkey", "gateway", "api", "worker", "console"} <= names, names

        done = otel_lab("logs", "nosuch", env=up_env)
        assert done.returncode == 1 and "gateway" in done.stderr

        # logs -f: a request's log line shows up as it is written.
        follower = subprocess.Popen(
            [sys.executable, "-m", "otel_lab.runtime.cli", "logs", "api", "-f", "-n", "1"],
            env=up_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            _follow_until(follower, "", time.monotonic() + 60)  # it has read the file's end
            marker = f"follow-{time.time_ns()}"
            response = httpx.get(
                f"{system.url('api')}/items/999999999", headers={"X-Request-ID": marker}
            )
            assert response.status_code == 404
            _follow_until(follower, marker, time.monotonic() + 20)
        finally:
            follower.terminate()
            follower.wait(10)

        # open --print: the console's URL, and a service's API docs.
        done = otel_lab("open", "--print", env=up_env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == system.url("console")
        done = otel_lab("open", "api", "--print", env=up_env)
        docs = done.stdout.strip()
        assert docs == system.url("api").rstrip("/") + "/docs"
        assert httpx.get(docs).status_code == 200

        # reset refuses while the system runs.
        done = otel_lab("reset", "--yes", env=up_env)
        assert done.returncode == 1 and "stop" in done.stderr
        assert data_dir.exists()

        # stop: the same clean shutdown as Ctrl-C, nothing left running.
        tree = system.processes()
        done = otel_lab("stop", env=up_env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert system.process.wait(30) == 0, system.output()
        survivors = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not survivors, [(p.pid, p.cmdline()) for p in survivors]

    done = otel_lab("stop", env=up_env)
    assert done.returncode == 0 and "no `otel-lab up` is running" in done.stdout
    done = otel_lab("reset", "--yes", env=up_env)
    assert done.returncode == 0, done.stderr
    assert not data_dir.exists()
