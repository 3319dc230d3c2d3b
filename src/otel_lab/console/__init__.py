"""The telemetry console: an OTLP/HTTP receiver (a drop-in for a collector's 4318) that
stores traces, logs and metrics in one SQLite file, and a JSON API (and UI) to read them.

Start it with ``python -m otel_lab.console``; see ``docs/console.md``.
"""
