"""``python -m otel_lab.loadgen``: the same command as ``otel-lab load``."""

from otel_lab.loadgen.cli import app

app()
