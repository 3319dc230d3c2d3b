"""Scrape the services' ``/metrics`` into the console's store, as Prometheus does in stack mode.

The services define their Prometheus metrics once (``prometheus_client``, OpenMetrics with
trace-id exemplars); in stack mode Prometheus scrapes them, in embedded mode the console
does, with the same job names (the service name) and ``instance`` labels, so the dashboards'
and alert rules' PromQL runs unchanged on either (see :mod:`otel_lab.console.promql`).

Cheap by construction: one thread, the targets fetched in parallel with a deadline, and a
sample written only when its value changed since the last write, or every
``HEARTBEAT_SECONDS`` (a counter without traffic costs one row per five minutes, not one per
scrape). ``prom_scrapes`` records every scrape (time, up), so a series' value at each scrape
is the last sample written before it: nothing is lost. A series that disappears gets a stale
marker (value NULL), like Prometheus' staleness handling.

The runtime passes the targets: ``--scrape job=url,...`` (or ``CONSOLE_SCRAPE_TARGETS``).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypedDict

import httpx

from otel_lab.console import derived
from otel_lab.console.config import Target
from otel_lab.console.promql import NAME, Labels, Matcher, Series, matches_all
from otel_lab.console.queries import INT64_MAX
from otel_lab.console.store import Store

log = logging.getLogger("otel_lab.console.scrape")

DEFAULT_INTERVAL = 10.0  # prometheus.yml scrapes the app jobs every 10 s
HEARTBEAT_SECONDS = 300.0
# A sample older than this no longer stands for the series' value at a scrape (the console
# was down in between and could not mark what disappeared).
FILL_LIMIT_NS = int((HEARTBEAT_SECONDS + 60) * 1e9)
ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


@dataclass
class TargetState:
    """What the console knows about one target (for ``/api/prom/targets``)."""

    job: str
    url: str
    up: bool = False
    last_scrape_ns: int | None = None
    last_duration_ms: float | None = None
    last_error: str | None = None
    series: int = 0


@dataclass
class _Known:
    key: tuple[str, str]
    series_id: int
    value: float | None
    written_ns: int
    exemplar: tuple[str, float] | None = None


@dataclass
class _JobMemory:
    known: dict[tuple[str, str], _Known] = field(default_factory=dict)
    present: set[tuple[str, str]] = field(default_factory=set)


def _series_key(name: str, labels: dict[str, str]) -> tuple[str, str]:
    return name, json.dumps(labels, sort_keys=True, separators=(",", ":"))


class Scraper:
    """Scrapes every target each ``interval`` seconds in a background thread."""

    def __init__(
        self,
        store: Store,
        targets: Sequence[Target],
        interval: float = DEFAULT_INTERVAL,
        *,
        derive: bool = True,
    ) -> None:
        self.store = store
        # The series the Collector makes in stack mode, one more job of each round.
        self.derived = derived.Derived(store.open_reader, _series_key) if derive else None
        self.targets = list(targets)
        self.interval = interval
        self.timeout = min(max(interval * 0.8, 0.5), 2.0)  # a hung target costs 2 s at most
        self.states = {t.job: TargetState(t.job, t.url) for t in self.targets}
        self._memory: dict[str, _JobMemory] = {}
        self._generation = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(timeout=self.timeout, headers={"accept": ACCEPT})
        self._pool = ThreadPoolExecutor(max(1, len(self.targets)), "console-scrape")
        self.scrapes = 0
        self.cpu_seconds = 0.0  # this thread's parse + diff time, for the stats endpoint
        self.derive_cpu_seconds = 0.0  # the part of it spent on the derived series

    def start(self) -> None:
        if not self.targets or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="console-scraper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Quick: a round in flight is abandoned (its fetches have a 2 s deadline)."""
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._thread is not None:
            self._thread.join(timeout=3)
        if self._thread is None or not self._thread.is_alive():
            self._client.close()
            if self.derived is not None:
                self.derived.close()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.scrape_once()
            except Exception:  # the scraper must survive anything
                log.exception("scrape round failed")
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (a slow round): skip, do not pile up
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    # ------------------------------------------------------------------ one round

    def _fetch(self, target: Target) -> tuple[int, float, str | None, str | None]:
        started = time.time_ns()
        t0 = time.perf_counter()
        try:
            response = self._client.get(target.url)
            if response.status_code != 200:
                return started, time.perf_counter() - t0, None, f"HTTP {response.status_code}"
            return started, time.perf_counter() - t0, response.text, None
        except httpx.HTTPError as exc:
            return started, time.perf_counter() - t0, None, f"{type(exc).__name__}: {exc}"

    def scrape_once(self) -> None:
        """Fetch every target in parallel, then parse and write (one store transaction)."""
        results = list(self._pool.map(self._fetch, self.targets))
        cpu0 = time.thread_time()
        if self._generation != self.store.clear_generation:
            if self._generation >= 0 and self.derived is not None:
                self.derived.reset()  # cleared: count again from the first span stored
            self._memory = self._load_memory()
        rows = _Rows()
        for target, (started, duration, text, error) in zip(self.targets, results, strict=True):
            state = self.states[target.job]
            memory = self._memory.setdefault(target.job, _JobMemory())
            if text is not None:
                try:
                    samples = _parse(text, target)
                except Exception as exc:  # any parse error fails this scrape
                    text, error = None, f"parse error: {exc}"
            up = text is not None
            state.up, state.last_scrape_ns = up, started
            state.last_duration_ms, state.last_error = round(duration * 1000, 2), error
            rows.scrapes.append((target.job, started, int(up), target.instance))
            if up:
                self._diff(memory, samples, started, rows)
                state.series = len(memory.present)
            else:
                self._mark_stale(memory, memory.present, started, rows)
                memory.present = set()
        if self.derived is not None:
            self._derive(rows)
        self.cpu_seconds += time.thread_time() - cpu0
        self.store.call(rows.write)
        self.scrapes += 1

    def _derive(self, rows: _Rows) -> None:
        assert self.derived is not None
        cpu0 = time.thread_time()
        now = time.time_ns()
        memory = self._memory.setdefault(derived.JOB, _JobMemory())
        samples: list[Sample] = [
            (key, labels, value, _exemplar(ex) if ex else None)
            for key, labels, value, ex in self.derived.collect(now)
        ]
        rows.scrapes.append((derived.JOB, now, 1, derived.INSTANCE))
        self._diff(memory, samples, now, rows, job=derived.JOB)
        self.derive_cpu_seconds += time.thread_time() - cpu0

    def _diff(
        self,
        memory: _JobMemory,
        samples: list[Sample],
        now: int,
        rows: _Rows,
        job: str | None = None,
    ) -> None:
        present: set[tuple[str, str]] = set()
        for key, labels, value, exemplar in samples:
            present.add(key)
            known = memory.known.get(key)
            if known is None:
                known = memory.known[key] = _Known(key, -1, None, 0)
                rows.new_series.append((job or labels["job"], known))
            if (
                known.value is None
                or known.value != value
                or now - known.written_ns >= HEARTBEAT_SECONDS * 1e9
            ):
                rows.samples.append((known, now, value))
                known.value, known.written_ns = value, now
            if exemplar is not None:
                trace_id = exemplar.labels.get("trace_id", "")
                mark = (trace_id, exemplar.value)
                if mark != known.exemplar:
                    known.exemplar = mark
                    ts = exemplar.timestamp
                    ex_ns = int(float(ts) * 1e9) if ts is not None else now
                    rows.exemplars.append((known, ex_ns, exemplar.value, exemplar.labels))
        self._mark_stale(memory, memory.present - present, now, rows)
        memory.present = present

    def _mark_stale(
        self, memory: _JobMemory, keys: set[tuple[str, str]], now: int, rows: _Rows
    ) -> None:
        for key in keys:
            known = memory.known.get(key)
            if known is not None and known.value is not None:
                rows.samples.append((known, now, None))
                known.value, known.written_ns = None, now

    def _load_memory(self) -> dict[str, _JobMemory]:
        """Last written values (after a restart, or after clear-all), so nothing is
        rewritten for nothing and series gone while the console was down get a stale mark."""
        self._generation = self.store.clear_generation
        memory: dict[str, _JobMemory] = {}
        conn = self.store.open_reader()
        try:
            rows = conn.execute(
                "SELECT s.id, s.job, s.name, s.labels, p.value, p.t FROM prom_series s JOIN"
                " (SELECT series_id, max(time_ns) AS t, value FROM prom_samples"
                "  GROUP BY series_id) p ON p.series_id = s.id"
            ).fetchall()
        finally:
            conn.close()
        cutoff = time.time_ns() - FILL_LIMIT_NS
        for series_id, job, name, labels, value, t in rows:
            mem = memory.setdefault(job, _JobMemory())
            key = (name, labels)
            mem.known[key] = _Known(key, series_id, value, t)
            if value is not None and t >= cutoff:
                mem.present.add(key)
        return memory


