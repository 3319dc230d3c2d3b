"""Start child processes in order, wait until each is ready, restart those that crash,
stop them all in reverse.

A child that fails to *start* stops everything at once with the end of its log: that is a
configuration error, and a developer should see it instead of a half-working system. A
child that dies *later* (a service, the worker, the console, PostgreSQL, Valkey) is started
again with the same data, ports and settings after a short backoff, while the rest keeps
serving; each restart is a line in the output, a ``child_restarted`` log record and a count
(see :attr:`Running.restarts`). Only a signal, or a child that exhausts its restart budget,
stops the system, in reverse start order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol

import psutil
from rich.console import Console

from otel_lab.runtime.procs import (
    LOOPBACK,
    Child,
    ChildFailedError,
    PortInUseError,
    RuntimeFailure,
    begin_stop,
    finish_stop,
    port_is_free,
    reap_group,
    rotate_log,
    spawn,
    stop_process,
    tail,
    tcp_open,
)

ReadyCheck = Callable[[], bool]
"""Returns True once the child serves requests. Must return quickly (use short timeouts)."""


class ShutdownRequested(RuntimeFailure):
    """Ctrl-C or SIGTERM arrived while we were starting children."""


# -- readiness checks ---------------------------------------------------------------------


def http_ok(url: str, timeout: float = 1.0) -> ReadyCheck:
    """Ready when ``GET url`` answers 200."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    return check


def port_open(port: int, host: str = LOOPBACK) -> ReadyCheck:
    """Ready when something accepts TCP connections on ``host:port``."""
    return lambda: tcp_open(host, port)


def log_matches(path: Path, pattern: str) -> ReadyCheck:
    """Ready when the child's log (this run's, see ``rotate_log``) matches ``pattern``."""
    regex = re.compile(pattern.encode())

    def check() -> bool:
        try:
            return regex.search(path.read_bytes()) is not None
        except OSError:
            return False

    return check


def any_of(*checks: ReadyCheck) -> ReadyCheck:
    return lambda: any(check() for check in checks)


def every(seconds: float, check: ReadyCheck) -> ReadyCheck:
    """Run an expensive check at most once per ``seconds``, the first time ``seconds`` after
    this call (a fallback for a cheaper check that usually answers first)."""
    last = time.monotonic()

    def limited() -> bool:
        nonlocal last
        now = time.monotonic()
        if now - last < seconds:
            return False
        last = now
        return check()

    return limited


RESTART_BUDGET = 5
"""Restarts of one child within :data:`RESTART_WINDOW` before its next crash stops the
system; also the restarts in a row that may fail to get the child ready (crashed or too slow
before it served) however far apart they are: a child that cannot start again (a console
that needs 40 s to start with a 30 s readiness timeout, a service whose port another
process took) would otherwise be restarted for ever, a minute apart, while the system looks
up."""
RESTART_WINDOW = 60.0
BACKOFF = (0.25, 8.0)
"""The first restart waits 0.25 s, each further one twice as long while the crashes come
within the window or the restarts keep failing, at most 8 s."""

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())  # records go where the CLI sends them (runtime.report)


# -- what the supervisor runs -------------------------------------------------------------


@dataclass(frozen=True)
class PortClaim:
    """A port a child will bind, and the setting that changes it (for the error message)."""

    port: int
    setting: str
    host: str = LOOPBACK


