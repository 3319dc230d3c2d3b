"""``python -m otel_lab.console``: what ``otel-lab console`` runs (``otel-lab up`` starts the
console this way, so the fork server can fork it)."""

from otel_lab.console.cli import main

main()
