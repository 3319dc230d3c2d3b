"""One call per process sets up traces, metrics and logs over OTLP/HTTP.

Configuration is the standard ``OTEL_*`` environment (endpoint, sampler, resource
attributes, export intervals). ``OTEL_SDK_DISABLED=true`` turns all of it off, which is
how the benchmark measures the cost of telemetry.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_lab import __version__
from otel_lab.settings import get_settings
from otel_lab.telemetry.logs import configure_logging

# An unreachable or slow collector must cost requests nothing: exports run on background
# threads from bounded queues, and each export gives up quickly.
_EXPORT_TIMEOUT_SECONDS = 2.0
_SHUTDOWN_FLUSH_MILLIS = 2000
_SHUTDOWN_DEADLINE_SECONDS = 3.0
_DEFAULT_METRIC_INTERVAL_MILLIS = 10_000

_state: dict[str, object] = {}


def telemetry_enabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


class _HashOnceResource(Resource):
    """A Resource whose hash is computed once. The OTLP encoders group every span and log
    record by resource, and the SDK's ``__hash__`` serialises all attributes to JSON each
    time: about 4 % of a busy service's CPU. Resources are immutable, so caching is safe."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def build_resource(service_name: str) -> Resource:
    """Service identity and environment, merged with ``OTEL_RESOURCE_ATTRIBUTES``."""
    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME", service_name),
            "service.namespace": "otel-lab",
            "service.version": __version__,
            "service.instance.id": f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            "deployment.environment.name": get_settings().environment,
        }
    )
    return _HashOnceResource(resource)


def _exporter_options() -> dict[str, float]:
    """A short export timeout unless OTEL_EXPORTER_OTLP_TIMEOUT says otherwise (the Python
    exporters read that variable themselves, in seconds)."""
    if "OTEL_EXPORTER_OTLP_TIMEOUT" in os.environ:
        return {}
    return {"timeout": _EXPORT_TIMEOUT_SECONDS}


def setup_telemetry(service_name: str) -> None:
    """Install the global providers and JSON logging; safe to call more than once."""
    if _state:
        return
    settings = get_settings()
    if not telemetry_enabled():
        configure_logging(service_name, settings.log_level, otlp_handler=None)
        _state["disabled"] = True
        return

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        # Zero-code mode: `opentelemetry-instrument` installed the providers before us.
        configure_logging(service_name, settings.log_level, otlp_handler=LoggingHandler())
        _state["external"] = True
        return

    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    resource = build_resource(service_name)
    options = _exporter_options()

    tracer_provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(**options), max_queue_size=4096)
    )
    trace.set_tracer_provider(tracer_provider)

    interval = int(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", _DEFAULT_METRIC_INTERVAL_MILLIS))
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(**options),
        export_interval_millis=interval,
        export_timeout_millis=_EXPORT_TIMEOUT_SECONDS * 1000,
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    metrics.set_meter_provider(meter_provider)

    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(**options), max_queue_size=4096)
    )
    set_logger_provider(logger_provider)

    configure_logging(
        service_name,
        settings.log_level,
        otlp_handler=LoggingHandler(logger_provider=logger_provider),
    )
    _state.update(tracer=tracer_provider, meter=meter_provider, logger=logger_provider)
    logging.getLogger(__name__).debug("telemetry ready", extra={"otel_service": service_name})


def _flush_and_shutdown() -> None:
    for key in ("tracer", "logger"):
        provider = _state.get(key)
        if provider is not None:
            provider.force_flush(_SHUTDOWN_FLUSH_MILLIS)
            provider.shutdown()
    meter_provider = _state.get("meter")
    if meter_provider is not None:
        meter_provider.shutdown(timeout_millis=_SHUTDOWN_FLUSH_MILLIS)


def shutdown_telemetry() -> None:
    """Flush what is queued, but never hold up the process's exit for long.

    The SDK's flush does not honour its timeout when the endpoint is unreachable
    (opentelemetry-python#4568), so it runs on a daemon thread that is given a deadline.
    """
    if _state.get("tracer") is not None:
        worker = threading.Thread(target=_flush_and_shutdown, name="otel-shutdown", daemon=True)
        worker.start()
        worker.join(_SHUTDOWN_DEADLINE_SECONDS)
    _state.clear()
