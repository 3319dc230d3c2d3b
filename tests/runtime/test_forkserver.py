"""The fork server: a forked ``python -m`` child is what an exec'd one would be."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from otel_lab.runtime.forkserver import ForkedProcess, ForkServer
from otel_lab.runtime.procs import spawn, stop_process, use_fork_server

PROBE = """
    import atexit, os, signal, sys, time
    atexit.register(lambda: print("atexit ran", flush=True))
    print("argv", sys.argv[1:], "name", __name__, flush=True)
    print("env", os.environ.get("PROBE_VALUE"), "sid", os.getsid(0) == os.getpid(), flush=True)
    if sys.argv[1] == "exit":
        sys.exit(int(sys.argv[2]))
    if sys.argv[1] == "fail":
        raise RuntimeError("boom")
    print("waiting", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ForkServer]:
    (tmp_path / "probe_child.py").write_text(textwrap.dedent(PROBE))
    server = ForkServer(tmp_path / "forkserver.log", preload=("json",))
    use_fork_server(server)
    try:
        yield server
    finally:
        use_fork_server(None)
        server.close()


def _spawn(tmp_path: Path, *args: str) -> ForkedProcess:
    env = {**os.environ, "PROBE_VALUE": "from-the-spec", "PYTHONUNBUFFERED": "1"}
    child = spawn([sys.executable, "-m", "probe_child", *args], log_path=tmp_path / "child.log",
                  env=env, cwd=tmp_path)  # fmt: skip
    assert isinstance(child, ForkedProcess)  # forked, not exec'd
    return child


def test_exit_code_argv_environment_and_atexit(server: ForkServer, tmp_path: Path) -> None:
    child = _spawn(tmp_path, "exit", "3")
    assert child.wait(timeout=30) == 3
    log = (tmp_path / "child.log").read_text()
    assert "argv ['exit', '3'] name __main__" in log
    assert "env from-the-spec sid True" in log
    assert "atexit ran" in log


def test_uncaught_exception_exits_1_with_its_traceback(server: ForkServer, tmp_path: Path) -> None:
    child = _spawn(tmp_path, "fail")
    assert child.wait(timeout=30) == 1
    assert "RuntimeError: boom" in (tmp_path / "child.log").read_text()


def test_running_child_shows_its_command_and_stops_on_sigterm(
    server: ForkServer, tmp_path: Path
) -> None:
    child = _spawn(tmp_path, "wait")
    deadline = time.monotonic() + 30
    while "waiting" not in (tmp_path / "child.log").read_text():
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.05)
    cmdline = psutil.Process(child.pid).cmdline()
    assert cmdline[:4] == [sys.executable, "-m", "probe_child", "wait"], cmdline
    assert child.poll() is None
    stop_process(child, timeout=10)  # the supervisor's way: signal, wait, sweep the group
    assert child.returncode == -signal.SIGTERM


def test_children_die_with_the_fork_server(server: ForkServer, tmp_path: Path) -> None:
    child = _spawn(tmp_path, "wait")
    pid = child.pid
    server.proc.kill()
    deadline = time.monotonic() + 15
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the child outlived its fork server"
        time.sleep(0.05)
    assert child.wait(timeout=5) < 0


def test_other_commands_are_exec_d(server: ForkServer, tmp_path: Path) -> None:
    child = spawn([sys.executable, "-c", "print('exec')"], log_path=tmp_path / "c.log")
    assert not isinstance(child, ForkedProcess)
    assert child.wait(timeout=30) == 0
    env = {**os.environ, "PYTHONHASHSEED": "123"}  # read only when an interpreter starts
    assert not server.can_fork([sys.executable, "-m", "probe_child"], env)
