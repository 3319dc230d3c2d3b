"""Pytest fixtures: one embedded PostgreSQL and one Valkey for the whole test run.

Enable with ``pytest_plugins = ["otel_lab.runtime.pytest_plugin"]`` in the top-level
``tests/conftest.py``. The servers are real (see :mod:`otel_lab.runtime.embedded`), start
once per run (PostgreSQL about 1 s, Valkey 0.1 s) and stop when the run ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_lab.runtime.embedded import EmbeddedPostgres, EmbeddedValkey


@pytest.fixture(scope="session")
def embedded_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data for the session's servers; fresh per run, so tests start from empty stores."""
    return tmp_path_factory.mktemp("otel-lab-data")


@pytest.fixture(scope="session")
def embedded_pg(embedded_data_dir: Path) -> Iterator[EmbeddedPostgres]:
    """PostgreSQL with the ``otel_lab`` database; ``.url`` for SQLAlchemy, ``.dsn`` for psycopg."""
    with EmbeddedPostgres(embedded_data_dir) as server:
        yield server


@pytest.fixture(scope="session")
def embedded_kv(embedded_data_dir: Path) -> Iterator[EmbeddedValkey]:
    """Valkey with an AOF; ``.url`` is ``redis://127.0.0.1:P/0``; ``.outage()`` for outages."""
    with EmbeddedValkey(embedded_data_dir) as server:
        yield server
