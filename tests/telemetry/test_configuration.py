"""The standard OTEL_* variables mean what the specification says, in manual mode too.

Each case runs ``setup_telemetry`` in a fresh interpreter (global providers can be set once
per process) with the variables under test, and reads back what was installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from otel_lab.runtime.plan import child_env
from otel_lab.settings import Settings
from tests.telemetry.conftest import without_otel_variables

PROBE = r"""
import asyncio, json, logging, os
from opentelemetry import baggage, metrics, propagate, trace
from otel_lab.telemetry import TelemetryMiddleware, setup_telemetry
from otel_lab.telemetry.logs import OTLPHandler
setup_telemetry("probe")
duration = type(TelemetryMiddleware(None).duration).__name__
tp = trace.get_tracer_provider()
processors = tp._active_span_processor._span_processors
def batching(batch):  # the same four settings for spans and log records
    return {"batching": [batch._max_queue_size, batch._schedule_delay_millis,
                         batch._max_export_batch_size, batch._export_timeout_millis]}
def describe_span(p):
    batch = p._batch_processor
    e = batch._exporter
    client = getattr(e, "_client", None)
    return {"exporter": type(e).__module__ + "." + type(e).__name__,
            "endpoint": getattr(e, "_endpoint", None), "timeout": getattr(client, "_timeout", None),
            **batching(batch)}
mp = metrics.get_meter_provider()
readers = list(mp._measurement_consumer._reader_storages)
handlers = [h for h in logging.getLogger().handlers if isinstance(h, OTLPHandler)]
lp_processors = []
if handlers:
    for p in handlers[0]._logger_provider._multi_log_record_processor._log_record_processors:
        b = p._batch_processor
        lp_processors.append({"exporter": type(b._exporter).__name__, **batching(b)})
