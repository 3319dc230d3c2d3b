"""Decode OTLP export requests (protobuf or OTLP JSON) into rows for the store.

Everything here is pure and synchronous: the receiver calls it inside the request, so the
writer thread only ever sees ready-made tuples and the cost of decoding stays with the
client that caused it. Rows are plain tuples in the column order of ``store.py``'s tables,
because ``executemany`` over tuples is the fastest way into SQLite.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Exemplar,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    NumberDataPoint,
    SummaryDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_lab.console.model import (
    LogRow,
    MetricRow,
    PointData,
    PointRow,
    ResourceRow,
    ScopeRow,
    SpanKind,
    SpanRow,
)
from otel_lab.jsontypes import JSONArray, JSONObject, JSONValue

Signal = Literal["traces", "metrics", "logs"]
Format = Literal["proto", "json"]

# A request that inflates beyond this is refused (413): a zip bomb must not cost memory.
MAX_DECODED_BYTES = 64 * 1024 * 1024

UNKNOWN_SERVICE = "unknown_service"
# OTLP timestamps are unsigned 64-bit; SQLite integers are signed. Larger ones are rejected.
MAX_TIME = 2**63 - 1
TIME_RANGE = "timestamps must be below 2^63 ns"
# The scales the OTLP data model allows an exponential histogram (its buckets' bounds are
# 2^(i / 2^scale): beyond these they are no longer distinct floats).
MIN_SCALE, MAX_SCALE = -10, 20
SCALE_RANGE = f"exponential histogram scale must be in [{MIN_SCALE}, {MAX_SCALE}]"
BUCKETS_MISMATCH = "histogram bucket_counts must be empty or one longer than explicit_bounds"
NESTED_TOO_DEEPLY = "body is nested too deeply"  # JSON that json.loads recurses out of
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_SEVERITY_INFO = 9
# Rows built from a tuple in C, without the Python-level __new__ a NamedTuple call runs
# (about 0.5 us a span on the ingest path).
_span_row = partial(tuple.__new__, SpanRow)
_log_row = partial(tuple.__new__, LogRow)
_point_row = partial(tuple.__new__, PointRow)
# Server spans of this instrumentation scope (the services' telemetry middleware) stand
# for their access log line.
ACCESS_LOG_SCOPE = "otel_lab.http"
# The span kinds RED summarises (store/summaries.py).
_RED_KINDS = (SpanKind.SERVER, SpanKind.CONSUMER)


class DecodeError(ValueError):
    """The body cannot be decoded as the OTLP message it claims to be (HTTP 400)."""


class BodyTooLarge(ValueError):
    """The (decompressed) body is larger than ``MAX_DECODED_BYTES`` (HTTP 413)."""


# --------------------------------------------------------------------------- JSON values


def _sanitize(value: object) -> object:
    """Replace NaN/Infinity, which JSON (and SQLite's JSON functions) cannot hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _sanitize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sanitize(v) for v in value]
    return value


_json_string: Callable[[str], str] = json.encoder.encode_basestring
_encode_strict = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def dumps(value: object) -> str:
    """Compact JSON (of what ``json`` encodes: JSON values, TypedDicts, tuples); the fast
    path never pays for the NaN check unless it fails."""
    try:
        return _encode_strict(value)
    except ValueError:
        return _encode_strict(_sanitize(value))


def any_value(v: AnyValue) -> JSONValue:
    """AnyValue -> native Python (bytes become base64 text, as in OTLP JSON)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "double_value":
        return v.double_value
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    return None


def attributes(kvs: Iterable[KeyValue]) -> JSONObject:
    """KeyValue list -> dict; strings and ints (most attributes) skip the generic path."""
    out: JSONObject = {}
    for kv in kvs:
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "string_value":
            out[kv.key] = value.string_value
        elif kind == "int_value":
            out[kv.key] = value.int_value
        else:
            out[kv.key] = any_value(value)
    return out


def attributes_json(kvs: Iterable[KeyValue]) -> str | None:
    """Attributes as compact JSON, or None (NULL costs no bytes) when there are none."""
    if not kvs:
        return None
    return dumps(attributes(kvs))


def stable_id(*parts: str) -> int:
    """A 63-bit id derived from content, so dedup needs no lookup round trip."""
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def metric_id(name: str) -> int:
    return stable_id("metric", name)


# --------------------------------------------------------------------------- batches


@dataclass(slots=True)
class Batch:
    """Rows decoded from one export request, ready for the writer thread."""

    resources: dict[int, ResourceRow] = field(default_factory=dict)
    scopes: dict[int, ScopeRow] = field(default_factory=dict)
    spans: list[SpanRow] = field(default_factory=list)
    logs: list[LogRow] = field(default_factory=list)
    metrics: dict[int, MetricRow] = field(default_factory=dict)
    metric_services: set[tuple[int, str]] = field(default_factory=set)
    points: list[PointRow] = field(default_factory=list)
    # The decoded attributes of the SERVER and CONSUMER spans, by (trace_id, span_id): the
    # writer's RED summary reads their route from here instead of parsing the JSON again.
    red_attributes: dict[tuple[bytes, bytes], JSONObject] = field(default_factory=dict)
    rejected: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.spans) + len(self.logs) + len(self.points)

    def oldest_ns(self) -> int | None:
        """The earliest timestamp of a span, log record or point in the batch."""
        times = [s.start_ns for s in self.spans] + [r.time_ns for r in self.logs]
        times += [p.time_ns for p in self.points]
        return min(times) if times else None

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejected += count
        if len(self.problems) < 5 and reason not in self.problems:
            self.problems.append(reason)

    def add_resource(self, resource: Resource) -> tuple[int, str]:
        attrs = attributes(resource.attributes)
        service = attrs.get("service.name")
        service = service if isinstance(service, str) and service else UNKNOWN_SERVICE
        canonical = dumps(dict(sorted(attrs.items()))) if attrs else None
        rid = stable_id("resource", canonical or "")
        self.resources[rid] = ResourceRow(rid, service, canonical)
        return rid, service

    def add_scope(self, scope: InstrumentationScope) -> int:
        attrs = attributes_json(scope.attributes)
        sid = stable_id("scope", scope.name, scope.version, attrs or "")
        self.scopes[sid] = ScopeRow(sid, scope.name, scope.version or None, attrs)
        return sid


def _events_json(events: Iterable[Span.Event]) -> str | None:
    if not events:
        return None
    return dumps(
        [
            {
                "name": e.name,
                "time_unix_nano": e.time_unix_nano,
                "attributes": attributes(e.attributes),
            }
            for e in events
        ]
    )


def _links_json(links: Iterable[Span.Link]) -> str | None:
    if not links:
        return None
    out: JSONArray = []
    for link in links:
        item: JSONObject = {
            "trace_id": link.trace_id.hex(),
            "span_id": link.span_id.hex(),
            "attributes": attributes(link.attributes),
        }
        if link.trace_state:
            item["trace_state"] = link.trace_state
        out.append(item)
    return dumps(out)


def decode_traces(req: ExportTraceServiceRequest) -> Batch:
    """The request's spans as rows (and the access-log lines rebuilt from server spans)."""
    batch = Batch()
    rows = batch.spans
    red_attributes = batch.red_attributes
    for rs in req.resource_spans:
        rid, service = batch.add_resource(rs.resource)
        for ss in rs.scope_spans:
            sid = batch.add_scope(ss.scope)
            access_log = ss.scope.name == ACCESS_LOG_SCOPE
            for sp in ss.spans:
                trace_id = sp.trace_id
                span_id = sp.span_id
                parent = sp.parent_span_id or None
                if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
                    batch.reject(f"span trace_id must be 16 non-zero bytes, got {len(trace_id)}")
                    continue
                if len(span_id) != 8 or span_id == _ZERO_SPAN:
                    batch.reject(f"span span_id must be 8 non-zero bytes, got {len(span_id)}")
                    continue
                if parent is not None and len(parent) != 8:
                    batch.reject(f"span parent_span_id must be 8 bytes, got {len(parent)}")
                    continue
                start = sp.start_time_unix_nano
                end = sp.end_time_unix_nano
                if start > MAX_TIME or end > MAX_TIME:
                    batch.reject(TIME_RANGE)
                    continue
                status = sp.status
                attrs = attributes(sp.attributes) if sp.attributes else None
                rows.append(
                    _span_row(
                        (
                            trace_id,
                            span_id,
                            parent,
                            sp.name,
                            sp.kind,
                            service,
                            start,
                            end,
                            end - start if end > start else 0,
                            status.code,
                            status.message or None,
                            dumps(attrs) if attrs else None,
                            _events_json(sp.events),
                            _links_json(sp.links),
                            rid,
                            sid,
                        )
                    )
                )
                if attrs and sp.kind in _RED_KINDS:
                    red_attributes[(trace_id, span_id)] = attrs
                    if access_log and sp.kind == SpanKind.SERVER:
                        batch.logs.append(_access_log_row(sp, attrs, service, rid, sid))
    return batch


def _access_log_row(
    sp: Span, attrs: Mapping[str, JSONValue], service: str, rid: int, sid: int
) -> LogRow:
    """The ``request_completed`` line of a request, rebuilt from its server span.

    The services write that line to stderr but do not export it over OTLP, because the
    span says the same (docs/instrumentation.md); the logs view shows it all the same.
    """
    elapsed_ns = max(sp.end_time_unix_nano - sp.start_time_unix_nano, 0)
    return LogRow(
        sp.end_time_unix_nano,
        None,
        _SEVERITY_INFO,
        "INFO",
        "request_completed",
        0,
        access_log_body(attrs, round(elapsed_ns / 1e6, 2)),
        sp.trace_id,
        sp.span_id,
        None,
        service,
        rid,
        sid,
    )


_access_prefixes: dict[tuple[str, str], str] = {}


def access_log_body(attrs: Mapping[str, JSONValue], elapsed_ms: float) -> str:
    """The access line's JSON fields. Every server span makes one, so the usual shape
    (string method, route and request ID, integer status) is written from a prefix
    encoded once per (method, route); anything else goes through :func:`dumps`. Both give
    the same text (tests/console/test_ingest_paths.py)."""
    method = attrs.get("http.request.method_original") or attrs.get("http.request.method")
    path = attrs.get("http.route") or attrs.get("url.path")
    status = attrs.get("http.response.status_code")
    request_id = attrs.get("request.id")
    if type(method) is str and type(path) is str and type(status) is int:
        prefix = _access_prefixes.get((method, path))
        if prefix is None:
            if len(_access_prefixes) > 1024:
                _access_prefixes.clear()
            prefix = _access_prefixes[(method, path)] = dumps({"method": method, "path": path})
        if type(request_id) is str:
            return (
                f'{prefix[:-1]},"status_code":{status},"elapsed_ms":{elapsed_ms!r},'
                f'"request_id":{_json_string(request_id)},"derived_from":"server span"}}'
            )
    fields = {
        "method": method,
        "path": path,
        "status_code": status,
        "elapsed_ms": elapsed_ms,
        "request_id": request_id,
        "derived_from": "server span",
    }
    return dumps({k: v for k, v in fields.items() if v is not None})


def decode_logs(req: ExportLogsServiceRequest) -> Batch:
    """The request's log records as rows."""
    batch = Batch()
    rows = batch.logs
    for rl in req.resource_logs:
        rid, service = batch.add_resource(rl.resource)
        for sl in rl.scope_logs:
            sid = batch.add_scope(sl.scope)
            for lr in sl.log_records:
                trace_id = lr.trace_id or None
                span_id = lr.span_id or None
                if trace_id is not None and len(trace_id) != 16:
                    batch.reject(f"log trace_id must be 16 bytes, got {len(trace_id)}")
                    continue
                if span_id is not None and len(span_id) != 8:
                    batch.reject(f"log span_id must be 8 bytes, got {len(span_id)}")
                    continue
                body_kind = lr.body.WhichOneof("value")
                if body_kind == "string_value":
                    body, body_is_json = lr.body.string_value, 0
                elif body_kind is None:
                    body, body_is_json = None, 0
                else:
                    body, body_is_json = dumps(any_value(lr.body)), 1
                observed = lr.observed_time_unix_nano
                if lr.time_unix_nano > MAX_TIME or observed > MAX_TIME:
                    batch.reject(TIME_RANGE)
                    continue
                rows.append(
                    _log_row(
                        (
                            lr.time_unix_nano or observed,
                            observed or None,
                            lr.severity_number,
                            lr.severity_text or None,
                            body,
                            body_is_json,
                            attributes_json(lr.attributes),
                            trace_id,
                            span_id,
                            lr.event_name or None,
                            service,
                            rid,
                            sid,
                        )
                    )
                )
    return batch


def _exemplars_json(exemplars: Iterable[Exemplar] | None) -> str | None:
    if not exemplars:
        return None
    out: JSONArray = []
    for ex in exemplars:
        value = ex.as_double if ex.WhichOneof("value") == "as_double" else ex.as_int
        out.append(
            {
                "time_unix_nano": ex.time_unix_nano,
                "value": value,
                "trace_id": ex.trace_id.hex() or None,
                "span_id": ex.span_id.hex() or None,
                "attributes": attributes(ex.filtered_attributes),
            }
        )
    return dumps(out)


def _number(dp: NumberDataPoint) -> int | float:
    value: int | float = dp.as_double if dp.WhichOneof("value") == "as_double" else dp.as_int
    return value


class _Refused(ValueError):
    """A data point the metric views would fail on; the message says why."""


def _histogram(dp: HistogramDataPoint) -> PointData:
    counts, bounds = list(dp.bucket_counts), list(dp.explicit_bounds)
    if counts and len(counts) != len(bounds) + 1:
        raise _Refused(BUCKETS_MISMATCH)
    data: PointData = {
        "count": dp.count,
        "sum": dp.sum if dp.HasField("sum") else None,
        "bucket_counts": counts,
        "explicit_bounds": bounds,
    }
    if dp.HasField("min"):
        data["min"] = dp.min
    if dp.HasField("max"):
        data["max"] = dp.max
    return data


def _exponential_histogram(dp: ExponentialHistogramDataPoint) -> PointData:
    if not MIN_SCALE <= dp.scale <= MAX_SCALE:
        raise _Refused(SCALE_RANGE)
    data: PointData = {
        "count": dp.count,
        "sum": dp.sum if dp.HasField("sum") else None,
        "scale": dp.scale,
        "zero_count": dp.zero_count,
        "zero_threshold": dp.zero_threshold,
        "positive": {
            "offset": dp.positive.offset,
            "bucket_counts": list(dp.positive.bucket_counts),
        },
        "negative": {
            "offset": dp.negative.offset,
            "bucket_counts": list(dp.negative.bucket_counts),
        },
    }
    if dp.HasField("min"):
        data["min"] = dp.min
    if dp.HasField("max"):
        data["max"] = dp.max
    return data


def _summary(dp: SummaryDataPoint) -> PointData:
    return {
        "count": dp.count,
        "sum": dp.sum,
        "quantile_values": [{"quantile": q.quantile, "value": q.value} for q in dp.quantile_values],
    }


# Metric type name -> how to turn one data point into (value, data-JSON-dict). The point
# comes from ``getattr(metric, kind)``, whose type depends on ``kind``.
_POINT_DECODERS: dict[str, Callable[[Any], tuple[int | float | None, PointData | None]]] = {
    "gauge": lambda dp: (_number(dp), None),
    "sum": lambda dp: (_number(dp), None),
    "histogram": lambda dp: (None, _histogram(dp)),
    "exponential_histogram": lambda dp: (None, _exponential_histogram(dp)),
    "summary": lambda dp: (None, _summary(dp)),
}


def decode_metrics(req: ExportMetricsServiceRequest) -> Batch:
    """The request's metrics (one row each) and their data points as rows."""
    batch = Batch()
    rows = batch.points
    for rm in req.resource_metrics:
        rid, service = batch.add_resource(rm.resource)
        for sm in rm.scope_metrics:
            sid = batch.add_scope(sm.scope)
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    batch.reject(f"metric {metric.name!r} has no data", count=0)
                    continue
                data = getattr(metric, kind)
                if not metric.name:
                    batch.reject("metric without a name", count=len(data.data_points))
                    continue
                mid = metric_id(metric.name)
                monotonic = int(data.is_monotonic) if kind == "sum" else None
                temporality = getattr(data, "aggregation_temporality", None) or None
                batch.metrics[mid] = MetricRow(
                    mid,
                    metric.name,
                    kind,
                    metric.unit or None,
                    metric.description or None,
                    monotonic,
                    temporality,
                )
                batch.metric_services.add((mid, service))
                decode_point = _POINT_DECODERS[kind]
                for dp in data.data_points:
                    if dp.time_unix_nano > MAX_TIME or dp.start_time_unix_nano > MAX_TIME:
                        batch.reject(TIME_RANGE)
                        continue
                    try:
                        value, extra = decode_point(dp)
                    except _Refused as exc:
                        batch.reject(str(exc))
                        continue
                    rows.append(
                        _point_row(
                            (
                                mid,
                                service,
                                attributes_json(dp.attributes),
                                dp.start_time_unix_nano or None,
                                dp.time_unix_nano,
                                value,
                                dumps(extra) if extra is not None else None,
                                _exemplars_json(getattr(dp, "exemplars", None)),
                                rid,
                                sid,
                            )
                        )
                    )
    return batch


# --------------------------------------------------------------------------- requests

REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}
DECODERS: dict[str, Callable[[Any], Batch]] = {
    "traces": decode_traces,
    "metrics": decode_metrics,
    "logs": decode_logs,
}


