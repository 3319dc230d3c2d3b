"""The service registry is the one table: Settings, the gateway and the docs agree with it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from otel_lab.registry import CHAIN, SERVICES, WORKER, metrics_jobs, service
from otel_lab.runtime.plan import setting_name
from otel_lab.services.gateway.routes import owner_of
from otel_lab.settings import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("entry", [*SERVICES, WORKER], ids=lambda s: s.name)
def test_settings_take_each_port_from_the_registry(entry) -> None:
    field = Settings.model_fields[entry.port_field]
    assert field.default == entry.port
    assert setting_name(entry.port_field).endswith("_PORT")
    assert importlib.util.find_spec(entry.module) is not None, entry.module


def test_settings_reach_each_service_by_its_url_setting(monkeypatch) -> None:
    for entry in SERVICES:
        if entry.url_field is None:
            continue
        assert entry.url_field in Settings.model_fields, entry.url_field
        monkeypatch.setenv(setting_name(entry.url_field), f"http://{entry.name}:1/")
    for entry in SERVICES:
        monkeypatch.delenv(setting_name(entry.port_field), raising=False)
    monkeypatch.delenv("OTEL_LAB_HOST", raising=False)
    settings = Settings(_env_file=None)
    for entry in SERVICES:
        explicit = f"http://{entry.name}:1" if entry.url_field else None
        assert settings.base_url(entry) == (explicit or f"http://127.0.0.1:{entry.port}")


def test_names_ports_and_paths_are_unique() -> None:
    names = [s.name for s in (*SERVICES, WORKER)]
    assert len(set(names)) == len(names)
    ports = list(metrics_jobs().values())
    assert len(set(ports)) == len(ports)
    prefixes = [p for s in SERVICES for p in s.paths]
    assert len(set(prefixes)) == len(prefixes)
    assert all(service(name).paths for name in CHAIN)


def test_the_gateway_routes_the_registrys_paths() -> None:
    for entry in SERVICES:
        for prefix in entry.paths:
            assert owner_of(prefix + "/1") == entry.name


def test_docs_service_table_matches() -> None:
    """docs/services.md lists each service's port and module as the registry has them."""
    text = (DOCS / "services.md").read_text()
    rows = re.findall(r"^\| ([a-z-]+) \| (\d+) \| `([\w.]+)` \|", text, re.MULTILINE)
    assert rows, "no service table in docs/services.md"
    for name, port, module in rows:
        assert (int(port), module) == (service(name).port, service(name).module), name
    assert {name for name, _, _ in rows} == {s.name for s in SERVICES}
