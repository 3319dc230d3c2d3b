"""Writing batches: many requests per transaction (SQLite allows one writer anyway, and
batching is where its speed is), with the summary tables updated in the same transaction."""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, field

from otel_lab.console.model import LogRow, MetricRow, PointRow, ResourceRow, ScopeRow, SpanRow
from otel_lab.console.otlp import Batch
from otel_lab.console.store import schema
from otel_lab.console.store.summaries import RedRoutes, summarise
from otel_lab.jsontypes import JSONObject

log = logging.getLogger("otel_lab.console.store")

KNOWN_IDS_MAX = 100_000


@dataclass
class StoreStats:
    """Counters for /api/stats and benchmarks (written by the writer thread only)."""

    spans_written: int = 0
    logs_written: int = 0
    points_written: int = 0
    duplicate_spans: int = 0
    transactions: int = 0
    rows_refused: int = 0
    write_errors: int = 0
    last_commit_ms: float = 0.0
    started_at: float = field(default_factory=time.time)


@dataclass
class _Merged:
    """Several batches as one."""

    resources: dict[int, ResourceRow] = field(default_factory=dict)
    scopes: dict[int, ScopeRow] = field(default_factory=dict)
    metrics: dict[int, MetricRow] = field(default_factory=dict)
    metric_services: set[tuple[int, str]] = field(default_factory=set)
    spans: list[SpanRow] = field(default_factory=list)
    logs: list[LogRow] = field(default_factory=list)
    points: list[PointRow] = field(default_factory=list)
    red_attributes: dict[tuple[bytes, bytes], JSONObject] = field(default_factory=dict)

    @classmethod
    def of(cls, batches: list[Batch]) -> _Merged:
        m = cls()
        for b in batches:
            m.resources.update(b.resources)
            m.scopes.update(b.scopes)
            m.metrics.update(b.metrics)
            m.metric_services |= b.metric_services
            m.spans.extend(b.spans)
            m.logs.extend(b.logs)
            m.points.extend(b.points)
            m.red_attributes.update(b.red_attributes)
        return m


class Writer:
    """Inserts batches on the writer's connection; remembers which resources, scopes,
    metrics and operations are stored so it does not re-insert them every batch."""

    def __init__(self, db: sqlite3.Connection, stats: StoreStats) -> None:
        self.db = db
        self.stats = stats
        self.red_routes = RedRoutes()
        self._resources: set[int] = set()
        self._scopes: set[int] = set()
        self._metrics: dict[int, MetricRow] = {}
        self._metric_services: set[tuple[int, str]] = set()
        self._operations: set[tuple[str, str, int]] = set()

    def forget(self) -> None:
        """Forget what is stored (after a failed transaction or a clear)."""
        self._resources.clear()
        self._scopes.clear()
        self._metrics.clear()
        self._metric_services.clear()
        self._operations.clear()

    def write_or_isolate(self, batches: list[Batch]) -> None:
        """Write all batches in one transaction; if that fails, write them one by one so a
        single bad request loses only its own rows."""
        try:
            self.write(batches)
            return
        except Exception as exc:
            self.forget()
            if len(batches) == 1:
                self.stats.write_errors += 1
                log.error("dropping a batch of %d rows: %r", batches[0].rows, exc)
                return
        for batch in batches:
            try:
                self.write([batch])
            except Exception as exc:
                self.forget()
                self.stats.write_errors += 1
                log.error("dropping a batch of %d rows: %r", batch.rows, exc)

    def write(self, batches: list[Batch]) -> None:
        started = time.perf_counter()
        m = _Merged.of(batches)
        received = len(m.spans)
        new_resources = [r for rid, r in m.resources.items() if rid not in self._resources]
        new_scopes = [s for sid, s in m.scopes.items() if sid not in self._scopes]
        new_metrics = [r for mid, r in m.metrics.items() if self._metrics.get(mid) != r]
        new_metric_services = m.metric_services - self._metric_services
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(schema.INSERT_RESOURCES, new_resources)
            db.executemany(schema.INSERT_SCOPES, new_scopes)
            db.executemany(schema.UPSERT_METRIC, new_metrics)
            db.executemany(schema.INSERT_METRIC_SERVICES, new_metric_services)
            spans = self._insert_spans(m.spans)
            schema.INSERT_LOGS.run(db, m.logs)
            schema.INSERT_POINTS.run(db, m.points)
            summaries = summarise(spans, m.logs, m.points)
            schema.UPSERT_TRACES.run(db, summaries.traces)
            db.executemany(schema.UPSERT_SERVICE, summaries.services)
            new_operations = summaries.operations - self._operations
            db.executemany(schema.INSERT_OPERATIONS, new_operations)
            db.executemany(schema.UPSERT_RED, self.red_routes.rows(db, spans, m.red_attributes))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._resources.update(r.id for r in new_resources)
        self._scopes.update(s.id for s in new_scopes)
        self._metrics.update((r.id, r) for r in new_metrics)
        self._metric_services |= new_metric_services
        self._operations |= new_operations
        if len(self._operations) > KNOWN_IDS_MAX or len(self._resources) > KNOWN_IDS_MAX:
            self.forget()  # high-cardinality names: bound memory, re-insert is harmless
        st = self.stats
        st.spans_written += len(spans)
        st.duplicate_spans += received - len(spans)
        st.logs_written += len(m.logs)
        st.points_written += len(m.points)
        st.transactions += 1
        st.last_commit_ms = (time.perf_counter() - started) * 1000

    def _insert_spans(self, spans: list[SpanRow]) -> list[SpanRow]:
        """Insert the spans; the ones that were new (for the summaries)."""
        if not spans:
            return spans
        db = self.db
        db.execute("SAVEPOINT spans")
        if schema.INSERT_SPANS.run(db, spans) != len(spans):
            # Some spans are already stored (an exporter retried): insert only the new
            # ones, so the summaries count every span exactly once.
            db.execute("ROLLBACK TO spans")
            spans = self._unseen(spans)
            schema.INSERT_SPANS.run(db, spans)
        db.execute("RELEASE spans")
        return spans

    def _unseen(self, spans: list[SpanRow]) -> list[SpanRow]:
        """Spans not stored yet (nor repeated earlier in the same list)."""
        seen: set[tuple[bytes, bytes]] = set()
        for trace_id in {s.trace_id for s in spans}:
            seen.update(
                self.db.execute(
                    "SELECT trace_id, span_id FROM spans WHERE trace_id = ?", (trace_id,)
                )
            )
        fresh = []
        for s in spans:
            key = (s.trace_id, s.span_id)
            if key not in seen:
                seen.add(key)
                fresh.append(s)
        return fresh