def decompress(body: bytes, encoding: str) -> bytes:
    """Undo Content-Encoding (gzip or deflate), bounded by ``MAX_DECODED_BYTES``."""
    if encoding in ("", "identity"):
        return body
    wbits = {"gzip": 31, "x-gzip": 31, "deflate": 15}.get(encoding)
    if wbits is None:
        raise ValueError(encoding)
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, MAX_DECODED_BYTES)
    except zlib.error as exc:
        raise DecodeError(f"body is not valid {encoding} data: {exc}") from None
    if inflater.unconsumed_tail:
        raise BodyTooLarge(f"decompressed body exceeds {MAX_DECODED_BYTES} bytes")
    if not inflater.eof:
        raise DecodeError(f"body is truncated {encoding} data")
    return out


def parse_request(signal: Signal, body: bytes, fmt: Format) -> Message:
    """Parse an export request body; raise DecodeError with a message a human can act on."""
    message = REQUEST_TYPES[signal]()
    if fmt == "proto":
        try:
            message.ParseFromString(body)
        except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
            raise DecodeError(
                f"body is not a valid protobuf {message.DESCRIPTOR.name}: {exc}"
            ) from None
        return message
    try:
        document = json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError included
        raise DecodeError(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # nested thousands deep
        raise DecodeError(NESTED_TOO_DEEPLY) from None
    if not isinstance(document, dict):
        raise DecodeError(f"OTLP JSON body must be an object, got {type(document).__name__}")
    _hex_ids_to_base64(signal, document)
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise DecodeError(
            f"body is not a valid OTLP JSON {message.DESCRIPTOR.name}: {exc}"
        ) from None
    except RecursionError:
        raise DecodeError(NESTED_TOO_DEEPLY) from None
    return message


# OTLP JSON encodes trace and span ids as hex; protobuf's JSON mapping expects base64.
# These are the places ids occur, in both spellings json_format accepts.
def _items(obj: object, *names: str) -> list[object]:
    if not isinstance(obj, dict):
        return []
    for name in names:
        value = obj.get(name)
        if isinstance(value, list):
            return value
    return []


def _fix_ids(obj: object, where: str) -> None:
    if not isinstance(obj, dict):
        return
    for camel, snake in (
        ("traceId", "trace_id"),
        ("spanId", "span_id"),
        ("parentSpanId", "parent_span_id"),
    ):
        for key in (camel, snake):
            if key not in obj:
                continue
            value = obj[key]
            if not isinstance(value, str):
                raise DecodeError(f"{where}.{key} must be a hex string, got {type(value).__name__}")
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raise DecodeError(
                    f"{where}.{key} {value[:64]!r} is not hex (OTLP JSON encodes ids as hex)"
                ) from None
            obj[key] = base64.b64encode(raw).decode("ascii")


_POINT_KINDS = ("gauge", "sum", "histogram", "exponentialHistogram", "exponential_histogram")


def _hex_ids_to_base64(signal: Signal, doc: dict[str, object]) -> None:
    if signal == "traces":
        _span_ids(doc)
    elif signal == "logs":
        for rl in _items(doc, "resourceLogs", "resource_logs"):
            for sl in _items(rl, "scopeLogs", "scope_logs"):
                for record in _items(sl, "logRecords", "log_records"):
                    _fix_ids(record, "logRecord")
    else:
        _exemplar_ids(doc)


def _span_ids(doc: dict[str, object]) -> None:
    for rs in _items(doc, "resourceSpans", "resource_spans"):
        for ss in _items(rs, "scopeSpans", "scope_spans"):
            for span in _items(ss, "spans"):
                _fix_ids(span, "span")
                for link in _items(span, "links"):
                    _fix_ids(link, "span.link")


def _exemplar_ids(doc: dict[str, object]) -> None:
    for rm in _items(doc, "resourceMetrics", "resource_metrics"):
        for sm in _items(rm, "scopeMetrics", "scope_metrics"):
            for metric in _items(sm, "metrics"):
                if not isinstance(metric, dict):
                    continue
                for kind in _POINT_KINDS:
                    for dp in _items(metric.get(kind), "dataPoints", "data_points"):
                        for ex in _items(dp, "exemplars"):
                            _fix_ids(ex, "exemplar")


def build_response(signal: Signal, batch: Batch | None) -> Message:
    """Export*ServiceResponse, with partial_success only when something was rejected."""
    if signal == "traces":
        response: Message = ExportTraceServiceResponse()
        if batch and (batch.rejected or batch.problems):
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=batch.rejected, error_message=_why(batch))
            )
    elif signal == "logs":
        response = ExportLogsServiceResponse()
        if batch and (batch.rejected or batch.problems):
            response.partial_success.CopyFrom(
                ExportLogsPartialSuccess(
                    rejected_log_records=batch.rejected, error_message=_why(batch)
                )
            )
    else:
        response = ExportMetricsServiceResponse()
        if batch and (batch.rejected or batch.problems):
            response.partial_success.CopyFrom(
                ExportMetricsPartialSuccess(
                    rejected_data_points=batch.rejected, error_message=_why(batch)
                )
            )
    return response


def _why(batch: Batch) -> str:
    return "; ".join(batch.problems)


def serialize(message: Message, fmt: Format) -> bytes:
    if fmt == "proto":
        data: bytes = message.SerializeToString()
        return data
    return json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode()
