"""Export stored telemetry as OTLP JSON, and import OTLP JSON files.

The export format is JSON Lines: each line is one OTLP JSON export request
(``{"resourceSpans": ...}``, ``{"resourceLogs": ...}`` or ``{"resourceMetrics": ...}``), the
format the OpenTelemetry Collector's file exporter writes. A one-trace export is a single
traces line (plus a logs line when the trace has logs), so the first line can also be
POSTed to any collector's ``/v1/traces`` as it is.

Why lines: a time-range export can be large; it is streamed in chunks from its own read
connection, so memory stays flat whatever the range.

Known loss: bytes-valued attributes are stored as base64 text and come back as strings.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence

from otel_lab.console import otlp
from otel_lab.console.model import MetricRow, PointRow
from otel_lab.console.otlp import Batch
from otel_lab.console.queries import json_object
from otel_lab.jsontypes import JSONArray, JSONObject, JSONValue

TRACE_CHUNK = 200  # traces per exported line
ROW_CHUNK = 2000  # logs or metric points per exported line

_SIGNAL_KEYS: dict[otlp.Signal, tuple[str, str]] = {
    "traces": ("resourceSpans", "resource_spans"),
    "logs": ("resourceLogs", "resource_logs"),
    "metrics": ("resourceMetrics", "resource_metrics"),
}


# --------------------------------------------------------------------------- values


def any_value(value: object) -> JSONObject:
    """A native value as an OTLP JSON AnyValue (64-bit integers as strings, per spec)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": key_values(value)}}
    return {}


def key_values(attrs: Mapping[str, object] | None) -> JSONArray:
    return [{"key": k, "value": any_value(v)} for k, v in (attrs or {}).items()]