def _exemplar(ex: derived.Exemplar | None) -> Exemplar | None:
    if ex is None:
        return None
    labels = {"trace_id": ex.trace_id, **({"span_id": ex.span_id} if ex.span_id else {})}
    return Exemplar(labels, ex.value, ex.time_ns / 1e9 if ex.time_ns else None)


class _Rows:
    """What one round writes; ``write`` runs in the store's writer thread."""

    def __init__(self) -> None:
        self.scrapes: list[tuple[str, int, int, str]] = []
        self.new_series: list[tuple[str, _Known]] = []
        self.samples: list[tuple[_Known, int, float | None]] = []
        self.exemplars: list[tuple[_Known, int, float, dict[str, str]]] = []

    def write(self, db: sqlite3.Connection) -> None:
        """One transaction; new series learn their ids (the scraper waits meanwhile)."""
        db.execute("BEGIN IMMEDIATE")
        try:
            for job, known in self.new_series:
                name, labels = known.key
                db.execute(
                    "INSERT OR IGNORE INTO prom_series (job, name, labels) VALUES (?, ?, ?)",
                    (job, name, labels),
                )
                known.series_id = db.execute(
                    "SELECT id FROM prom_series WHERE name = ? AND labels = ?", (name, labels)
                ).fetchone()[0]
            db.executemany(
                "INSERT OR REPLACE INTO prom_scrapes (job, time_ns, up, instance)"
                " VALUES (?, ?, ?, ?)",
                self.scrapes,
            )
            db.executemany(
                "INSERT OR REPLACE INTO prom_samples (series_id, time_ns, value) VALUES (?, ?, ?)",
                [(k.series_id, t, v) for k, t, v in self.samples],
            )
            db.executemany(
                "INSERT OR IGNORE INTO prom_exemplars"
                " (series_id, time_ns, value, trace_id, span_id, labels) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (k.series_id, t, v, lb.get("trace_id"), lb.get("span_id"),
                     json.dumps(lb, sort_keys=True))
                    for k, t, v, lb in self.exemplars
                ],
            )  # fmt: skip
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _parse(text: str, target: Target) -> list[Sample]:
    """(sample name, labels with job and instance, value, exemplar) for every sample.

    The services' exposition (prometheus_client) is regular, so a line splitter with the
    label sets cached per series text does it at a fraction of the cost of
    ``prometheus_client``'s parser; anything unusual (escaped quotes, a malformed line)
    falls back to that parser for the whole text.
    """
    try:
        return _fast_parse(text, target)
    except _Unusual:
        return _library_parse(text, target)


