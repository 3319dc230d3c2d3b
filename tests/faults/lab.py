"""The fault lab: steady traffic through the gateway, real faults injected into the children
of a running ``otel-lab up``, and what the clients saw, measured.

Used by the fault suite (``tests/faults``) and by ``scripts/faults.py`` (the figures in
docs/reliability.md, and ``make soak``). Every fault is done to the real process: SIGKILL,
SIGSTOP/SIGCONT of the process and all its descendants (PostgreSQL's backends run in
sessions of their own, so a signal to the process group would miss them), or a PostgreSQL
lock held on the ``items`` table (slow, not dead).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import psycopg

from otel_lab.runtime.harness import RunningSystem

DEADLINE = 2.0
"""A hung dependency answers within this long (the issue's budget) ..."""
WORST = 3.0
"""... and never later than this."""
CLIENT_TIMEOUT = 10.0
"""A request that gets no answer within this long counts as not answered."""

Check = Callable[[httpx.Response], bool]


@dataclass(frozen=True)
class Probe:
    """One kind of request the steady traffic sends (through the gateway)."""

    name: str
    method: str
    path: str  # "{item}": a random item written before the traffic started
    body: dict[str, Any] | None = None
    threads: int = 1  # each sends one request after the other


PROBES = (
    Probe("health", "GET", "/health"),  # the gateway alone
    Probe("item-read", "GET", "/items/{item}", threads=2),  # api, Valkey cache, PostgreSQL
    Probe("item-write", "POST", "/items", body={"name": "steady"}),  # + the broker
    Probe("users", "GET", "/users?limit=5"),  # user-service, PostgreSQL
    Probe("weather", "GET", "/weather/London"),  # api, the weather upstream
    Probe(
        "chain",
        "POST",
        "/process",
        body={
            "user_name": "Fault Lab",
            "user_email": "fault.lab@example.com",
            "action": "fault_lab",
        },
    ),
)


@dataclass
class Result:
    probe: str
    start: float  # time.monotonic()
    elapsed: float
    status: int  # 0: no answer within CLIENT_TIMEOUT
    body: Any = None
    item_id: int | None = None
    trace_id: str = ""  # from the gateway's traceresponse header: look a slow answer up
    order_id: int | None = None  # the order a chain request answered 2xx stored

    @property
    def end(self) -> float:
        return self.start + self.elapsed

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Traffic:
    """Each probe's requests from threads of its own (a slow probe does not slow the others),
    one after the other with ``pause`` between, until stopped."""

    def __init__(self, system: RunningSystem, *, pause: float = 0.2) -> None:
        self.base = system.url("gateway")
        self.pause = pause
        # probe -> seconds between the starts of a thread's requests (the soak's pacing: a
        # fixed rate whatever the latency); a probe not in it pauses ``pause`` after each.
        self.periods: dict[str, float] = {}
        self.results: list[Result] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        with httpx.Client(base_url=self.base, timeout=CLIENT_TIMEOUT) as client:
            self.items = [
                client.post("/items", json={"name": f"read me {i}"}).json()["id"] for i in range(8)
            ]

    def _send(self, client: httpx.Client, probe: Probe, n: int) -> Result:
        path = probe.path.format(item=self.items[n % len(self.items)])
        started = time.monotonic()
        try:
            response = client.request(probe.method, path, json=probe.body)
        except httpx.HTTPError as exc:
            return Result(probe.name, started, time.monotonic() - started, 0, repr(exc))
        elapsed = time.monotonic() - started
        try:
            body = response.json()
        except ValueError:
            body = response.text[:300]
        item_id = order_id = None
        if probe.name == "item-write" and response.status_code == 201:
            item_id = int(body["id"])
        if probe.name == "chain" and response.status_code == 200:
            order_id = int(body["order"]["id"])
        trace_id = response.headers.get("traceresponse", "-").split("-")[1:2]
        return Result(
            probe.name, started, elapsed, response.status_code, body, item_id,
            "".join(trace_id), order_id,
        )  # fmt: skip

    def _run(self, probe: Probe, offset: int) -> None:
        with httpx.Client(base_url=self.base, timeout=CLIENT_TIMEOUT) as client:
            next_at = time.monotonic()
            for n in itertools.count(offset):
                delay, period = self.pause, self.periods.get(probe.name)
                if period:  # late after a slow answer: catch up, but by at most 1 s
                    next_at = max(next_at + period, time.monotonic() - 1.0)
                    delay = next_at - time.monotonic()
                if self._stop.wait(delay):
                    return
                result = self._send(client, probe, n)
                with self._lock:
                    self.results.append(result)

    def start(self) -> Traffic:
        for probe in PROBES:
            for i in range(probe.threads):
                thread = threading.Thread(target=self._run, args=(probe, i * 5), daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT + 5)

    @property
    def thread_probes(self) -> list[tuple[str, int]]:
        """(probe, thread number) of every thread."""
        return [(p.name, i) for p in PROBES for i in range(p.threads)]

    def between(self, start: float, end: float) -> list[Result]:
        with self._lock:
            return [r for r in self.results if start <= r.start < end]

    def acked_writes(self, since: float = 0.0) -> list[int]:
        with self._lock:
            return [r.item_id for r in self.results if r.item_id and r.start >= since]

    def acked_orders(self, since: float = 0.0) -> list[int]:
        with self._lock:
            return [r.order_id for r in self.results if r.order_id and r.start >= since]


# -- faults ---------------------------------------------------------------------------------


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """SIGSTOP the process and its descendants inside the block (hung, not dead).

    A descendant may end between listing and signalling (a PostgreSQL backend whose client
    left): it is skipped, and whatever was stopped is resumed whatever happens, so a failed
    freeze never leaves the server stopped for the tests after it.
    """
    tree = _tree(pid)
    try:
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGSTOP)
        yield
    finally:
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def items_locked(system: RunningSystem) -> Iterator[None]:
    """PostgreSQL slow, not dead: a transaction holds an exclusive lock on ``items``, so
    every statement on it waits (and other tables are served as usual)."""
    dsn = system.database_url.replace("+psycopg", "")
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        conn.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()


