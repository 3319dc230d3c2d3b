"""The soak (``make soak``, ``scripts/faults.py --soak 10``): mixed traffic at about 70 % of
the saturation measured first, one fault a minute, the memory of every process sampled.

Pacing: each probe thread is first run back to back for a while (a closed loop, so the
system serves what it can: saturation), then given a fixed period for 70 % of the rate it
reached. A period, not a pause after each answer: a pause keeps a closed loop, whose rate
follows the latency, so on this shared machine a run that got quieter after the calibration
sent more than the measured saturation. Saturation is measured again at the end, because
what the machine can serve changes with the other jobs on it.

Memory: every 10 s, for each child of ``otel-lab up`` with its descendants (PostgreSQL's
backends, Celery's pool), the sums of

- RSS: what ``ps`` shows; counts the pages a process shares with others once per process:
  the fork server's preloaded libraries in each Python child, and the shared buffers in
  each PostgreSQL backend that has touched them;
- USS: the process's private pages (what it would give back if it exited): a leak shows
  here;
- PSS: private pages plus each shared page divided by the number of processes mapping it,
  so a child's PSS sums its share of the shared pages once (PostgreSQL's whole PSS counts
  its shared buffers once, however many backends touched them).

A warm-up of paced traffic without faults comes first (5 minutes: the items' cache entries
in Valkey live 300 s, so its data set grows that long; SQLite's page caches in the console
and PostgreSQL's shared buffers fill meanwhile). The verdict then compares each child's PSS
at the start of the soak with its maximum until the end; RSS and USS are shown beside it.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass

import psutil
import redis

from otel_lab.runtime.harness import RunningSystem
from tests.faults.lab import FAULTS, Outcome, Traffic, run_fault, table

MiB = 2**20
FLAT = 0.15  # the bound: within 15 %


@dataclass(frozen=True)
class Footprint:
    """One child and its descendants at one moment (MiB)."""

    pid: int
    procs: int
    rss: float
    uss: float
    pss: float


def footprints(system: RunningSystem) -> dict[str, Footprint]:
    """Every child's memory now (a child being restarted is missing)."""
    system.refresh()
    out: dict[str, Footprint] = {}
    for name, child in system.children.items():
        pid = int(child["pid"])
        rss = uss = pss = 0
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            try:
                info = proc.memory_full_info()
            except psutil.Error:  # ended meanwhile
                continue
            rss, uss, pss = rss + info.rss, uss + info.uss, pss + info.pss
        out[name] = Footprint(pid, len(procs), rss / MiB, uss / MiB, pss / MiB)
    return out


def valkey_figures(system: RunningSystem) -> dict[str, float]:
    """Valkey's own count of what it holds: keys by kind, queue length, used memory."""
    client = redis.Redis.from_url(system.redis_url, socket_timeout=2)
    try:
        info = client.info("memory")
        kinds = Counter(
            key.split(b":")[0].decode(errors="replace") for key in client.scan_iter(count=1000)
        )
        return {
            "used_memory_mib": info["used_memory"] / MiB,
            "rss_mib": info["used_memory_rss"] / MiB,
            "keys": sum(kinds.values()),
            "celery_queue": client.llen("celery"),
            **{f"keys[{k}]": n for k, n in kinds.most_common(4)},
        }
    except redis.RedisError:
        return {}
    finally:
        client.close()


def _mib(value: float) -> str:
    return f"{value:.1f}" if value < 20 else f"{value:.0f}"


