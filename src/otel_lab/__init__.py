"""Otel Lab: observable Python microservices with correlated OpenTelemetry telemetry."""

__version__ = "0.1.0"
