"""What the console's response models would cost if they serialised the answers. Prints figures.

The read routes answer a ``ConsoleJSON`` built by the queries and name a response model
only for ``/api/openapi.json`` (FastAPI passes a ``Response`` through untouched). This
measures, on a real store (the synthetic chain traces, a 1,000-span trace and their logs,
written through the real decoder and writer), the CPU of rendering each answer as shipped
against validating it through its model first, which is what returning the dict with a
``response_model`` would do (FastAPI validates, then dumps the model).

    .venv/bin/python scripts/bench_console_models.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from otel_lab.console import otlp, queries
from otel_lab.console.routes import schemas
from otel_lab.console.routes.common import ConsoleJSON
from otel_lab.console.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.console.synthetic import Generator  # test data, kept out of the package

SECOND = 1_000_000_000


def cpu_us(work: Callable[[], object], seconds: float = 1.0) -> float:
    """CPU microseconds per call of ``work`` (this process's CPU time, not wall time)."""
    work()
    calls, started = 0, time.process_time()
    while (spent := time.process_time() - started) < seconds:
        work()
        calls += 1
    return spent / calls * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "telemetry.db")
        gen = Generator(seed=5)
        start = time.time_ns() - 3600 * SECOND
        chain = gen.batch(200, start)
        big = gen.big_trace(1000, start + 600 * SECOND)
        for out in (chain, big):
            assert store.submit(otlp.decode_traces(out.traces_request()))
            assert store.submit(otlp.decode_logs(out.logs_request()))
        store.flush(60)
        conn = store.reader()
        big_id = bytes.fromhex(big.trace_ids[0])
        answers: list[tuple[str, type[BaseModel], dict[str, Any]]] = [
            (
                "GET /api/traces (20 summaries)",
                schemas.TracesOut,
                {"traces": queries.find_traces(conn, queries.TraceFilter(limit=20))},
            ),
            (
                "GET /api/traces/{id} (1,000 spans)",
                schemas.TraceOut,
                {"trace_id": big_id.hex(), "spans": queries.get_trace(conn, big_id)},
            ),
            (
                "GET /api/logs (1,000 records)",
                schemas.LogsOut,
                {"logs": queries.find_logs(conn, queries.LogFilter(limit=1000))},
            ),
        ]
        print(f"{'answer':38} {'as shipped':>12} {'via model':>12} {'ratio':>8}")
        for label, model, payload in answers:
            shipped = cpu_us(lambda p=payload: ConsoleJSON(p).body)
            validated = cpu_us(lambda m=model, p=payload: m.model_validate(p).model_dump_json())
            print(f"{label:38} {shipped:10.0f}us {validated:10.0f}us {validated / shipped:7.2f}x")
        store.close()


if __name__ == "__main__":
    main()
