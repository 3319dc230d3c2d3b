"""Realistic synthetic OTLP telemetry for the console's browser tests and its benchmark
(scripts/bench_console.py imports it from here).

Traces look like Otel Lab's own: the gateway -> user-service -> order-service ->
audit-service chain with PostgreSQL and Redis client spans, an api -> worker Celery hop
(PRODUCER -> CONSUMER), HTTP semantic-convention attributes, events, a few errors with a
Python exception and its traceback, and logs correlated to the spans. Built as protobuf
requests, so they travel the same path as an SDK's export.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    Exemplar,
    Metric,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

SERVER, CLIENT, INTERNAL = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_INTERNAL
PRODUCER, CONSUMER = Span.SPAN_KIND_PRODUCER, Span.SPAN_KIND_CONSUMER
MS = 1_000_000

SELECT_USER = "SELECT users.id, users.name FROM users WHERE users.id = %(id)s"
INSERT_ORDER = "INSERT INTO orders (user_id, total) VALUES (%(user_id)s, %(total)s)"
EXCEPTION_MESSAGE = "unsupported operand type(s) for *: 'NoneType' and 'int'"
STACKTRACE = """Traceback (most recent call last):
  File "/app/src/otel_lab/services/order/pricing.py", line 42, in price_order
    total = sum(line.price * line.quantity for line in order.lines)
  File "/app/src/otel_lab/services/order/pricing.py", line 42, in <genexpr>
    total = sum(line.price * line.quantity for line in order.lines)
