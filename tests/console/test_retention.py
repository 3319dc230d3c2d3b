"""Retention, the size cap and clear-all, each on a console of its own (they delete data)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .builders import (
    log_record,
    logs_request,
    metrics_request,
    new_span_id,
    new_trace_id,
    span,
    traces_request,
)
from .conftest import Console, start_console

PROTOBUF = "application/x-protobuf"
SECOND = 1_000_000_000


@pytest.fixture(scope="module")
def retained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """A console that keeps one hour, checks every second, and allows 0.5 s SQL statements."""
    db = tmp_path_factory.mktemp("retention") / "telemetry.db"
    console = start_console(db, "--retention", "1h", "--sql-timeout", "0.5")
    yield console
    assert console.stop() == 0
    assert "Traceback" not in console.log_path.read_text()


def _send(console: Console, service: str, trace_id: str, at: int, spans: int = 2) -> None:
    root = new_span_id()
    items = [span(trace_id, root, "GET /", kind=2, start=at, duration_ms=5)]
    items += [span(trace_id, new_span_id(), f"child {i}", parent=root, start=at + i)
              for i in range(spans - 1)]  # fmt: skip
    r = console.post("/v1/traces", traces_request(service, items).SerializeToString(), PROTOBUF)
    assert r.status_code == 200


def test_retention_evicts_old_traces_logs_and_points_visibly(retained: Console) -> None:
    from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

    now = time.time_ns()
    old, fresh = new_trace_id(), new_trace_id()
    _send(retained, "ret", old, now - 3 * 3600 * SECOND, spans=3)
    _send(retained, "ret", fresh, now - 60 * SECOND, spans=2)
    records = [log_record("ancient", at=now - 2 * 3600 * SECOND, trace_id=old),
               log_record("recent", at=now - 30 * SECOND)]  # fmt: skip
    assert retained.post("/v1/logs", logs_request("ret", records).SerializeToString(),
                         PROTOBUF).status_code == 200  # fmt: skip
    gauge = Metric(name="ret.gauge")
    gauge.gauge.data_points.add(time_unix_nano=now - 5 * 3600 * SECOND, as_int=1)
    gauge.gauge.data_points.add(time_unix_nano=now - 10 * SECOND, as_int=2)
    assert retained.post("/v1/metrics", metrics_request("ret", [gauge]).SerializeToString(),
                         PROTOBUF).status_code == 200  # fmt: skip

    def evicted() -> dict | None:
        stats = retained.api("/api/stats").json()
        ev = stats["evicted"]
        return stats if ev["spans"] == 3 and ev["logs"] == 1 and ev["metric_points"] == 1 else None

    stats = retained.wait_for(evicted, timeout=15)
    ev = stats["evicted"]
    assert ev["traces"] == 1 and ev["last_reason"] == "retention"
    assert abs(ev["last_cutoff_unix_nano"] - (time.time_ns() - 3600 * SECOND)) < 60 * SECOND
    assert stats["retention_seconds"] == 3600
    assert stats["stored"] == {"spans": 2, "logs": 1, "metric_points": 1, "services": 1}
    assert stats["oldest_unix_nano"] >= now - 3600 * SECOND
    assert retained.api(f"/api/traces/{old}").status_code == 404
    assert len(retained.trace(fresh)["spans"]) == 2
    assert [log["body"] for log in retained.api("/api/logs").json()["logs"]] == ["recent"]
    assert [p["value"] for p in retained.api("/api/metrics/ret.gauge").json()["points"]] == [2]
    # Counters survive a restart: they live in the store's meta table.
    assert "evicted 3 spans" in retained.log_path.read_text()


def test_sql_time_limit(retained: Console) -> None:
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )
    started = time.monotonic()
    r = retained.api("/api/sql", q=endless)
    assert r.status_code == 400
    assert "time limit" in r.json()["detail"]
    assert time.monotonic() - started < 5


def test_clear_all_needs_confirmation_and_same_origin(retained: Console) -> None:
    _send(retained, "clear-me", new_trace_id(), time.time_ns())
    retained.wait_for(lambda: retained.api("/api/traces", service="clear-me").json()["traces"])
    url = retained.ui_url + "/api/clear"
    refused = retained.http.post(url)
    assert refused.status_code == 400 and "confirm=yes" in refused.json()["detail"]
    cross = retained.http.post(url, params={"confirm": "yes"},
                               headers={"origin": "http://evil.example"})  # fmt: skip
    assert cross.status_code == 403
    r = retained.http.post(url, params={"confirm": "yes"}, headers={"origin": retained.ui_url})
    assert r.status_code == 200, r.text
    assert r.json()["cleared"]["spans"] >= 2
    stats = retained.api("/api/stats").json()
    assert stats["stored"] == {"spans": 0, "logs": 0, "metric_points": 0, "services": 0}
    assert stats["evicted"]["cleared_at"] is not None and stats["evicted"]["spans"] == 0
    assert retained.api("/api/traces").json()["traces"] == []
    assert retained.api("/api/services").json()["services"] == []
    # Ingest goes on after a clear.
    again = new_trace_id()
    _send(retained, "after-clear", again, time.time_ns())
    retained.trace(again)


def test_size_cap_evicts_oldest_first(tmp_path: Path) -> None:
    console = start_console(tmp_path / "capped.db", "--max-db-mb", "1")
    try:
        start = time.time_ns() - 3000 * SECOND
        blob = os.urandom(300).hex()
        trace_ids = []
        for batch in range(10):
            items = []
            for i in range(300):
                tid = new_trace_id()
                trace_ids.append(tid)
                at = start + (batch * 300 + i) * SECOND
                items.append(span(tid, new_span_id(), "work", start=at, attributes={"blob": blob}))
            body = traces_request("capped", items).SerializeToString()
            assert console.post("/v1/traces", body, PROTOBUF).status_code == 200

        def settled() -> dict | None:
            stats = console.api("/api/stats").json()
            if stats["pending_rows"] or not stats["evicted"]["spans"]:
                return None
            return stats if stats["disk"]["used_bytes"] <= 1024 * 1024 else None

        stats = console.wait_for(settled, timeout=30)
        ev = stats["evicted"]
        assert ev["last_reason"] == "size" and ev["traces"] == ev["spans"]
        assert 0 < ev["spans"] < 3000
        assert stats["stored"]["spans"] == 3000 - ev["spans"]
        # Oldest first: what is left is exactly the newest traces.
        assert console.api(f"/api/traces/{trace_ids[-1]}").status_code == 200
        assert console.api(f"/api/traces/{trace_ids[0]}").status_code == 404
        left = [t["trace_id"] for t in console.api("/api/traces", limit="1000").json()["traces"]]
        assert left == trace_ids[::-1][: len(left)]
        assert stats["max_db_bytes"] == 1024 * 1024
    finally:
        assert console.stop() == 0
