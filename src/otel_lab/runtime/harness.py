"""Run the whole system for tests: ``otel-lab up`` as a real process on free ports.

::

    with running_system(tmp_path, env={"OTEL_BSP_SCHEDULE_DELAY": "200"}) as system:
        httpx.get(system.url("api") + "/health")
        system.redis_url, system.database_url, system.log("api")

The same command a developer runs, so the tests cover the runtime too. Every ``*_PORT``
setting gets a free port, so a test run never collides with a running ``make demo``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from otel_lab.jsontypes import JSONObject
from otel_lab.runtime.cli import READY_LINE
from otel_lab.runtime.commands import RUN_FILE, ChildRow, RunState
from otel_lab.runtime.procs import free_ports
from otel_lab.settings import Settings


def port_variables() -> list[str]:
    """Every ``*_PORT`` environment variable the settings know."""
    return [
        field.alias or name.upper()
        for name, field in Settings.model_fields.items()
        if name.endswith("_port")
    ]


def up_environment(data_dir: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, embedded mode, free ports, ``data_dir``; then ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    names = port_variables()
    base.update(zip(names, map(str, free_ports(len(names))), strict=True))
    base["OTEL_LAB_DATA_DIR"] = str(data_dir)
    base["COLUMNS"] = "200"
    base.update(env or {})
    return base


@dataclass
class RunningSystem:
    """A running ``otel-lab up``: its URLs, pids and logs, read from its run file."""

    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    output_path: Path
    database_url: str = ""
    redis_url: str = ""
    children: dict[str, ChildRow] = field(default_factory=dict)

    @property
    def urls(self) -> dict[str, str]:
        """Base URL of every running child that has one, by name."""
        return {name: str(c["url"]) for name, c in self.children.items() if c.get("url")}

    def url(self, name: str) -> str:
        """Base URL of a child (``api``, ``gateway``, ``console`` for its UI and API, ...)."""
        try:
            url = str(self.children[name]["url"])
        except KeyError:
            raise KeyError(
                f"{name} is not running (running: {', '.join(self.children)}); "
                "see the skipped lines in the output:\n" + self.output()
            ) from None
        return url

    def pid(self, name: str) -> int:
        return int(self.children[name]["pid"])

    def refresh(self) -> None:
        """Read the run file again: the supervisor rewrites it when it restarts a child."""
        state: RunState = json.loads((self.data_dir / RUN_FILE).read_text())
        self.children = {child["name"]: child for child in state["children"]}
        self.database_url = state["database_url"]
        self.redis_url = state["redis_url"]

    def restarts(self, name: str) -> int:
        """How often the supervisor has restarted ``name`` (from the run file)."""
        self.refresh()
        return int(self.children[name].get("restarts", 0))

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 60.0) -> int:
        """Block until ``name`` runs again under a new pid; that pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):  # rewritten at this moment
                self.refresh()
                pid = self.pid(name)
                if pid != old_pid and psutil.pid_exists(pid):
                    return pid
            time.sleep(0.1)
        raise AssertionError(f"{name} (pid {old_pid}) not restarted within {timeout} s:\n"
                             + self.output()[-3000:])  # fmt: skip

    def log_path(self, name: str) -> Path:
        return self.data_dir / "logs" / f"{name}.log"

    def log(self, name: str) -> str:
        """What a child has logged so far in this run."""
        return self.log_path(name).read_text(errors="replace")

    def log_records(self, name: str) -> list[JSONObject]:
        """The JSON records a child has logged so far. The log is still being written, so a
        last line without its newline yet is left for the next call, not parsed half-written."""
        text = self.log(name)
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line.startswith("{")]

    def output(self) -> str:
        """What ``otel-lab up`` printed (progress, the table, errors)."""
        return self.output_path.read_text(errors="replace")

    def processes(self) -> list[psutil.Process]:
        """``otel-lab up`` and every process under it (servers, services, their children)."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, as Ctrl-C would; SIGKILL after ``timeout`` (its children follow it)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start_system(
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = ("--no-traffic",),
    timeout: float = 120.0,
) -> RunningSystem:
    """Start ``otel-lab up`` and return once it printed its table; raise if it fails."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    environment = up_environment(data_dir, env)
    output_path = data_dir / "up.out"
    with output_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "otel_lab.runtime.cli", "up", *args],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    system = RunningSystem(data_dir, environment, process, output_path)
    deadline = time.monotonic() + timeout
    while READY_LINE not in system.output():
        if process.poll() is not None:
            raise RuntimeError(f"otel-lab up exited with {process.returncode}:\n{system.output()}")
        if time.monotonic() > deadline:
            system.stop()
            raise RuntimeError(f"otel-lab up not ready within {timeout} s:\n{system.output()}")
        time.sleep(0.1)
    system.refresh()
    return system


@contextlib.contextmanager
def running_system(
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = ("--no-traffic",),
    timeout: float = 120.0,
) -> Iterator[RunningSystem]:
    """:func:`start_system` for the duration of a ``with`` block."""
    system = start_system(data_dir, env=env, args=args, timeout=timeout)
    try:
        yield system
    finally:
        system.stop()
