"""The shared telemetry package: every service and the worker call it once at start-up."""

from otel_lab.telemetry.context import request_id_var, sanitize_request_id
from otel_lab.telemetry.middleware import TelemetryMiddleware
from otel_lab.telemetry.setup import (
    Telemetry,
    setup_telemetry,
    shutdown_telemetry,
    telemetry_enabled,
)

__all__ = [
    "Telemetry",
    "TelemetryMiddleware",
    "request_id_var",
    "sanitize_request_id",
    "setup_telemetry",
    "shutdown_telemetry",
    "telemetry_enabled",
]
