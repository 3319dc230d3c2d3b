"""Embedded mode: run the whole system on one machine with ``otel-lab up``.

- :mod:`otel_lab.runtime.embedded`: real PostgreSQL and Valkey from pip wheels.
- :mod:`otel_lab.runtime.supervisor`: ordered start, readiness, orderly stop.
- :mod:`otel_lab.runtime.plan`: the table of services and how each child starts.
- :mod:`otel_lab.runtime.cli`: the ``otel-lab`` command.
"""
