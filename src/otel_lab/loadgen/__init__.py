"""Traffic for every endpoint: ``otel-lab load`` (seed 004's options plus a duration and a mix)."""