@dataclass(frozen=True)
class Fault:
    """A fault, which probes it may fail, and how a failure must read."""

    name: str  # the row in the table
    child: str  # the child it is done to
    how: str  # "kill", "stop" or "lock"
    hold: float = 4.0  # seconds a stop or lock lasts
    # probe -> words one of which an error body must contain (naming the dependency)
    may_fail: dict[str, tuple[str, ...]] = field(default_factory=dict)


_DB = ("database", "postgres")
# The chain's error must name the database too, not only the hop that gave up on it: every
# hop shares the request's deadline (services/deadline.py), so the one that waited answers.
DB_PROBES = {"item-read": _DB, "item-write": _DB, "users": _DB, "chain": _DB}

FAULTS = (
    Fault("console killed (SIGKILL)", "console", "kill"),
    Fault("console hung (SIGSTOP)", "console", "stop"),
    Fault("Valkey killed (SIGKILL)", "valkey", "kill"),
    Fault("Valkey hung (SIGSTOP)", "valkey", "stop"),
    Fault("PostgreSQL killed (SIGKILL)", "postgres", "kill", may_fail=DB_PROBES),
    Fault("PostgreSQL hung (SIGSTOP)", "postgres", "stop", may_fail=DB_PROBES),
    Fault(
        "PostgreSQL slow (items locked)",
        "postgres",
        "lock",
        may_fail={"item-read": _DB, "item-write": _DB},
    ),
    Fault(
        "api killed (SIGKILL)",
        "api",
        "kill",
        may_fail={"item-read": ("api",), "item-write": ("api",), "weather": ("api",)},
    ),
    Fault(
        "user-service killed (SIGKILL)",
        "user-service",
        "kill",
        may_fail={"users": ("user-service",), "chain": ("user-service",)},
    ),
    Fault("worker killed (SIGKILL)", "worker", "kill"),
    Fault(
        "weather upstream killed (SIGKILL)",
        "weather-upstream",
        "kill",
        may_fail={"weather": ("weather",)},
    ),
    Fault(
        "weather upstream hung (SIGSTOP)",
        "weather-upstream",
        "stop",
        may_fail={"weather": ("weather",)},
    ),
)


@dataclass
class Outcome:
    """What the clients saw during one fault, and after it."""

    fault: Fault
    injected: float
    healed: float  # the stop/lock ended, or the killed child runs again
    recovered: float | None  # the end of the last failed request after the fault, or None
    results: list[Result]  # from the injection until the traffic stopped being watched
    acked: list[int]  # ids of items whose write was answered 2xx since the injection
    lost: list[int] = field(default_factory=list)  # of those, not in PostgreSQL
    not_enriched: list[int] = field(default_factory=list)
    acked_orders: list[int] = field(default_factory=list)  # orders of chains answered 2xx
    lost_orders: list[int] = field(default_factory=list)  # of those, not in PostgreSQL
    restarts: int = 0

    @property
    def during(self) -> list[Result]:
        return [r for r in self.results if r.start < self.healed]

    @property
    def answered(self) -> int:
        return sum(r.status != 0 for r in self.during)

    def p99(self) -> float:
        times = sorted(r.elapsed for r in self.during)
        return times[min(len(times) - 1, int(len(times) * 0.99))] if times else 0.0

    @property
    def time_to_recover(self) -> float:
        """From the end of the fault (a killed child: from when it serves again, which on a
        busy machine is mostly Python's import time) until every request succeeds again."""
        return max(0.0, (self.recovered or self.healed) - self.healed)

    def statuses(self) -> Counter[str]:
        return Counter(f"{r.probe} {r.status}" for r in self.results)

    def violations(self) -> list[str]:
        """Requests that broke the rules: late, unanswered, or a failure that was not
        allowed or does not name the dependency in a JSON body."""
        bad = []
        for r in self.results:
            if r.status == 0 or r.elapsed > WORST:
                bad.append(
                    f"{r.probe}: {r.status} after {r.elapsed:.2f} s ({r.body!r:.120}) "
                    f"trace {r.trace_id or '-'}"
                )
            elif not r.ok:
                words = self.fault.may_fail.get(r.probe)
                text = str(r.body.get("detail", r.body)).lower() if isinstance(r.body, dict) else ""
                if r.status < 500 or words is None or not any(w in text for w in words):
                    bad.append(f"{r.probe}: {r.status} {r.body!r:.160}")
        return bad