seen = {}
async def app(scope, receive, send):
    parent = trace.get_current_span().parent
    seen["parent_trace_id"] = f"{parent.trace_id:032x}" if parent else None
    seen["baggage"] = dict(baggage.get_all())
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
async def noop_send(message): pass
async def receive(): return {"type": "http.request", "body": b""}
headers = [(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
           (b"baggage", b"user.id=42")]
asyncio.run(TelemetryMiddleware(app)({"type": "http", "method": "GET", "path": "/p",
    "headers": headers, "query_string": b""}, receive, noop_send))
print("PROBE " + json.dumps({
    "resource": dict(tp.resource.attributes),
    "spans": [describe_span(p) for p in processors],
    "readers": [{"exporter": type(r._exporter).__name__, "interval": r._export_interval_millis,
                 "timeout": r._export_timeout_millis} for r in readers],
    "logs": lp_processors,
    "duration": duration,
    "sampler": tp.sampler.get_description(),
    "propagator_fields": sorted(propagate.get_global_textmap().fields),
    "propagated": seen,
}), flush=True)
# Skip the exit-time flush: with nothing listening on the default endpoint, the exporters'
# retries would hold every probe for their 2 s timeout, and nothing here is about export.
os._exit(0)
"""

TRACEPARENT_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"  # PROBE's incoming traceparent


def configured(**variables: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=without_otel_variables(**variables),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # Console exporters print to stdout too, also at exit: the probe's line is marked.
    (line,) = (line for line in done.stdout.splitlines() if line.startswith("PROBE "))
    return json.loads(line.removeprefix("PROBE "))


def test_defaults_export_everything_over_otlp_http() -> None:
    found = configured()
    assert [s["exporter"] for s in found["spans"]] == [
        "otel_lab.telemetry.exporters.OTLPSpanExporter"
    ]
    # queue, schedule delay (the SDK's), batch size, export timeout (the SDK's)
    assert found["spans"][0]["batching"] == [4096, 5000, 2048, 30000]
    assert found["spans"][0]["timeout"] == 2.0
    assert found["readers"] == [
        {"exporter": "OTLPMetricExporter", "interval": 10_000, "timeout": 2000}
    ]
    assert [p["exporter"] for p in found["logs"]] == ["OTLPLogExporter"]
    assert found["duration"] == "PlainHistogram"  # in plain numbers (telemetry/duration.py)
    assert found["resource"]["service.name"] == "probe"
    assert found["resource"]["service.namespace"] == "otel-lab"
    assert found["sampler"].startswith("ParentBased{root:AlwaysOnSampler")
    # OTEL_PROPAGATORS unset: tracecontext,baggage, both extracted by the middleware
    assert found["propagator_fields"] == ["baggage", "traceparent", "tracestate"]
    assert found["propagated"] == {
        "parent_trace_id": TRACEPARENT_TRACE_ID,
        "baggage": {"user.id": "42"},
    }


def test_resource_attributes_override_the_code_defaults() -> None:
    found = configured(
        OTEL_RESOURCE_ATTRIBUTES="service.instance.id=pod-7,deployment.environment.name=prod,x=1"
    )
    assert found["resource"]["service.instance.id"] == "pod-7"
    assert found["resource"]["deployment.environment.name"] == "prod"
    assert found["resource"]["x"] == "1"


def test_service_name_variable_wins() -> None:
    found = configured(
        OTEL_SERVICE_NAME="renamed", OTEL_RESOURCE_ATTRIBUTES="service.name=from-attributes"
    )
    assert found["resource"]["service.name"] == "renamed"


def test_batch_span_processor_variables() -> None:
    found = configured(
        OTEL_BSP_MAX_QUEUE_SIZE="77",
        OTEL_BSP_SCHEDULE_DELAY="1234",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="11",
        OTEL_BSP_EXPORT_TIMEOUT="4321",
    )
    assert found["spans"][0]["batching"] == [77, 1234, 11, 4321]


def test_batch_log_record_processor_variables() -> None:
    found = configured(
        OTEL_BLRP_MAX_QUEUE_SIZE="55",
        OTEL_BLRP_SCHEDULE_DELAY="321",
        OTEL_BLRP_MAX_EXPORT_BATCH_SIZE="50",
        OTEL_BLRP_EXPORT_TIMEOUT="6543",
    )
    assert found["logs"][0]["batching"] == [55, 321, 50, 6543]


def test_metric_export_variables() -> None:
    found = configured(OTEL_METRIC_EXPORT_INTERVAL="2500", OTEL_METRIC_EXPORT_TIMEOUT="900")
    assert found["readers"][0]["interval"] == 2500
    assert found["readers"][0]["timeout"] == 900


@pytest.mark.parametrize("preference", ["delta", "lowmemory"])
def test_delta_temporality_keeps_the_sdks_duration_instrument(preference: str) -> None:
    """Delta points are not what PlainHistogram makes: the SDK's instrument records."""
    found = configured(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=preference)
    assert found["duration"] == "SdkHistogram"
    cumulative = configured(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE="cumulative")
    assert cumulative["duration"] == "PlainHistogram"


def test_per_signal_otlp_variables() -> None:
    found = configured(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://traces-only:9999/v1/traces",
        OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="7",
    )
    assert found["spans"][0]["endpoint"] == "http://traces-only:9999/v1/traces"
    assert found["spans"][0]["timeout"] == 7.0


@pytest.mark.parametrize(
    ("variable", "key"),
    [("OTEL_TRACES_EXPORTER", "spans"), ("OTEL_METRICS_EXPORTER", "readers"),
     ("OTEL_LOGS_EXPORTER", "logs")],
)  # fmt: skip
def test_exporter_none_turns_a_signal_off(variable: str, key: str) -> None:
    found = configured(**{variable: "none"})
    assert found[key] == []
    others = {"spans", "readers", "logs"} - {key}
    assert all(found[other] for other in others)


def test_console_exporter() -> None:
    found = configured(OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="console")
    assert found["spans"][0]["exporter"].endswith("ConsoleSpanExporter")
    assert found["readers"][0]["exporter"] == "ConsoleMetricExporter"


def test_grpc_protocol() -> None:
    found = configured(OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    assert found["spans"][0]["exporter"].startswith("opentelemetry.exporter.otlp.proto.grpc")
    assert found["readers"][0]["exporter"] == "OTLPMetricExporter"


def test_per_signal_protocol() -> None:
    found = configured(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc")
    assert found["spans"][0]["exporter"].startswith("opentelemetry.exporter.otlp.proto.grpc")
    assert found["logs"][0]["exporter"] == "OTLPLogExporter"


def test_sampler_variables() -> None:
    found = configured(OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0.25")
    assert found["sampler"] == "TraceIdRatioBased{0.25}"


@pytest.mark.parametrize(
    ("propagators", "fields", "parent", "baggage"),
    [
        ("tracecontext", ["traceparent", "tracestate"], TRACEPARENT_TRACE_ID, {}),
        ("baggage", ["baggage"], None, {"user.id": "42"}),
        ("none", [], None, {}),
    ],
)
def test_propagators_variable_decides_what_the_middleware_extracts(
    propagators: str, fields: list[str], parent: str | None, baggage: dict[str, str]
) -> None:
    """The server middleware reads only what ``OTEL_PROPAGATORS`` names (the default,
    ``tracecontext,baggage``, in the first test); the HTTP client injects through the same
    global propagator."""
    found = configured(OTEL_PROPAGATORS=propagators)
    assert found["propagator_fields"] == fields
    assert found["propagated"] == {"parent_trace_id": parent, "baggage": baggage}


def test_an_unknown_exporter_is_a_clear_error() -> None:
    env = without_otel_variables(OTEL_TRACES_EXPORTER="zipkin-smoke-signals")
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "OTEL_TRACES_EXPORTER='zipkin-smoke-signals'" in done.stderr


def test_up_passes_the_users_otlp_endpoint_through(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    env = child_env(Settings(), tmp_path, "postgresql://x", "redis://x")
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(f":{Settings().console_otlp_port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://outside:4318")
    env = child_env(Settings(), tmp_path, "postgresql://x", "redis://x")
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://outside:4318"
    assert "database" in env["OTEL_SEMCONV_STABILITY_OPT_IN"]