class _Unusual(Exception):
    pass


@dataclass
class Exemplar:
    labels: dict[str, str]
    value: float
    timestamp: float | None


class StoredExemplar(TypedDict):
    """An exemplar as the API answers it: the series it belongs to, its trace."""

    series: dict[str, str]
    time_unix_nano: int
    value: float
    trace_id: str | None
    span_id: str | None
    labels: dict[str, str]


_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="([^"\\]*)"')
_SERIES_CACHE: dict[tuple[str, str], tuple[tuple[str, str], dict[str, str]]] = {}
Sample = tuple[tuple[str, str], dict[str, str], float, Exemplar | None]  # key, labels, value


def _labels_of(text: str) -> dict[str, str]:
    """``a="1",b="2"`` -> dict; raises _Unusual for anything but plain quoted values."""
    pairs = _LABEL.findall(text)
    if len(_LABEL.sub("", text).replace(",", "").strip()):
        raise _Unusual(text)
    return dict(pairs)


def _fast_parse(text: str, target: Target) -> list[Sample]:
    out: list[Sample] = []
    cache = _SERIES_CACHE
    if len(cache) > 200_000:
        cache.clear()
    for line in text.split("\n"):
        if not line or line[0] == "#":
            continue
        if "\\" in line:
            raise _Unusual(line)
        brace = line.find("{")
        space = line.find(" ")
        if brace == -1 or space < brace:
            series_text, rest = line[:space], line[space + 1 :]
        else:
            end = line.find("} ", brace)
            if end == -1:
                raise _Unusual(line)
            series_text, rest = line[: end + 1], line[end + 2 :]
        cached = cache.get((target.job, series_text))
        if cached is None:
            if brace == -1 or space < brace:
                name, labels = series_text, {}
            else:
                name, labels = series_text[:brace], _labels_of(series_text[brace + 1 : -1])
            labels = {**labels, "job": target.job, "instance": target.instance}
            cached = cache[(target.job, series_text)] = (_series_key(name, labels), labels)
        head, sep, tail = rest.partition(" # ")
        exemplar = None
        if sep:
            close = tail.find("} ")
            if not tail.startswith("{") or close == -1:
                raise _Unusual(line)
            parts = tail[close + 2 :].split()
            exemplar = Exemplar(
                _labels_of(tail[1:close]),
                float(parts[0]),
                float(parts[1]) if len(parts) > 1 else None,
            )
        out.append((cached[0], cached[1], float(head.split(" ", 1)[0]), exemplar))
    return out


