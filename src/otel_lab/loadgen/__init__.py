"""Traffic for every endpoint: ``otel-lab load`` (runs, concurrency, delay, host, duration, mix)."""
