"""The supervisor with real child processes: readiness, failures, and a clean stop."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
from rich.console import Console

from otel_lab.runtime.procs import ChildFailedError, PortInUseError, free_port
from otel_lab.runtime.supervisor import ChildSpec, PortClaim, Supervisor, http_ok, log_matches
from otel_lab.runtime.supervisor import log as supervisor_log


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def make_supervisor(tmp_path: Path, **kwargs: float) -> tuple[Supervisor, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200)
    return Supervisor(tmp_path / "logs", console=console, **kwargs), buffer


def gone(pids: list[int]) -> bool:
    return not any(psutil.pid_exists(pid) for pid in pids)


def test_http_ready_child_starts_and_stops(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    supervisor, output = make_supervisor(tmp_path)
    with supervisor:
        child = supervisor.start(ChildSpec("web", argv, ready=http_ok(url), ready_timeout=10))
        assert http_ok(url)()
        pid = child.pid
    assert pid is not None and gone([pid])
    assert "ready web" in output.getvalue() and "stopped web" in output.getvalue()


def test_child_that_exits_during_startup_reports_its_log(tmp_path: Path) -> None:
    argv = python("""
        import sys
        print("loading settings")
        print("ImportError: no module named nowhere", flush=True)
        sys.exit(3)
    """)
    supervisor, _ = make_supervisor(tmp_path)
    started = time.monotonic()
    with supervisor, pytest.raises(ChildFailedError) as caught:
        supervisor.start(ChildSpec("broken", argv, ready=lambda: False, ready_timeout=30))
    assert time.monotonic() - started < 5  # no waiting for the timeout
    assert "exited with code 3" in str(caught.value)
    assert caught.value.log_tail[-1] == "ImportError: no module named nowhere"
    assert "loading settings" in caught.value.details()


def test_child_that_never_gets_ready_times_out(tmp_path: Path) -> None:
    argv = python("import time; print('still booting', flush=True); time.sleep(60)")
    supervisor, _ = make_supervisor(tmp_path)
    with supervisor:
        with pytest.raises(ChildFailedError, match="did not get ready within 1 s") as caught:
            supervisor.start(ChildSpec("slow", argv, ready=lambda: False, ready_timeout=1))
        pid = supervisor.running[-1].child.pid
    assert caught.value.log_tail == ["still booting"]
    assert pid is not None and gone([pid])


def test_ready_on_log_line(tmp_path: Path) -> None:
    argv = python("""
        import time
        time.sleep(0.3)
        print("celery@host ready.", flush=True)
        time.sleep(60)
    """)
    supervisor, _ = make_supervisor(tmp_path)
    log = tmp_path / "logs" / "worker.log"
    with supervisor:
        supervisor.start(ChildSpec("worker", argv, ready=log_matches(log, r"\bready\.")))
        assert "ready." in log.read_text()


def test_stop_kills_whole_tree_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    # A parent and a grandchild that both ignore SIGTERM, and a great-grandchild that left
    # the process group (setsid): all must be gone after stop_all, within the grace time.
    argv = python("""
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN)"
        stubborn = f"import signal, time; {ignore}; time.sleep(60)"
        subprocess.Popen([sys.executable, "-c", stubborn])
        sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
        subprocess.Popen(sleeper, start_new_session=True)
        print("children started", flush=True)
        time.sleep(60)
    """)
    supervisor, output = make_supervisor(tmp_path, per_child_grace=1.0)
    log = tmp_path / "logs" / "tree.log"
    supervisor.start(ChildSpec("tree", argv, ready=log_matches(log, "children started")))
    root = psutil.Process(supervisor.running[0].child.pid)
    deadline = time.monotonic() + 10
    while len(root.children(recursive=True)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [root.pid, *(p.pid for p in root.children(recursive=True))]
    assert len(pids) == 3
    started = time.monotonic()
    supervisor.stop_all()
    assert time.monotonic() - started < 4
    assert gone(pids), [p for p in pids if psutil.pid_exists(p)]
    assert "stopped tree (exit code -9)" in output.getvalue()


def test_sigterm_to_supervisor_stops_waiting(tmp_path: Path) -> None:
    supervisor, _ = make_supervisor(tmp_path)
    supervisor.install_signal_handlers()
    try:
        with supervisor:
            supervisor.start(ChildSpec("idle", python("import time; time.sleep(60)")))
            os.kill(os.getpid(), signal.SIGTERM)
            assert supervisor.wait(poll_interval=0.05) == 0
            assert supervisor.stop_requested == signal.SIGTERM
    finally:
        supervisor.restore_signal_handlers()


def test_port_check_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError) as caught:
            Supervisor.check_ports([PortClaim(free_port(), "GATEWAY_PORT"),
                                    PortClaim(port, "API_PORT")])  # fmt: skip
    message = str(caught.value)
    assert f"port {port}" in message and "set API_PORT to a free port" in message
    assert f"pid {os.getpid()}" in message  # who holds it, when we can tell


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    # SIGKILL gives the supervisor no chance to clean up: the kernel's parent-death
    # signal (setpriv --pdeathsig) must stop the children anyway.
    script = f"""
        import sys, time
        from pathlib import Path
        from otel_lab.runtime.supervisor import ChildSpec, Supervisor, log_matches
        logs = Path({str(tmp_path)!r}) / "logs"
        supervisor = Supervisor(logs)
        sleeper = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
        ready = log_matches(logs / "sleeper.log", "up")  # setpriv has armed the signal by then
        child = supervisor.start(ChildSpec("sleeper", sleeper, ready=ready))
        print(child.pid, flush=True)
        time.sleep(60)
    """
    proc = subprocess.Popen(python(script), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        child_pid = int(proc.stdout.readline())
        assert psutil.pid_exists(child_pid)
        proc.kill()
        proc.wait(5)
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(child_pid).wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not psutil.pid_exists(child_pid)


def test_a_child_that_dies_is_started_again_and_the_rest_keeps_running(tmp_path: Path) -> None:
    marker = tmp_path / "crashed-once"
    code = f"""
        import pathlib, sys, time
        marker = pathlib.Path({str(marker)!r})
        print("serving", flush=True)
        if not marker.exists():
            marker.touch()
            time.sleep(0.3)
            print("database connection lost", flush=True)
            sys.exit(3)  # the first run crashes, as a worker can on a broker outage
        time.sleep(60)
    """
    restarted_entries: list[str] = []
    supervisor, output = make_supervisor(tmp_path)
    supervisor.on_restart = lambda entry: restarted_entries.append(entry.name)
    steady = supervisor.start(ChildSpec("steady", python("import time; time.sleep(60)")))
    log = tmp_path / "logs" / "flaky.log"
    flaky = supervisor.start(ChildSpec("flaky", python(code), ready=log_matches(log, "serving")))
    first_pid, steady_pid = flaky.pid, steady.pid
    waiter = threading.Thread(target=supervisor.wait, kwargs={"poll_interval": 0.05})
    waiter.start()
    try:
        deadline = time.monotonic() + 10
        while "ready flaky again" not in output.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        entry = supervisor.running[1]
        assert entry.child.pid != first_pid and entry.child.poll() is None
        assert entry.restarts == 1 and restarted_entries == ["flaky"]
        assert steady.pid == steady_pid and steady.poll() is None, "the rest keeps running"
        text = output.getvalue()
        assert "restarting flaky in 0.25 s (exited with code 3; restart 1 of 5" in text, text
        assert "database connection lost" in text  # the end of its log says why
        assert f"restarted flaky (pid {entry.child.pid}" in text
        assert "database connection lost" in log.read_text(), "the log continues, not rotated"
    finally:
        supervisor.stop_requested = signal.SIGTERM
        waiter.join(5)
        supervisor.stop_all()
    assert gone([entry.child.pid, steady_pid])


def test_a_child_that_keeps_crashing_exhausts_its_budget_and_stops_the_system(
    tmp_path: Path,
) -> None:
    supervisor, output = make_supervisor(tmp_path)
    supervisor.restart_budget, supervisor.backoff = 3, (0.01, 0.05)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    supervisor_log.addHandler(handler)
    try:
        steady = supervisor.start(ChildSpec("steady", python("import time; time.sleep(60)")))
        supervisor.start(ChildSpec("fragile", python("import time; time.sleep(0.2)")))
        started = time.monotonic()
        assert supervisor.wait(poll_interval=0.02) == 1
    finally:
        supervisor_log.removeHandler(handler)
    assert time.monotonic() - started < 10
    assert steady.poll() is None, "the budget of one child does not stop the others early"
    supervisor.stop_all()
    text = output.getvalue()
    assert text.count("restarting fragile") == 3 and "restart 3 of 3" in text
    assert "fragile crashed 4 times within 60 s (restart budget 3): stopping everything" in text
    assert "stopped steady" in text
    messages = [r.getMessage() for r in records]
    assert messages.count("child_restarted") == 3, messages
    assert messages[-1] == "child_restart_budget_exhausted"
    assert {r.child for r in records} == {"fragile"}  # type: ignore[attr-defined]


def test_a_child_that_never_gets_ready_again_exhausts_its_budget_however_slowly(
    tmp_path: Path,
) -> None:
    """A child that served once, then crashed, and whose every restart dies before it gets
    ready, stops the system after its budget of restarts in a row, even though its crashes
    come further apart than the restart window (a console slow to start, restarted every
    30 s, was restarted for ever)."""
    runs, ready_file = tmp_path / "runs", tmp_path / "ready"
    code = f"""
        import os, pathlib, sys, time
        runs, ready = pathlib.Path({str(runs)!r}), pathlib.Path({str(ready_file)!r})
        n = int(runs.read_text()) if runs.exists() else 0
        runs.write_text(str(n + 1))
        if n == 0:  # the first run serves, then crashes
            ready.write_text(str(os.getpid()))
            time.sleep(0.3)
            sys.exit(3)
        print("still migrating the store", flush=True)
        time.sleep(0.6)  # each restart dies before it is ready, further apart than the window
        sys.exit(4)
    """
    supervisor, output = make_supervisor(tmp_path, restart_window=0.5)
    supervisor.restart_budget, supervisor.backoff = 3, (0.01, 0.05)

    def served() -> bool:  # this very process wrote its pid: it got ready
        pid = supervisor.running[-1].child.pid
        return ready_file.exists() and ready_file.read_text() == str(pid)

    steady = supervisor.start(ChildSpec("steady", python("import time; time.sleep(60)")))
    supervisor.start(ChildSpec("slow", python(code), ready=served, ready_timeout=10))
    # A bound for the old behaviour (restarted for ever), not a timing assertion.
    timer = threading.Timer(30, lambda: setattr(supervisor, "stop_requested", signal.SIGTERM))
    timer.start()
    try:
        assert supervisor.wait(poll_interval=0.02) == 1, output.getvalue()
    finally:
        timer.cancel()
    assert steady.poll() is None, "the budget of one child does not stop the others early"
    supervisor.stop_all()
    text = output.getvalue()
    assert int(runs.read_text()) == 4, "the first run and 3 restarts"
    assert "restart 3 of 3 in a row that has not got ready yet" in text, text
    assert (
        "slow did not get ready again after 3 restarts in a row (restart budget 3): "
        "stopping everything" in text
    ), text
    assert "still migrating the store" in text  # the end of its log says why