TypeError: unsupported operand type(s) for *: 'NoneType' and 'int'
"""


def any_value(value: Any) -> AnyValue:
    """A Python value as an OTLP AnyValue (scalars, bytes, lists and dicts)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(v) for v in value)
        return out
    if isinstance(value, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(key_values(value))
        return out
    raise TypeError(type(value))


def key_values(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


@dataclass
class Output:
    """Spans and logs per service (one resource each), ready to become requests."""

    spans: dict[str, list[Span]] = field(default_factory=dict)
    logs: dict[str, list[LogRecord]] = field(default_factory=dict)
    trace_ids: list[str] = field(default_factory=list)

    @property
    def span_count(self) -> int:
        return sum(len(v) for v in self.spans.values())

    def traces_request(self) -> ExportTraceServiceRequest:
        req = ExportTraceServiceRequest()
        for service, spans in self.spans.items():
            rs = req.resource_spans.add()
            rs.resource.attributes.extend(key_values(resource(service)))
            ss = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = "otel_lab.synthetic", "1.0"
            ss.spans.extend(spans)
        return req

    def logs_request(self) -> ExportLogsServiceRequest:
        req = ExportLogsServiceRequest()
        for service, records in self.logs.items():
            rl = req.resource_logs.add()
            rl.resource.attributes.extend(key_values(resource(service)))
            sl = rl.scope_logs.add()
            sl.scope.name = "otel_lab.synthetic"
            sl.log_records.extend(records)
        return req


def resource(service: str) -> dict[str, Any]:
    return {
        "service.name": service,
        "service.version": "0.1.0",
        "deployment.environment": "local",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "host.name": "laptop",
    }


class Generator:
    """Deterministic (seeded) generator of chain traces, big traces, logs and metrics."""

    def __init__(self, seed: int = 1, error_rate: float = 0.03) -> None:
        self.rng = random.Random(seed)
        self.error_rate = error_rate

    def _id(self, n: int) -> bytes:
        return self.rng.getrandbits(8 * n).to_bytes(n, "big") or b"\x01" * n

    def _span(
        self,
        out: Output,
        service: str,
        trace_id: bytes,
        parent: bytes | None,
        name: str,
        kind: int,
        start: int,
        duration: int,
        attrs: dict[str, Any],
        error: bool = False,
    ) -> bytes:
        span_id = self._id(8)
        s = Span(
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent or b"",
            name=name,
            kind=Span.SpanKind.ValueType(kind),
            start_time_unix_nano=start,
            end_time_unix_nano=start + duration,
        )
        s.attributes.extend(key_values(attrs))
        if error:
            s.status.code = Status.STATUS_CODE_ERROR
            s.status.message = "TypeError: unsupported operand type(s)"
        out.spans.setdefault(service, []).append(s)
        return span_id

    def _log(
        self,
        out: Output,
        service: str,
        trace_id: bytes,
        span_id: bytes,
        at: int,
        body: str,
        severity: int = 9,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        text = {9: "INFO", 13: "WARN", 17: "ERROR"}.get(severity, "INFO")
        record = LogRecord(
            time_unix_nano=at,
            observed_time_unix_nano=at + 50_000,
            severity_number=SeverityNumber.ValueType(severity),
            severity_text=text,
            trace_id=trace_id,
            span_id=span_id,
        )
        record.body.string_value = body
        record.attributes.extend(
            key_values({"logger.name": f"otel_lab.{service}", **(attrs or {})})
        )
        out.logs.setdefault(service, []).append(record)

    def chain(self, out: Output, start: int) -> bytes:
        """One request through gateway -> user -> order -> audit (about 14 spans)."""
        rng = self.rng
        trace_id = self._id(16)
        out.trace_ids.append(trace_id.hex())
        error = rng.random() < self.error_rate
        slow = rng.random() < 0.05
        user_id = rng.randint(1, 5000)
        db_ms = rng.uniform(0.5, 4) * (25 if slow else 1)
        t = start
        total = int((12 + db_ms * 3 + rng.uniform(0, 8)) * MS)
        http = {
            "http.request.method": "POST",
            "url.scheme": "http",
            "network.protocol.version": "1.1",
        }
        root = self._span(
            out,
            "gateway",
            trace_id,
            None,
            "POST /api/v1/process",
            SERVER,
            t,
            total,
            {
                **http,
                "http.route": "/api/v1/process",
                "url.path": "/api/v1/process",
                "http.response.status_code": 500 if error else 200,
                "client.address": "127.0.0.1",
                "user_agent.original": "curl/8.5",
                "request.id": f"req-{rng.getrandbits(48):012x}",
            },
            error,
        )
        self._log(
            out,
            "gateway",
            trace_id,
            root,
            t + MS,
            f"routing POST /api/v1/process for user {user_id}",
        )
        gw_client = self._span(
            out,
            "gateway",
            trace_id,
            root,
            "POST",
            CLIENT,
            t + MS,
            total - 2 * MS,
            {
                **http,
                "server.address": "127.0.0.1",
                "server.port": 5001,
                "url.full": "http://127.0.0.1:5001/process",
                "http.response.status_code": 500 if error else 200,
            },
            error,
        )
        t += 2 * MS
        user_total = total - 4 * MS
        user = self._span(
            out,
            "user-service",
            trace_id,
            gw_client,
            "POST /process",
            SERVER,
            t,
            user_total,
            {
                **http,
                "http.route": "/process",
                "url.path": "/process",
                "http.response.status_code": 500 if error else 200,
                "user.id": user_id,
            },
            error,
        )
        hit = rng.random() < 0.7
        self._span(
            out,
            "user-service",
            trace_id,
            user,
            "GET",
            CLIENT,
            t + MS // 2,
            MS // 3,
            {
                "db.system": "redis",
                "db.statement": f"GET user:{user_id}",
                "server.port": 6379,
                "cache.hit": hit,
            },
        )
        if not hit:
            self._span(
                out,
                "user-service",
                trace_id,
                user,
                "SELECT users",
                CLIENT,
                t + MS,
                int(db_ms * MS),
                {
                    "db.system": "postgresql",
                    "db.name": "otel_lab",
                    "db.operation": "SELECT",
                    "db.statement": SELECT_USER,
                    "server.address": "127.0.0.1",
                    "server.port": 5432,
                },
            )
        if slow:
            self._log(
                out,
                "user-service",
                trace_id,
                user,
                t + 2 * MS,
                f"slow query: {db_ms:.0f} ms for user {user_id}",
                13,
            )
        t += int(db_ms * MS) + 2 * MS
        u_client = self._span(
            out,
            "user-service",
            trace_id,
            user,
            "POST",
            CLIENT,
            t,
            user_total - (t - start) + MS,
            {
                **http,
                "server.address": "127.0.0.1",
                "server.port": 5002,
                "http.response.status_code": 500 if error else 200,
            },
            error,
        )
        t += MS
        order_total = max(user_total - (t - start), 3 * MS)
        order = self._span(
            out,
            "order-service",
            trace_id,
            u_client,
            "POST /process",
            SERVER,
            t,
            order_total,
            {
                **http,
                "http.route": "/process",
                "url.path": "/process",
                "http.response.status_code": 500 if error else 200,
                "order.id": rng.randint(1, 10**6),
            },
            error,
        )
        pricing = self._span(
            out,
            "order-service",
            trace_id,
            order,
            "price order",
            INTERNAL,
            t + MS // 2,
            order_total // 4,
            {"order.lines": rng.randint(1, 6), "currency": "EUR"},
            error,
        )
        if error:
            exc = out.spans["order-service"][-1].events.add(name="exception", time_unix_nano=t + MS)
            exc.attributes.extend(
                key_values(
                    {
                        "exception.type": "TypeError",
                        "exception.message": EXCEPTION_MESSAGE,
                        "exception.stacktrace": STACKTRACE,
                        "exception.escaped": False,
                    }
                )
            )
            self._log(
                out,
                "order-service",
                trace_id,
                pricing,
                t + MS,
                "pricing failed",
                17,
                {"exception.type": "TypeError", "exception.stacktrace": STACKTRACE},
            )
        else:
            ev = out.spans["order-service"][-1].events.add(name="priced", time_unix_nano=t + MS)
            ev.attributes.extend(key_values({"total": round(rng.uniform(5, 500), 2)}))
        self._span(
            out,
            "order-service",
            trace_id,
            order,
            "INSERT orders",
            CLIENT,
            t + order_total // 3,
            int(db_ms * MS / 2) + MS // 4,
            {
                "db.system": "postgresql",
                "db.name": "otel_lab",
                "db.operation": "INSERT",
                "db.statement": INSERT_ORDER,
                "server.port": 5432,
            },
        )
        if not error:
            ot = t + order_total // 2
            o_client = self._span(
                out,
                "order-service",
                trace_id,
                order,
                "POST",
                CLIENT,
                ot,
                order_total // 3,
                {
                    **http,
                    "server.address": "127.0.0.1",
                    "server.port": 5003,
                    "http.response.status_code": 200,
                },
            )
            audit = self._span(
                out,
                "audit-service",
                trace_id,
                o_client,
                "POST /process",
                SERVER,
                ot + MS // 4,
                order_total // 3 - MS // 2,
                {**http, "http.route": "/process", "http.response.status_code": 200},
            )
            self._span(
                out,
                "audit-service",
                trace_id,
                audit,
                "INSERT audit_events",
                CLIENT,
                ot + MS // 2,
                MS // 2,
                {"db.system": "postgresql", "db.operation": "INSERT", "server.port": 5432},
            )
            self._log(
                out,
                "audit-service",
                trace_id,
                audit,
                ot + MS,
                f"audit event recorded for user {user_id}",
            )
        self._log(
            out,
            "order-service",
            trace_id,
            order,
            t + 2 * MS,
            "order processed" if not error else "order failed",
            17 if error else 9,
        )
        return trace_id

    def worker_hop(self, out: Output, start: int) -> bytes:
        """api enqueues a Celery task (PRODUCER) that the worker runs (CONSUMER)."""
        trace_id = self._id(16)
        out.trace_ids.append(trace_id.hex())
        root = self._span(
            out,
            "api",
            trace_id,
            None,
            "POST /items",
            SERVER,
            start,
            9 * MS,
            {
                "http.request.method": "POST",
                "http.route": "/items",
                "http.response.status_code": 201,
            },
        )
        producer = self._span(
            out,
            "api",
            trace_id,
            root,
            "apply_async/tasks.enrich_item",
            PRODUCER,
            start + 6 * MS,
            MS,
            {"messaging.system": "redis", "celery.task_name": "tasks.enrich_item"},
        )
        consumer = self._span(
            out,
            "worker",
            trace_id,
            producer,
            "run/tasks.enrich_item",
            CONSUMER,
            start + 12 * MS,
            30 * MS,
            {"celery.task_name": "tasks.enrich_item", "celery.state": "SUCCESS"},
        )
        self._span(
            out,
            "worker",
            trace_id,
            consumer,
            "UPDATE items",
            CLIENT,
            start + 20 * MS,
            3 * MS,
            {"db.system": "postgresql", "db.operation": "UPDATE", "server.port": 5432},
        )
        self._log(out, "worker", trace_id, consumer, start + 40 * MS, "item enriched")
        return trace_id

    def batch(self, traces: int, start: int, spacing: int = 10 * MS) -> Output:
        """``traces`` requests (9 in 10 chain, 1 in 10 worker hop), ``spacing`` ns apart."""
        out = Output()
        for i in range(traces):
            at = start + i * spacing
            if i % 10 == 9:
                self.worker_hop(out, at)
            else:
                self.chain(out, at)
        return out

    def big_trace(self, spans: int, start: int, services: int = 5) -> Output:
        """One trace of ``spans`` spans: a deep and wide tree, as a batch job or fan-out."""
        out = Output()
        trace_id = self._id(16)
        out.trace_ids.append(trace_id.hex())
        names = [f"svc-{i}" for i in range(services)]
        root = self._span(
            out,
            names[0],
            trace_id,
            None,
            "POST /batch",
            SERVER,
            start,
            spans * MS // 4,
            {"http.request.method": "POST", "http.route": "/batch"},
        )
        parents = [(root, start, spans * MS // 4)]
        for i in range(1, spans):
            parent, p_start, p_dur = parents[self.rng.randrange(len(parents))]
            child_start = p_start + self.rng.randrange(max(p_dur // 2, 1))
            child_dur = max(p_dur // self.rng.randint(2, 6), 1000)
            sid = self._span(
                out,
                names[i % services],
                trace_id,
                parent,
                f"step {i % 97}",
                INTERNAL if i % 7 else CLIENT,
                child_start,
                child_dur,
                {"step.index": i, "db.system": "postgresql"} if i % 7 == 0 else {"step.index": i},
            )
            if len(parents) < 2000 and child_dur > 20_000:
                parents.append((sid, child_start, child_dur))
            if i % 50 == 0:
                self._log(out, names[i % services], trace_id, sid, child_start, f"step {i} done")
        return out

    def metrics(
        self,
        start: int,
        points: int,
        exemplar_traces: list[tuple[str, str]] | None = None,
        interval: int = 10_000_000_000,
    ) -> ExportMetricsServiceRequest:
        """Cumulative request-duration histograms and request counters per route, with
        exemplars pointing at the given (trace_id, span_id) pairs."""
        req = ExportMetricsServiceRequest()
        rm = req.resource_metrics.add()
        rm.resource.attributes.extend(key_values(resource("gateway")))
        sm = rm.scope_metrics.add()
        sm.scope.name = "otel_lab.synthetic"
        bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
        duration = Metric(
            name="http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
        )
        duration.histogram.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
        requests = Metric(name="http.server.requests", unit="{request}")
        requests.sum.is_monotonic = True
        requests.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
        hits = Metric(name="cache.lookups", unit="{lookup}")
        hits.sum.is_monotonic = True
        hits.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
        exemplars = list(exemplar_traces or [])
        for route in ("/api/v1/process", "/api/v1/items"):
            counts = [0] * (len(bounds) + 1)
            total = 0.0
            n = 0
            for p in range(points):
                at = start + p * interval
                for _ in range(self.rng.randint(20, 60)):
                    v = self.rng.lognormvariate(-4.2, 0.8)
                    counts[sum(1 for b in bounds if v > b)] += 1
                    total += v
                    n += 1
                dp = duration.histogram.data_points.add(
                    start_time_unix_nano=start - interval,
                    time_unix_nano=at,
                    count=n,
                    sum=total,
                    bucket_counts=list(counts),
                    explicit_bounds=bounds,
                )
                dp.attributes.extend(
                    key_values({"http.route": route, "http.request.method": "POST"})
                )
                if exemplars:
                    tid, sid = exemplars[(p + len(route)) % len(exemplars)]
                    dp.exemplars.append(
                        Exemplar(
                            time_unix_nano=at - interval // 2,
                            as_double=round(self.rng.uniform(0.05, 0.3), 4),
                            trace_id=bytes.fromhex(tid),
                            span_id=bytes.fromhex(sid),
                        )
                    )
                rq = requests.sum.data_points.add(
                    start_time_unix_nano=start - interval, time_unix_nano=at, as_int=n
                )
                rq.attributes.extend(key_values({"http.route": route}))
        for result in ("hit", "miss"):
            value = 0
            for p in range(points):
                value += self.rng.randint(30, 60) if result == "hit" else self.rng.randint(5, 20)
                dp = hits.sum.data_points.add(
                    start_time_unix_nano=start - interval,
                    time_unix_nano=start + p * interval,
                    as_int=value,
                )
                dp.attributes.extend(key_values({"cache.result": result}))
        sm.metrics.extend([duration, requests, hits])
        return req