def pid_of(system: RunningSystem, child: str) -> int:
    system.refresh()
    return system.pid(child)


def check_writes(system: RunningSystem, outcome: Outcome, enrich_timeout: float = 60.0) -> None:
    """Every acknowledged write is in PostgreSQL (items and the chain's orders), and every
    item ends enriched."""
    dsn = system.database_url.replace("+psycopg", "")
    if outcome.acked_orders:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            stored = {
                row[0]
                for row in conn.execute(
                    "SELECT id FROM orders WHERE id = ANY(%s)", (outcome.acked_orders,)
                )
            }
        outcome.lost_orders = [i for i in outcome.acked_orders if i not in stored]
    if not outcome.acked:
        return
    deadline = time.monotonic() + enrich_timeout
    while True:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            rows = dict(
                conn.execute(
                    "SELECT id, status FROM items WHERE id = ANY(%s)", (outcome.acked,)
                ).fetchall()
            )
        outcome.lost = [i for i in outcome.acked if i not in rows]
        outcome.not_enriched = [i for i in outcome.acked if rows.get(i) != "enriched"]
        if not outcome.not_enriched or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def wait_back(system: RunningSystem, child: str, old_pid: int, timeout: float = 120.0) -> float:
    """After a kill: the time the child runs again (a new pid, and serving if it serves)."""
    system.wait_restarted(child, old_pid, timeout)
    url = system.children[child].get("url") or ""
    health = {"console": "/api/health", "worker": ""}.get(child, "/health")
    deadline = time.monotonic() + timeout
    while url.startswith("http") and health and time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + health, timeout=1).status_code == 200:
                break
        time.sleep(0.05)
    return time.monotonic()


def run_fault(
    system: RunningSystem,
    traffic: Traffic,
    fault: Fault,
    *,
    settle: float = 3.0,
    watch: float = 30.0,
) -> Outcome:
    """Inject ``fault`` under ``traffic``; watch until the traffic has been clean for
    ``settle`` seconds after the fault (at most ``watch`` seconds); check the writes."""
    pid = pid_of(system, fault.child)
    restarts_before = system.restarts(fault.child)
    injected = time.monotonic()
    if fault.how == "kill":
        os.kill(pid, signal.SIGKILL)
        healed = wait_back(system, fault.child, pid)
    elif fault.how == "stop":
        with frozen(pid):
            time.sleep(fault.hold)
        healed = time.monotonic()
    elif fault.how == "lock":
        with items_locked(system):
            time.sleep(fault.hold)
        healed = time.monotonic()
    else:
        raise ValueError(fault.how)
    # Watch until `settle` seconds of clean traffic follow the last failure.
    until = time.monotonic() + watch
    while time.monotonic() < until:
        seen = traffic.between(injected, time.monotonic())
        failures = [r for r in seen if not r.ok]
        last = max((r.end for r in failures), default=healed)
        if time.monotonic() - max(last, healed) >= settle:
            break
        time.sleep(0.2)
    results = traffic.between(injected, time.monotonic())
    failures = [r for r in results if not r.ok]
    recovered = max((r.end for r in failures), default=None)
    outcome = Outcome(
        fault, injected, healed, recovered, results, traffic.acked_writes(since=injected),
        acked_orders=traffic.acked_orders(since=injected),
    )  # fmt: skip
    outcome.restarts = system.restarts(fault.child) - restarts_before
    check_writes(system, outcome)
    return outcome


def table(outcomes: list[Outcome]) -> str:
    """The markdown table of docs/reliability.md."""
    lines = [
        "| fault | requests sent | answered | failed (status) | p99 during fault | "
        "max | fault lasted | time to recover | restarts | writes acknowledged | lost "
        "| not enriched |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        during = o.during
        failed = Counter(r.status for r in o.results if not r.ok)
        shown = ", ".join(f"{n}x {s}" for s, n in sorted(failed.items())) or "0"
        lines.append(
            f"| {o.fault.name} | {len(during)} | {o.answered} | {shown} | {o.p99():.2f} s | "
            f"{max((r.elapsed for r in during), default=0):.2f} s | "
            f"{o.healed - o.injected:.1f} s | {o.time_to_recover:.1f} s | "
            f"{o.restarts} | {len(o.acked) + len(o.acked_orders)} | "
            f"{len(o.lost) + len(o.lost_orders)} | {len(o.not_enriched)} |"
        )
    return "\n".join(lines)