class _Catalogue:
    """Resources and scopes by id, loaded once per export."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.resources = {
            rid: json_object(attrs)
            for rid, attrs in conn.execute("SELECT id, attributes FROM resources")
        }
        self.scopes = {
            sid: (name, version, json_object(attrs))
            for sid, name, version, attrs in conn.execute(
                "SELECT id, name, version, attributes FROM scopes"
            )
        }

    def resource(self, rid: int) -> JSONObject:
        return {"attributes": key_values(self.resources.get(rid, {}))}

    def scope(self, sid: int) -> JSONObject:
        name, version, attrs = self.scopes.get(sid, ("", None, {}))
        out: JSONObject = {"name": name}
        if version:
            out["version"] = version
        if attrs:
            out["attributes"] = key_values(attrs)
        return out


def _group(
    items: list[tuple[int, int, JSONObject]], cat: _Catalogue, list_key: str, scope_key: str
) -> JSONArray:
    """(resource_id, scope_id, item) -> [{resource, scopeX: [{scope, items}]}]."""
    grouped: dict[int, dict[int, JSONArray]] = {}
    for rid, sid, item in items:
        grouped.setdefault(rid, {}).setdefault(sid, []).append(item)
    return [
        {
            "resource": cat.resource(rid),
            scope_key: [
                {"scope": cat.scope(sid), list_key: scoped} for sid, scoped in scopes.items()
            ],
        }
        for rid, scopes in grouped.items()
    ]


# --------------------------------------------------------------------------- spans

_SPAN_SQL = (
    "SELECT trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code,"
    " status_message, attributes, events, links, resource_id, scope_id FROM spans"
)
# A row of _SPAN_SQL.
_SpanExport = tuple[
    bytes, bytes, bytes | None, str, int, int, int, int,
    str | None, str | None, str | None, str | None, int, int,
]  # fmt: skip


def _span(row: _SpanExport) -> tuple[int, int, JSONObject]:
    tid, sid, parent, name, kind, start, end, code, message, attrs, events, links, rid, scid = row
    span: JSONObject = {
        "traceId": tid.hex(),
        "spanId": sid.hex(),
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
    }
    if parent:
        span["parentSpanId"] = parent.hex()
    if attrs:
        span["attributes"] = key_values(json.loads(attrs))
    if events:
        span["events"] = [
            {"timeUnixNano": str(e["time_unix_nano"]), "name": e["name"],
             "attributes": key_values(e.get("attributes"))}
            for e in json.loads(events)
        ]  # fmt: skip
    if links:
        span["links"] = [
            {"traceId": link["trace_id"], "spanId": link["span_id"],
             "attributes": key_values(link.get("attributes")),
             **({"traceState": link["trace_state"]} if link.get("trace_state") else {})}
            for link in json.loads(links)
        ]  # fmt: skip
    status: JSONObject = {}
    if code:
        status["code"] = code
    if message:
        status["message"] = message
    if status:
        span["status"] = status
    return rid, scid, span


def _spans_line(rows: list[_SpanExport], cat: _Catalogue) -> str:
    doc = {"resourceSpans": _group([_span(r) for r in rows], cat, "spans", "scopeSpans")}
    return json.dumps(doc, separators=(",", ":")) + "\n"


# --------------------------------------------------------------------------- logs

_LOG_SQL = (
    "SELECT time_ns, observed_ns, severity_number, severity_text, body, body_is_json,"
    " attributes, trace_id, span_id, event_name, resource_id, scope_id FROM logs"
)
# A row of _LOG_SQL.
_LogExport = tuple[
    int, int | None, int, str | None, str | None, int,
    str | None, bytes | None, bytes | None, str | None, int, int,
]  # fmt: skip


def _log(row: _LogExport) -> tuple[int, int, JSONObject]:
    ts, observed, number, text, body, is_json, attrs, tid, sid, event, rid, scid = row
    record: JSONObject = {"timeUnixNano": str(ts), "severityNumber": number}
    if observed:
        record["observedTimeUnixNano"] = str(observed)
    if text:
        record["severityText"] = text
    if body is not None:
        record["body"] = any_value(json.loads(body)) if is_json else {"stringValue": body}
    if attrs:
        record["attributes"] = key_values(json.loads(attrs))
    if tid:
        record["traceId"] = tid.hex()
    if sid:
        record["spanId"] = sid.hex()
    if event:
        record["eventName"] = event
    return rid, scid, record


def _logs_line(rows: Sequence[_LogExport], cat: _Catalogue) -> str:
    doc = {"resourceLogs": _group([_log(r) for r in rows], cat, "logRecords", "scopeLogs")}
    return json.dumps(doc, separators=(",", ":")) + "\n"


# --------------------------------------------------------------------------- metrics


_POINT_SQL = f"SELECT {', '.join('p.' + f for f in PointRow._fields)} FROM metric_points p"
_METRIC_SQL = f"SELECT {', '.join(MetricRow._fields)} FROM metrics"
_TYPE_KEYS = {"sum": "sum", "gauge": "gauge", "histogram": "histogram",
              "exponential_histogram": "exponentialHistogram", "summary": "summary"}  # fmt: skip


def _number(value: JSONValue, int_key: str, double_key: str) -> JSONObject:
    if isinstance(value, int) and not isinstance(value, bool):
        return {int_key: str(value)}
    return {double_key: value}


def _point(kind: str, row: PointRow) -> JSONObject:
    _mid, _service, attrs, start, ts, value, data, exemplars, _rid, _sid = row
    point: JSONObject = {"timeUnixNano": str(ts)}
    if start:
        point["startTimeUnixNano"] = str(start)
    if attrs:
        point["attributes"] = key_values(json.loads(attrs))
    fields = json.loads(data) if data else {}
    if kind in ("sum", "gauge"):
        point.update(_number(value, "asInt", "asDouble"))
    elif kind in ("histogram", "exponential_histogram", "summary"):
        point["count"] = str(fields.get("count", 0))
        if fields.get("sum") is not None:
            point["sum"] = fields["sum"]
        for key in ("min", "max"):
            if key in fields:
                point[key] = fields[key]
        if kind == "histogram":
            point["bucketCounts"] = [str(c) for c in fields.get("bucket_counts", [])]
            point["explicitBounds"] = fields.get("explicit_bounds", [])
        elif kind == "exponential_histogram":
            point["scale"] = fields.get("scale", 0)
            point["zeroCount"] = str(fields.get("zero_count", 0))
            point["zeroThreshold"] = fields.get("zero_threshold", 0)
            for side in ("positive", "negative"):
                buckets = fields.get(side) or {}
                point[side] = {
                    "offset": buckets.get("offset", 0),
                    "bucketCounts": [str(c) for c in buckets.get("bucket_counts", [])],
                }
        else:
            point["quantileValues"] = fields.get("quantile_values", [])
    if exemplars:
        point["exemplars"] = [
            {"timeUnixNano": str(e["time_unix_nano"]),
             **_number(e["value"], "asInt", "asDouble"),
             **({"traceId": e["trace_id"]} if e.get("trace_id") else {}),
             **({"spanId": e["span_id"]} if e.get("span_id") else {}),
             "filteredAttributes": key_values(e.get("attributes"))}
            for e in json.loads(exemplars)
        ]  # fmt: skip
    return point


def _metrics_line(rows: list[PointRow], metrics: dict[int, MetricRow], cat: _Catalogue) -> str:
    # resource -> scope -> metric id -> points
    grouped: dict[int, dict[int, dict[int, JSONArray]]] = {}
    for row in rows:
        by_metric = grouped.setdefault(row.resource_id, {}).setdefault(row.scope_id, {})
        by_metric.setdefault(row.metric_id, []).append(_point(metrics[row.metric_id].type, row))
    resource_metrics: JSONArray = []
    for rid, scopes in grouped.items():
        scope_metrics: JSONArray = []
        for sid, by_metric in scopes.items():
            out: JSONArray = []
            for mid, points in by_metric.items():
                _id, name, kind, unit, description, monotonic, temporality = metrics[mid]
                body: JSONObject = {"dataPoints": points}
                if kind in ("sum", "histogram", "exponential_histogram") and temporality:
                    body["aggregationTemporality"] = temporality
                if kind == "sum":
                    body["isMonotonic"] = bool(monotonic)
                metric: JSONObject = {"name": name, _TYPE_KEYS[kind]: body}
                if unit:
                    metric["unit"] = unit
                if description:
                    metric["description"] = description
                out.append(metric)
            scope_metrics.append({"scope": cat.scope(sid), "metrics": out})
        resource_metrics.append({"resource": cat.resource(rid), "scopeMetrics": scope_metrics})
    return json.dumps({"resourceMetrics": resource_metrics}, separators=(",", ":")) + "\n"


# --------------------------------------------------------------------------- export


def export_trace(conn: sqlite3.Connection, trace_id: bytes) -> Iterator[str]:
    """One trace (and its logs) as OTLP JSON lines; nothing when the trace is unknown."""
    cat = _Catalogue(conn)
    spans = conn.execute(f"{_SPAN_SQL} WHERE trace_id = ? ORDER BY start_ns", (trace_id,))
    rows = spans.fetchall()
    if not rows:
        return
    yield _spans_line(rows, cat)
    logs = conn.execute(f"{_LOG_SQL} WHERE trace_id = ? ORDER BY time_ns", (trace_id,)).fetchall()
    if logs:
        yield _logs_line(logs, cat)


def export_range(
    conn: sqlite3.Connection,
    since_ns: int,
    until_ns: int,
    signals: tuple[str, ...] = ("traces", "logs", "metrics"),
) -> Iterator[str]:
    """Everything in [since, until] as OTLP JSON lines, in chunks (keyset pagination, so
    each chunk is a short indexed query and memory stays flat)."""
    cat = _Catalogue(conn)
    if "traces" in signals:
        after: tuple[int, bytes] = (since_ns - 1, b"\xff" * 16)
        while True:
            traces = conn.execute(
                "SELECT trace_id, start_ns FROM traces WHERE (start_ns, trace_id) > (?, ?)"
                " AND start_ns <= ? ORDER BY start_ns, trace_id LIMIT ?",
                (*after, until_ns, TRACE_CHUNK),
            ).fetchall()
            if not traces:
                break
            last_id, last_start = traces[-1]
            after = (last_start, last_id)
            ids = [trace_id for trace_id, _start in traces]
            marks = ",".join("?" * len(ids))
            rows = conn.execute(
                f"{_SPAN_SQL} WHERE trace_id IN ({marks}) ORDER BY start_ns", ids
            ).fetchall()
            if rows:
                yield _spans_line(rows, cat)
    metrics = {m.id: m for m in map(MetricRow._make, conn.execute(_METRIC_SQL))}
    for signal, sql, alias in (("logs", _LOG_SQL, "logs"), ("metrics", _POINT_SQL, "p")):
        if signal not in signals:
            continue
        position = (since_ns - 1, 2**63 - 1)  # (time_ns, rowid)
        while True:
            # Keyset pagination over the (time_ns) index, whose entries carry the rowid.
            columns = sql.replace("SELECT ", f"SELECT {alias}.time_ns, {alias}.rowid, ", 1)
            rows = conn.execute(
                f"{columns} WHERE ({alias}.time_ns, {alias}.rowid) > (?, ?)"
                f" AND {alias}.time_ns <= ? ORDER BY {alias}.time_ns, {alias}.rowid LIMIT ?",
                (*position, until_ns, ROW_CHUNK),
            ).fetchall()
            if not rows:
                break
            last_time, last_rowid, *_ = rows[-1]
            position = (last_time, last_rowid)
            body = [row for _time, _rowid, *row in rows]
            if signal == "logs":
                yield _logs_line(body, cat)
            else:
                points = [p for p in map(PointRow._make, body) if p.metric_id in metrics]
                yield _metrics_line(points, metrics, cat)


# --------------------------------------------------------------------------- import


def parse_import(body: bytes) -> list[tuple[otlp.Signal, Batch]]:
    """Batches from an OTLP JSON document or JSON Lines of them; raises otlp.DecodeError.

    A document may hold several signals at once (an exported line holds one); each is
    decoded with the receiver's own OTLP JSON decoder, so import accepts what /v1/* accepts.
    """
    text = body.decode("utf-8-sig", errors="strict") if body else ""
    documents: JSONArray = []
    stripped = text.strip()
    if not stripped:
        raise otlp.DecodeError("the file is empty")
    try:
        documents = [json.loads(stripped)]
    except RecursionError:
        raise otlp.DecodeError("the file is nested too deeply") from None
    except ValueError:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                documents.append(json.loads(line))
            except ValueError as exc:
                raise otlp.DecodeError(
                    f"line {number} is not JSON ({exc}); expected OTLP JSON or JSON Lines"
                ) from None
            except RecursionError:
                raise otlp.DecodeError(f"line {number} is nested too deeply") from None
    out: list[tuple[otlp.Signal, Batch]] = []
    for number, doc in enumerate(documents, 1):
        if not isinstance(doc, dict):
            raise otlp.DecodeError(f"document {number} is not a JSON object")
        found = False
        for signal, keys in _SIGNAL_KEYS.items():
            if any(k in doc for k in keys):
                found = True
                part = {k: doc[k] for k in keys if k in doc}
                message = otlp.parse_request(signal, json.dumps(part).encode(), "json")
                out.append((signal, otlp.DECODERS[signal](message)))
        if not found:
            raise otlp.DecodeError(
                f"document {number} has none of resourceSpans, resourceLogs, resourceMetrics"
            )
    return out
