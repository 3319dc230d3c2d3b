"""Process and port helpers shared by the embedded servers and the supervisor.

Every child runs in its own process group (session) so that one signal reaches the whole
tree (a Celery worker and its pool, a postmaster and its backends), and so that a Ctrl-C
in the terminal reaches only the supervisor, which then stops children in order.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psutil

if TYPE_CHECKING:
    from otel_lab.runtime.forkserver import ForkServer

LOOPBACK = "127.0.0.1"


class Child(Protocol):
    """A started child: a ``subprocess.Popen``, or a forked ``ForkedProcess``."""

    returncode: int | None

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...


_fork_server: ForkServer | None = None


def current_fork_server() -> ForkServer | None:
    return _fork_server


def use_fork_server(server: ForkServer | None) -> None:
    """Start ``python -m`` children by forking ``server`` from now on (None: exec them)."""
    global _fork_server
    _fork_server = server


class RuntimeFailure(Exception):
    """Base class for errors the CLI reports as a clear message, without a traceback."""


class PortInUseError(RuntimeFailure):
    """A port we must bind is taken; the message names the setting that changes it."""

    def __init__(self, port: int, setting: str | None, host: str = LOOPBACK) -> None:
        self.port, self.setting, self.host = port, setting, host
        owner = port_owner(port)
        who = f" by {owner}" if owner else ""
        fix = f"set {setting} to a free port (e.g. {setting}={free_port(host)})"
        super().__init__(
            f"port {port} on {host} is already in use{who}: "
            f"stop that process or {fix if setting else 'free the port'}"
        )


class ChildFailedError(RuntimeFailure):
    """A child exited, or did not get ready in time; carries the tail of its log."""

    def __init__(self, name: str, reason: str, log_path: Path, lines: int = 20) -> None:
        self.name, self.reason, self.log_path = name, reason, log_path
        self.log_tail = tail(log_path, lines)
        super().__init__(f"{name} {reason} (log: {log_path})")

    def details(self) -> str:
        """The message plus the last lines of the child's log, for a terminal."""
        shown = "\n".join(f"  | {line}" for line in self.log_tail) or "  | (log is empty)"
        return f"{self}\nlast {len(self.log_tail)} lines of {self.log_path}:\n{shown}"


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Distinct ports the kernel considers free right now (each socket is held until all are
    chosen; any can still be taken before its user binds it)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port(host: str = LOOPBACK) -> int:
    """A port the kernel considers free right now (it can be taken before we bind it)."""
    return free_ports(1, host)[0]


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a server could bind ``host:port``.

    SO_REUSEADDR mirrors what uvicorn, PostgreSQL and Valkey set, so a port in TIME_WAIT
    after a restart counts as free while a listening socket still counts as taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_owner(port: int) -> str | None:
    """Best effort 'pid 123 (uvicorn)' for whoever listens on ``port``; None if unknown."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return None
            try:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return None


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 20) -> list[str]:
    """The last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]


def rotate_log(path: Path) -> None:
    """Keep the previous run's log as ``<name>.1`` so each run's log starts empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        path.replace(path.with_name(path.name + ".1"))


def death_signal_prefix(sig: signal.Signals) -> list[str]:
    """``setpriv --pdeathsig`` makes the kernel signal the child when we die, even by SIGKILL.

    setpriv (util-linux) sets the flag and then execs the real program, so it costs
    nothing and avoids ``preexec_fn``, which is unsafe in a process with threads.
    """
    if sys.platform != "linux":
        return []
    setpriv = shutil.which("setpriv")
    if not setpriv:
        return []
    return [setpriv, f"--pdeathsig={sig.name.removeprefix('SIG')}", "--"]


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    death_signal: signal.Signals | None = signal.SIGTERM,
) -> Child:
    """Start ``argv`` in a new session with stdout and stderr appended to ``log_path``.

    ``python -m`` children are forked from the fork server when one is in use (see
    :func:`use_fork_server`): the same process, minus importing what the server has.

    ``death_signal`` is sent to the child if this process dies without stopping it
    (Linux). It is tied to the calling *thread*: spawn from a thread that outlives the child.
    It is armed once setpriv has run, a few milliseconds after spawn; a parent killed
    before then leaves the child running (the supervisor waits for readiness, so in
    practice this window is closed long before anyone could press Ctrl-C).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if _fork_server is not None and user is None and _fork_server.can_fork(argv, env):
        return _fork_server.spawn(
            argv, log_path=log_path, env=env, cwd=cwd, death_signal=death_signal
        )
    prefix = death_signal_prefix(death_signal) if death_signal else []
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            start_new_session=True,
        )


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_process(
    proc: Child,
    *,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 5.0,
) -> int | None:
    """Stop a child started by :func:`spawn` and everything in its process group.

    The leader gets ``sig`` first, so it can stop its own children cleanly (a postmaster
    its backends, Celery its pool); after ``timeout`` the whole group gets SIGKILL.
    Descendants that left the group are killed too. Returns the exit code.
    """
    return finish_stop(proc, begin_stop(proc, sig), timeout)


def begin_stop(proc: Child, sig: signal.Signals = signal.SIGTERM) -> list[psutil.Process]:
    """Send ``sig`` to the leader without waiting; returns its descendants for the sweep."""
    descendants: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        descendants = psutil.Process(proc.pid).children(recursive=True)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    return descendants


def finish_stop(proc: Child, descendants: Sequence[psutil.Process], timeout: float) -> int | None:
    """Wait up to ``timeout`` for the leader, then SIGKILL whatever is left of the group."""
    try:
        proc.wait(timeout=max(timeout, 0.05))
    except subprocess.TimeoutExpired:
        _killpg(proc.pid, signal.SIGKILL)  # start_new_session: the child leads its group
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
    reap_group(proc, descendants)
    return proc.returncode


def reap_group(proc: Child, descendants: Sequence[psutil.Process] = ()) -> None:
    """SIGKILL whatever is left of a finished child's process group."""
    _killpg(proc.pid, signal.SIGKILL)
    alive = [p for p in descendants if p.is_running()]
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=2)
