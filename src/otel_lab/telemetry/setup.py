"""One call per process sets up traces, metrics and logs, configured as the spec says.

Everything comes from the standard ``OTEL_*`` environment: ``OTEL_SDK_DISABLED``,
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (which override the defaults set
here), ``OTEL_{TRACES,METRICS,LOGS}_EXPORTER``, ``OTEL_EXPORTER_OTLP[_{SIGNAL}]_*``,
``OTEL_TRACES_SAMPLER[_ARG]``, ``OTEL_BSP_*``, ``OTEL_BLRP_*`` and ``OTEL_METRIC_EXPORT_*``.
Where this module has a default of its own (shorter export timeouts and intervals, larger
queues), it applies only while the standard variable is unset.

:func:`setup_telemetry` is for a process's entry point: it installs the global providers and
the root log handlers. It returns a :class:`Telemetry`, the providers to hand to what
records telemetry (``TelemetryMiddleware``); a test builds its own ``Telemetry`` around
in-memory exporters instead, and nothing global changes.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_lab.telemetry.duration import MeterProvider
from otel_lab.telemetry.exporters import DEFAULT_EXPORT_TIMEOUT_SECONDS, exporters_for
from otel_lab.telemetry.logs import OTLPHandler, configure_logging

_SHUTDOWN_FLUSH_MILLIS = 2000
_SHUTDOWN_DEADLINE_SECONDS = 3.0

# Defaults that apply while the standard variable is unset.
_DEFAULTS = {
    "OTEL_METRIC_EXPORT_INTERVAL": 10_000,  # the SDK's 60 s is long for a local console
    "OTEL_METRIC_EXPORT_TIMEOUT": int(DEFAULT_EXPORT_TIMEOUT_SECONDS * 1000),
    "OTEL_BSP_MAX_QUEUE_SIZE": 4096,  # bursts of a busy service fit, bounded all the same
    # 2048 spans per export request instead of the SDK's 512: the console commits each
    # request as one transaction, and on a store of some size a commit's page writes
    # cost it more per span than decoding (docs/instrumentation.md, "The console").
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": 2048,
    "OTEL_BLRP_MAX_QUEUE_SIZE": 4096,
}


@dataclass
class _Installed:
    """What :func:`setup_telemetry` installed: returned again, flushed at shutdown (the
    providers only when they are its own)."""

    telemetry: Telemetry | None = None
    tracer: TracerProvider | None = None
    meter: MeterProvider | None = None
    logger: LoggerProvider | None = None


_state = _Installed()


def telemetry_enabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


@dataclass(frozen=True)
class Telemetry:
    """Where a component's telemetry goes: its providers (None: the global ones), or
    nowhere at all (``enabled=False``, ``OTEL_SDK_DISABLED=true``)."""

    tracer_provider: trace.TracerProvider | None = None
    meter_provider: metrics.MeterProvider | None = None
    enabled: bool = True
    _tracers: dict[str, trace.Tracer] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def tracer(self, scope: str) -> trace.Tracer:
        """The tracer for a component's manual spans (``scope``: its instrumentation scope),
        made once per scope. Taken from here rather than ``trace.get_tracer()`` at import,
        the spans go where the component's requests go: a test's in-memory exporter, or,
        with no provider given, whatever the process installed (ours or the agent's)."""
        tracer = self._tracers.get(scope)
        if tracer is None:
            tracer = self._tracers[scope] = trace.get_tracer(scope, tracer_provider=self.spans_to())
        return tracer

    def spans_to(self) -> trace.TracerProvider | None:
        """The provider spans go to: the no-op one when telemetry is off (None: the global)."""
        return self.tracer_provider if self.enabled else trace.NoOpTracerProvider()

    def metrics_to(self) -> metrics.MeterProvider | None:
        """The provider measurements go to: the no-op one when telemetry is off."""
        return self.meter_provider if self.enabled else metrics.NoOpMeterProvider()

    @classmethod
    def from_environment(cls) -> Telemetry:
        """The global providers, on unless ``OTEL_SDK_DISABLED=true``."""
        return cls(enabled=telemetry_enabled())


def _default(variable: str) -> int | None:
    """This module's default for ``variable``, or None to let the SDK read the variable."""
    return None if os.environ.get(variable) else _DEFAULTS[variable]


class _HashOnceResource(Resource):
    """A Resource whose hash is computed once. The SDK's ``__hash__`` serialises all
    attributes to JSON each time, and exporters group every record by resource; resources
    are immutable, so caching is safe."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def build_resource(
    service_name: str, service_version: str | None = None, environment: str | None = None
) -> Resource:
    """The service's identity: defaults here, then ``OTEL_RESOURCE_ATTRIBUTES`` and
    ``OTEL_SERVICE_NAME`` over them (so Kubernetes can set ``service.instance.id`` to the
    pod name)."""
    defaults = {
        SERVICE_NAME: service_name,
        "service.namespace": "otel-lab",
        "service.instance.id": f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
    }
    if service_version:
        defaults["service.version"] = service_version
    if environment:
        defaults["deployment.environment.name"] = environment
    # Resource.create() reads the environment and adds the SDK's own attributes; its
    # "unknown_service" placeholder must not replace the name given here.
    from_environment = {
        key: value
        for key, value in Resource.create().attributes.items()
        if not (key == SERVICE_NAME and str(value).startswith("unknown_service"))
    }
    return _HashOnceResource(Resource({**defaults, **from_environment}))


def setup_telemetry(
    service_name: str,
    *,
    service_version: str | None = None,
    environment: str | None = None,
    log_level: str = "INFO",
) -> Telemetry:
    """Install the global providers and JSON logging; safe to call more than once.

    The arguments are defaults: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``
    override the first three. Returns the providers installed.
    """
    if _state.telemetry is not None:
        return _state.telemetry
    if not telemetry_enabled():
        configure_logging(service_name, log_level, otlp_handler=None)
        _state.telemetry = off = Telemetry(enabled=False)
        return off

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        # Zero-code mode: `opentelemetry-instrument` installed the providers before us.
        configure_logging(service_name, log_level, otlp_handler=LoggingHandler())
        _state.telemetry = external = Telemetry()
        return external

    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
    resource = build_resource(service_name, service_version, environment)

    tracer_provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
    for span_exporter in exporters_for("traces"):
        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                span_exporter,
                max_queue_size=_default("OTEL_BSP_MAX_QUEUE_SIZE"),
                max_export_batch_size=_default("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
            )
        )
    trace.set_tracer_provider(tracer_provider)

    readers = [
        PeriodicExportingMetricReader(
            metric_exporter,
            export_interval_millis=_default("OTEL_METRIC_EXPORT_INTERVAL"),
            export_timeout_millis=_default("OTEL_METRIC_EXPORT_TIMEOUT"),
        )
        for metric_exporter in exporters_for("metrics")
    ]
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(meter_provider)

    logger_provider = LoggerProvider(resource=resource)
    log_exporters = exporters_for("logs")
    for log_exporter in log_exporters:
        logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(
                log_exporter, max_queue_size=_default("OTEL_BLRP_MAX_QUEUE_SIZE")
            )
        )
    set_logger_provider(logger_provider)

    configure_logging(
        service_name,
        log_level,
        otlp_handler=OTLPHandler(logger_provider=logger_provider) if log_exporters else None,
    )
    telemetry = Telemetry(tracer_provider, meter_provider)
    _state.tracer, _state.meter, _state.logger = tracer_provider, meter_provider, logger_provider
    _state.telemetry = telemetry
    return telemetry


def _flush_and_shutdown(installed: _Installed) -> None:
    for provider in (installed.tracer, installed.logger):
        if provider is not None:
            provider.force_flush(_SHUTDOWN_FLUSH_MILLIS)
            provider.shutdown()
    if installed.meter is not None:
        installed.meter.shutdown(timeout_millis=_SHUTDOWN_FLUSH_MILLIS)


def shutdown_telemetry() -> None:
    """Flush what is queued, but never hold up the process's exit for long.

    The SDK's flush does not honour its timeout when the endpoint is unreachable
    (opentelemetry-python#4568), so it runs on a daemon thread that is given a deadline.
    """
    global _state
    if _state.tracer is not None:
        worker = threading.Thread(
            target=_flush_and_shutdown, args=(_state,), name="otel-shutdown", daemon=True
        )
        worker.start()
        worker.join(_SHUTDOWN_DEADLINE_SECONDS)
    _state = _Installed()