def _library_parse(text: str, target: Target) -> list[Sample]:
    if "# EOF" in text[-64:]:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import (
            text_string_to_metric_families,
        )
    out: list[Sample] = []
    base = {"job": target.job, "instance": target.instance}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = {**s.labels, **base}
            key = _series_key(s.name, labels)
            ex = s.exemplar
            exemplar = (
                Exemplar(dict(ex.labels), float(ex.value),
                         float(ex.timestamp) if ex.timestamp is not None else None)
                if ex is not None
                else None
            )  # fmt: skip
            out.append((key, labels, float(s.value), exemplar))
    return out


# ============================================================================ reading


class StoreSource:
    """The scraped series as a :class:`promql.Source` (see the module docstring)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Series]:
        # SQLite integers are int64 (stored times are int64 ns); a query's offset or range
        # can reach centuries past either end, which SQLite refuses (OverflowError).
        start_ns = min(max(start_ms * 1_000_000, -INT64_MAX + FILL_LIMIT_NS), INT64_MAX)
        end_ns = min(max(end_ms * 1_000_000, -INT64_MAX), INT64_MAX)
        names = [m.value for m in matchers if m.name == NAME and m.op == "="]
        if names:
            rows = self.conn.execute(
                "SELECT id, job, name, labels FROM prom_series WHERE name = ?", (names[0],)
            ).fetchall()
        else:
            rows = self.conn.execute("SELECT id, job, name, labels FROM prom_series").fetchall()
        chosen: dict[str, list[tuple[int, Labels]]] = {}
        for series_id, job, name, labels_json in rows:
            labels = json.loads(labels_json)
            labels[NAME] = name
            if matches_all(labels, matchers):
                chosen.setdefault(job, []).append((series_id, tuple(sorted(labels.items()))))
        out: list[Series] = []
        if matches_all({NAME: "up"}, [m for m in matchers if m.name == NAME]):
            out += self._up(matchers, start_ns, end_ns)
        for job, members in chosen.items():
            scrapes = self.conn.execute(
                "SELECT time_ns, up FROM prom_scrapes WHERE job = ? AND time_ns BETWEEN ? AND ?"
                " ORDER BY time_ns",
                (job, start_ns, end_ns),
            ).fetchall()
            if not scrapes:
                continue
            ids = [series_id for series_id, _ in members]
            samples: dict[int, tuple[list[int], list[float | None]]] = {i: ([], []) for i in ids}
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for series_id, t, v in self.conn.execute(
                    f"SELECT series_id, time_ns, value FROM prom_samples WHERE series_id IN"
                    f" ({marks}) AND time_ns BETWEEN ? AND ? ORDER BY series_id, time_ns",
                    (*chunk, start_ns - FILL_LIMIT_NS, end_ns),
                ):
                    ts, vs = samples[series_id]
                    ts.append(t)
                    vs.append(v)
            for series_id, labels in members:
                series = _expand(labels, scrapes, *samples[series_id])
                if series.ts or series.stale:
                    out.append(series)
        return out

    def _up(self, matchers: Sequence[Matcher], start_ns: int, end_ns: int) -> list[Series]:
        by_target: dict[tuple[str, str], Series] = {}
        for job, instance, t, up in self.conn.execute(
            "SELECT job, instance, time_ns, up FROM prom_scrapes WHERE time_ns BETWEEN ? AND ?"
            " AND job != ? ORDER BY time_ns",  # derived series have no target, so no `up`
            (start_ns, end_ns, derived.JOB),
        ):
            series = by_target.get((job, instance))
            if series is None:
                labels = {NAME: "up", "job": job, "instance": instance}
                series = by_target[(job, instance)] = Series(tuple(sorted(labels.items())), [], [])
            series.ts.append(t // 1_000_000)
            series.vals.append(float(up))
        return [s for s in by_target.values() if matches_all(s.labels, matchers)]


def _expand(
    labels: Labels, scrapes: list[tuple[int, int]], ts: list[int], vs: list[float | None]
) -> Series:
    """The series' value at each scrape of its job: the last sample written before it."""
    series = Series(labels, [], [])
    if not ts:
        return series
    stale = False
    i = -1
    n = len(ts)
    for t, up in scrapes:
        while i + 1 < n and ts[i + 1] <= t:
            i += 1
        value = vs[i] if i >= 0 and up and t - ts[i] <= FILL_LIMIT_NS else None
        if value is None:
            if not stale and series.ts:
                series.stale.append(t // 1_000_000)
            stale = True
            continue
        stale = False
        series.ts.append(t // 1_000_000)
        series.vals.append(value)
    return series


def exemplars(
    conn: sqlite3.Connection, matchers: Sequence[Matcher], start_ns: int, end_ns: int,
    limit: int = 500,
) -> list[StoredExemplar]:  # fmt: skip
    """Exemplars of the series matching ``matchers`` in the window, newest first."""
    names = [m.value for m in matchers if m.name == NAME and m.op == "="]
    sql = "SELECT id, name, labels FROM prom_series"
    rows = conn.execute(sql + " WHERE name = ?", (names[0],)) if names else conn.execute(sql)
    wanted: dict[int, dict[str, str]] = {}
    for series_id, name, labels_json in rows:
        labels = json.loads(labels_json)
        labels[NAME] = name
        if matches_all(labels, matchers):
            wanted[series_id] = labels
    out: list[StoredExemplar] = []
    ids = list(wanted)
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for series_id, t, value, trace_id, span_id, labels_json in conn.execute(
            f"SELECT series_id, time_ns, value, trace_id, span_id, labels FROM prom_exemplars"
            f" WHERE series_id IN ({marks}) AND time_ns BETWEEN ? AND ?"
            f" ORDER BY time_ns DESC LIMIT ?",
            (*chunk, start_ns, end_ns, limit),
        ):
            out.append(
                {
                    "series": wanted[series_id],
                    "time_unix_nano": t,
                    "value": value,
                    "trace_id": trace_id,
                    "span_id": span_id,
                    "labels": json.loads(labels_json) if labels_json else {},
                }
            )
    out.sort(key=lambda e: e["time_unix_nano"], reverse=True)
    return out[:limit]