@dataclass
class ChildSpec:
    """One supervised process. ``env`` is added to this process's environment."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    ready: ReadyCheck | None = None  # None: ready as soon as it started
    ready_timeout: float = 30.0
    ports: Sequence[PortClaim] = ()
    url: str | None = None  # shown in the table
    cwd: Path | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    # Children (of the same start) that must be ready before this one starts.
    after: Sequence[str] = ()


class Managed(Protocol):
    """What the supervisor needs of a running child (a spawned spec or an embedded server)."""

    log_path: Path

    @property
    def name(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def ready_timeout(self) -> float: ...

    def poll(self) -> int | None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def respawn(self) -> None:
        """Start again after a crash, with the same data, ports and settings."""

    def ready(self) -> bool:
        """True once a respawned child serves again (checked without blocking)."""


@dataclass
class Startup:
    """Children being started by one :meth:`Supervisor.launch`, and those still waiting."""

    pending: list[ChildSpec]
    started: float  # time.monotonic() of the launch
    children: list[ManagedProcess] = field(default_factory=list)
    ready: set[str] = field(default_factory=set)


@dataclass
class Running:
    """A started child, as listed in the table, and its restart history."""

    child: Managed
    url: str | None = None
    group: int = 0  # start group: stopped in reverse order of groups
    restarts: int = 0  # since `up` started: the count `otel-lab status` and the console show
    recent: list[float] = field(default_factory=list)  # crash times within RESTART_WINDOW
    failed_starts: int = 0  # restarts in a row that ended before the child got ready
    restart_due: float | None = None  # crashed: respawn at this time.monotonic()
    respawned: float | None = None  # respawned at this time, not ready yet

    @property
    def name(self) -> str:
        return self.child.name


class ManagedProcess:
    """A child process started from a :class:`ChildSpec`."""

    def __init__(self, spec: ChildSpec, log_path: Path) -> None:
        self.spec, self.name, self.log_path = spec, spec.name, log_path
        rotate_log(log_path)
        self.proc: Child = self._spawn()

    def _spawn(self) -> Child:
        return spawn(
            self.spec.argv,
            log_path=self.log_path,
            env={**os.environ, **self.spec.env},
            cwd=self.spec.cwd,
            death_signal=self.spec.stop_signal,
        )

    def respawn(self) -> None:
        """Start the same command again; its log continues below the crash."""
        reap_group(self.proc)  # what the crashed leader left in its process group
        self.proc = self._spawn()

    def ready(self) -> bool:
        return self.spec.ready is None or self.spec.ready()

    @property
    def ready_timeout(self) -> float:
        return self.spec.ready_timeout

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self, timeout: float = 5.0) -> None:
        stop_process(self.proc, sig=self.spec.stop_signal, timeout=timeout)

    def begin_stop(self) -> list[psutil.Process]:
        return begin_stop(self.proc, self.spec.stop_signal)

    def finish_stop(self, descendants: list[psutil.Process], timeout: float) -> None:
        finish_stop(self.proc, descendants, timeout)


class Supervisor:
    """Owns the children; use as a context manager so they are stopped on any exit.

    ``stop_timeout`` bounds the whole shutdown: each child gets SIGTERM (or its own stop
    signal) and what is left of the shared budget before SIGKILL.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        console: Console | None = None,
        stop_timeout: float = 10.0,
        per_child_grace: float = 5.0,
        restart_budget: int = RESTART_BUDGET,
        backoff: tuple[float, float] = BACKOFF,
        restart_window: float = RESTART_WINDOW,
        on_restart: Callable[[Running], None] | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.console = console or Console(stderr=True)
        self.stop_timeout = stop_timeout
        self.per_child_grace = per_child_grace
        self.restart_budget = restart_budget
        self.backoff = backoff
        self.restart_window = restart_window
        self.on_restart = on_restart  # e.g. rewrite the run file with the new pid
        self.running: list[Running] = []
        self.stop_requested: signal.Signals | None = None
        self._group = 0
        self._previous_handlers: dict[int, object] = {}

    # -- signals ----------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """Ctrl-C, SIGTERM and SIGHUP ask for an orderly shutdown.

        The handler only sets a flag: every wait loop checks it within 0.1 s, and the
        shutdown itself is bounded by ``stop_timeout``, so a second Ctrl-C is not needed.
        """
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_requested is None:
            self.stop_requested = signal.Signals(signum)

    def _check_stop(self) -> None:
        if self.stop_requested is not None:
            raise ShutdownRequested(f"received {self.stop_requested.name}")

    # -- starting ---------------------------------------------------------------------------

    def say(self, message: str) -> None:
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", highlight=False)

    @staticmethod
    def check_ports(claims: Sequence[PortClaim]) -> None:
        """Fail fast, before anything starts, if a port is taken or claimed twice."""
        seen: dict[int, str] = {}
        for claim in claims:
            if claim.port in seen and seen[claim.port] != claim.setting:
                raise RuntimeFailure(
                    f"{claim.setting} and {seen[claim.port]} are both {claim.port}: "
                    "give each a port of its own"
                )
            seen[claim.port] = claim.setting
            if not port_is_free(claim.port, claim.host):
                raise PortInUseError(claim.port, claim.setting, claim.host)

    def adopt(self, child: Managed, url: str | None = None) -> None:
        """Track an already started child (an embedded server) so it is stopped with the rest."""
        self._group += 1
        self.running.append(Running(child, url, self._group))

    def start(self, spec: ChildSpec) -> ManagedProcess:
        """Start ``spec`` and block until it is ready; raise ChildFailedError if it is not."""
        return self.start_group([spec])[0]

    def start_group(self, specs: Sequence[ChildSpec]) -> list[ManagedProcess]:
        """Start children together and wait until all are ready (see :meth:`launch`)."""
        return self.wait_ready(self.launch(specs))

    def launch(self, specs: Sequence[ChildSpec]) -> Startup:
        """Start every child whose ``after`` is met, without waiting; :meth:`wait_ready`
        starts the others as the children they wait for get ready.

        On two cores, Python services spend their start-up importing: starting each as soon
        as what it needs is ready, side by side with the rest (and with whatever the caller
        does before waiting, such as starting PostgreSQL), keeps both cores busy.
        """
        self._check_stop()
        self.check_ports([claim for spec in specs for claim in spec.ports])
        startup = Startup(list(specs), time.monotonic())
        self._launch_due(startup)
        return startup

    def _launch_due(self, startup: Startup) -> None:
        due = [s for s in startup.pending if set(s.after) <= startup.ready]
        if not due:
            return
        self._group += 1  # stopped in reverse: a child before what it waited for
        for spec in due:
            startup.pending.remove(spec)
            self.say(f"starting [bold]{spec.name}[/] ...")
            child = ManagedProcess(spec, self.log_dir / f"{spec.name}.log")
            self.running.append(Running(child, spec.url, self._group))
            startup.children.append(child)

    def wait_ready(self, startup: Startup) -> list[ManagedProcess]:
        """Block until every child of ``startup`` is ready; raise ChildFailedError if one
        exits or misses its ``ready_timeout`` (counted from :meth:`launch`)."""
        started = startup.started
        while True:
            for child in startup.children:
                spec = child.spec
                if spec.name in startup.ready:
                    continue
                code = child.poll()
                if code is not None:
                    raise ChildFailedError(
                        spec.name, f"exited with code {code} during start-up", child.log_path
                    )
                if spec.ready is None or spec.ready():
                    startup.ready.add(spec.name)
                    self.say(
                        f"[green]ready[/] [bold]{spec.name}[/] in "
                        f"{time.monotonic() - started:.1f} s (pid {child.pid})"
                    )
                elif time.monotonic() > started + spec.ready_timeout:
                    raise ChildFailedError(
                        spec.name,
                        f"did not get ready within {spec.ready_timeout:.0f} s",
                        child.log_path,
                    )
            self._launch_due(startup)
            if len(startup.ready) == len(startup.children) and not startup.pending:
                return startup.children
            if len(startup.ready) == len(startup.children):
                names = ", ".join(s.name for s in startup.pending)
                raise RuntimeFailure(f"{names}: waiting for children that are not started")
            self._check_stop()
            time.sleep(0.1)

    def run_task(self, spec: ChildSpec, timeout: float = 120.0) -> None:
        """Run a one-shot step (migrations) to completion; raise if it fails."""
        self._check_stop()
        started = time.monotonic()
        self.say(f"running [bold]{spec.name}[/] ...")
        child = ManagedProcess(spec, self.log_dir / f"{spec.name}.log")
        deadline = started + timeout
        while child.poll() is None:
            if time.monotonic() > deadline or self.stop_requested is not None:
                child.stop(timeout=2)
                self._check_stop()
                raise ChildFailedError(spec.name, f"took longer than {timeout:.0f} s",
                                       child.log_path)  # fmt: skip
            time.sleep(0.05)
        stop_process(child.proc, timeout=0)
        if child.proc.returncode != 0:
            raise ChildFailedError(spec.name, f"failed with code {child.proc.returncode}",
                                   child.log_path)  # fmt: skip
        self.say(f"[green]done[/] [bold]{spec.name}[/] in {time.monotonic() - started:.1f} s")

    # -- running ----------------------------------------------------------------------------

    def _exhausted(self, entry: Running) -> str | None:
        """Why the child's restart budget is used up (None: it is not)."""
        window, budget = self.restart_window, self.restart_budget
        if len(entry.recent) >= budget:
            return f"crashed {len(entry.recent) + 1} times within {window:.0f} s"
        if entry.failed_starts >= budget:
            return f"did not get ready again after {entry.failed_starts} restarts in a row"
        return None

    def _crashed(self, entry: Running, reason: str) -> bool:
        """Schedule a restart after a backoff; False when the child has used its budget.

        A crash before a restarted child got ready is a failed start: those count in a row,
        however far apart (see :data:`RESTART_BUDGET`)."""
        now = time.monotonic()
        entry.recent = [t for t in entry.recent if now - t < self.restart_window]
        if entry.respawned is not None:
            entry.failed_starts += 1
        failure = ChildFailedError(entry.name, reason, entry.child.log_path, lines=5)
        fields = {"child": entry.name, "reason": reason, "restarts": entry.restarts}
        if (exhausted := self._exhausted(entry)) is not None:
            log.error("child_restart_budget_exhausted", extra={**fields, "why": exhausted})
            self.console.print(
                f"[red]error:[/] {failure.details()}\n{entry.name} {exhausted} (restart "
                f"budget {self.restart_budget}): stopping everything",
                highlight=False,
            )
            return False
        first, most = self.backoff
        delay = min(first * 2 ** max(len(entry.recent), entry.failed_starts), most)
        entry.recent.append(now)
        entry.restart_due, entry.respawned = now + delay, None
        log.warning("child_crashed", extra={**fields, "backoff_seconds": delay})
        if entry.failed_starts >= len(entry.recent):  # the closer of the two limits
            count = f"restart {entry.failed_starts + 1} of {self.restart_budget} in a row " \
                    "that has not got ready yet"  # fmt: skip
        else:
            count = (f"restart {len(entry.recent)} of {self.restart_budget} within "
                     f"{self.restart_window:.0f} s")  # fmt: skip
        self.console.print(
            f"[dim]{time.strftime('%H:%M:%S')}[/] [yellow]restarting[/] [bold]{entry.name}[/] "
            f"in {delay:.2f} s ({reason}; {count})\n{failure.details()}",
            highlight=False,
        )
        return True

    def _respawn(self, entry: Running) -> bool:
        """Start a crashed child again; a failed start counts as another crash."""
        entry.restart_due = None
        try:
            entry.child.respawn()
        except Exception as exc:  # any failed start counts as a crash
            entry.respawned = time.monotonic()  # a failed start
            return self._crashed(entry, f"restart failed: {exc}")
        entry.restarts += 1
        entry.respawned = time.monotonic()
        self.say(f"[green]restarted[/] [bold]{entry.name}[/] (pid {entry.child.pid}, "
                 f"restart {entry.restarts} since start)")  # fmt: skip
        log.warning(
            "child_restarted",
            extra={"child": entry.name, "pid": entry.child.pid, "restarts": entry.restarts},
        )
        if self.on_restart is not None:
            self.on_restart(entry)
        return True

    def _check(self, entry: Running) -> bool:
        """One look at a child: restart it if it crashed; False if the system must stop."""
        now = time.monotonic()
        if entry.restart_due is not None:
            return now < entry.restart_due or self._respawn(entry)
        code = entry.child.poll()
        if code is not None:
            return self._crashed(entry, f"exited with code {code}")
        if entry.respawned is not None:
            timeout = entry.child.ready_timeout
            if entry.child.ready():
                self.say(f"[green]ready[/] [bold]{entry.name}[/] again in "
                         f"{now - entry.respawned:.1f} s")  # fmt: skip
                entry.respawned, entry.failed_starts = None, 0
            elif now - entry.respawned > timeout:
                entry.child.stop(timeout=2)
                return self._crashed(entry, f"did not get ready within {timeout:.0f} s")
        return True

    def wait(self, poll_interval: float = 0.2) -> int:
        """Block until a signal (returns 0) or a child exhausts its restart budget (1)."""
        while self.stop_requested is None:
            for entry in self.running:
                if not self._check(entry):
                    return 1
            time.sleep(poll_interval)
        self.say(f"received {self.stop_requested.name}, stopping")
        return 0

    def stop_all(self) -> None:
        """Stop everything, start groups in reverse order, within ``stop_timeout`` in total.

        The children of a group get their stop signal together and are waited for together,
        so a slow one costs ``per_child_grace`` once per group, not once per child. Later
        groups stop first: the services before the console that receives their last
        telemetry, and everything before the datastores.
        """
        deadline = time.monotonic() + self.stop_timeout
        entries, self.running = self.running, []
        for group in sorted({e.group for e in entries}, reverse=True):
            members = [e for e in reversed(entries) if e.group == group]
            grace = max(0.5, min(self.per_child_grace, deadline - time.monotonic()))
            grace_end = time.monotonic() + grace
            stopping = []
            for entry in members:
                was_running = entry.child.poll() is None
                if isinstance(entry.child, ManagedProcess):
                    with contextlib.suppress(Exception):
                        stopping.append((entry, was_running, entry.child.begin_stop()))
                else:
                    with contextlib.suppress(Exception):
                        entry.child.stop(timeout=grace)
                    if was_running:
                        self.say(f"stopped {entry.name}")
            for entry, was_running, descendants in stopping:
                assert isinstance(entry.child, ManagedProcess)
                with contextlib.suppress(Exception):
                    entry.child.finish_stop(descendants, grace_end - time.monotonic())
                if was_running:
                    self.say(f"stopped {entry.name} (exit code {entry.child.poll()})")

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
        self.restore_signal_handlers()

    def tail(self, name: str, lines: int = 20) -> list[str]:
        return tail(self.log_dir / f"{name}.log", lines)