@dataclass
class Memory:
    """The samples of one soak (times from the end of the warm-up), and their verdict."""

    samples: list[tuple[float, dict[str, Footprint]]]
    valkey: list[tuple[float, dict[str, float]]]

    def sample(self, system: RunningSystem, elapsed: float) -> None:
        self.samples.append((elapsed, footprints(system)))
        self.valkey.append((elapsed, valkey_figures(system)))

    def report(self) -> str:
        """Per child and measure: at the start (after the warm-up), at the end, the max; the
        verdict on PSS (the measure that adds up: see the module docstring)."""
        after = [(t, s) for t, s in self.samples if t >= 0]
        if len(after) < 2:
            return "(no memory samples after the warm-up)"
        lines = [
            f"Memory (MiB, each child with its descendants) from the end of the warm-up to the "
            f"end of the soak ({after[-1][0]:.0f} s):",
            "",
            "| process | procs | RSS start | end | max | USS start | end | max | "
            "PSS start | end | max | restarted at | PSS flat (max within 15 % of start) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for name in sorted(after[0][1]):
            rows = [(t, s[name]) for t, s in after if name in s]
            restarts = [
                f"{t:.0f} s" for (_, a), (t, b) in itertools.pairwise(rows) if a.pid != b.pid
            ]
            cells = [f"{rows[0][1].procs}-{max(f.procs for _, f in rows)}"]
            for measure in ("rss", "uss", "pss"):
                values = [getattr(f, measure) for _, f in rows]
                cells += [_mib(values[0]), _mib(values[-1]), _mib(max(values))]
            start, peak = rows[0][1].pss, max(f.pss for _, f in rows)
            growth = (peak - start) / start if start else 0.0
            lines.append(
                f"| {name} | {' | '.join(cells)} | {', '.join(restarts) or '-'} | "
                f"{'yes' if growth <= FLAT else 'NO'} ({growth:+.0%}) |"
            )
        lines += ["", "Valkey's own figures (the first sample, the end of the warm-up, the end):"]
        marks = [self.valkey[0], next(v for v in self.valkey if v[0] >= 0), self.valkey[-1]]
        for key in sorted({k for _, v in marks for k in v}):
            values = "  ".join(f"{t:5.0f} s: {v.get(key, 0):8.1f}" for t, v in marks)
            lines.append(f"  {key:36} {values}")
        keys = " ".join(f"{t:.0f}:{v.get('keys', 0):.0f}" for t, v in self.valkey[::3])
        lines.append(f"  keys over time (s:keys): {keys}")
        return "\n".join(lines)

    def series(self, name: str) -> str:
        """One child's USS and PSS over time (to see where it levels off)."""
        points = [
            f"{t:.0f}:{_mib(s[name].uss)}/{_mib(s[name].pss)}"
            for t, s in self.samples[::2]
            if name in s
        ]
        return f"  {name} (s:USS/PSS MiB) " + " ".join(points)


def saturation(traffic: Traffic, seconds: float = 15.0) -> dict[str, float]:
    """Requests per second each probe reaches back to back (no pause, no period)."""
    traffic.pause, traffic.periods = 0.0, {}
    time.sleep(2)  # the threads finish their current wait
    start = time.monotonic()
    time.sleep(seconds)
    sample = traffic.between(start, time.monotonic())
    return {p: n / seconds for p, n in Counter(r.probe for r in sample).items()}


def pace(traffic: Traffic, rates: dict[str, float], share: float) -> None:
    """Each probe thread at ``share`` of the rate its probe reached, as a fixed period."""
    threads = Counter(probe for probe, _ in traffic.thread_probes)
    traffic.pause = 0.0
    traffic.periods = {p: threads[p] / (share * rate) for p, rate in rates.items() if rate}


def soak(system: RunningSystem, traffic: Traffic, minutes: float, warm_up: float = 300.0) -> None:
    """Saturation, ``warm_up`` seconds of the paced traffic alone, then ``minutes`` of it
    with one fault a minute (the next of the table each time); memory every 10 s."""
    share = 0.7
    rates = saturation(traffic)
    total = sum(rates.values())
    print(f"saturation: {total:.0f} req/s ("
          + ", ".join(f"{p} {r:.0f}" for p, r in sorted(rates.items()))
          + f"); soak at {share:.0%}: {share * total:.0f} req/s", flush=True)  # fmt: skip
    pace(traffic, rates, share)
    memory = Memory([], [])
    started = time.monotonic() + warm_up
    print(f"warm-up: {warm_up:.0f} s of traffic without faults", flush=True)
    while time.monotonic() < started:
        memory.sample(system, time.monotonic() - started)
        time.sleep(min(10.0, max(0.0, started - time.monotonic())))
    memory.sample(system, time.monotonic() - started)
    end = started + minutes * 60
    windows: list[tuple[float, float]] = []
    outcomes: list[Outcome] = []
    for fault in itertools.cycle(FAULTS):
        minute_start = time.monotonic()
        if minute_start >= end:
            break
        print(f"-- {time.monotonic() - started:5.0f} s: {fault.name}", flush=True)
        outcome = run_fault(system, traffic, fault)
        outcomes.append(outcome)
        windows.append((outcome.injected, (outcome.recovered or outcome.healed) + 0.5))
        while time.monotonic() < min(minute_start + 60, end):
            memory.sample(system, time.monotonic() - started)
            time.sleep(10)
    stopped = time.monotonic()
    memory.sample(system, stopped - started)
    results = traffic.between(started, stopped)
    after = saturation(traffic)
    # A request in flight at any moment of a fault's window counts as inside it (one sent
    # just before a kill reaches the killed process just after it).
    outside = [
        r
        for r in results
        if r.status >= 500 and not any(r.start <= b and r.end >= a for a, b in windows)
    ]
    print(table(outcomes))
    queue = redis.Redis.from_url(system.redis_url, socket_timeout=2).llen("celery")
    print(f"\ntasks still queued at the end: {queue}")
    rate = len(results) / (stopped - started)
    again = sum(after.values())
    print(f"\nrequests: {len(results)} ({rate:.1f}/s: {rate / total:.0%} of the saturation "
          f"at the start, {rate / again:.0%} of the {again:.0f} req/s measured again at the "
          f"end), 5xx outside fault windows: {len(outside)}")  # fmt: skip
    for r in outside[:10]:
        print(f"   {r.probe} {r.status} {r.body!r:.160}")
    print("\n" + memory.report())
    print("\nUSS/PSS over time (negative: the warm-up):")
    for name in sorted(memory.samples[0][1]):
        print(memory.series(name))
