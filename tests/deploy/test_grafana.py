"""Grafana: provisioned datasources and dashboards."""

from __future__ import annotations

import enum
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from otel_lab.console.dashboards import DERIVED_SERIES

from .conftest import (
    COLLECTOR_CONFIG,
    COMPOSE_FILE,
    GRAFANA_DIR,
    PROMETHEUS_DIR,
    collector_metric_names,
    load_yaml,
)
from .test_dashboard_queries import prometheus_panel_queries
from .test_prometheus import KNOWN_METRICS, _metric_names

DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
DATASOURCES = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yaml")[
    "datasources"
]
DS_BY_UID = {ds["uid"]: ds for ds in DATASOURCES}
NO_QUERY_PANELS = {"row", "text"}


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _panels(panels: list[dict]):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


# ----------------------------------------------------------------------------- datasources
def test_datasources_cross_linked() -> None:
    prom, tempo, loki = DS_BY_UID["prometheus"], DS_BY_UID["tempo"], DS_BY_UID["loki"]
    assert prom["type"] == "prometheus" and tempo["type"] == "tempo" and loki["type"] == "loki"
    # metrics -> traces
    assert prom["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] == "tempo"
    assert prom["jsonData"]["exemplarTraceIdDestinations"][0]["name"] == "trace_id"
    # traces -> logs, traces -> metrics, service map from Prometheus
    assert tempo["jsonData"]["tracesToLogsV2"]["datasourceUid"] == "loki"
    assert tempo["jsonData"]["tracesToMetrics"]["datasourceUid"] == "prometheus"
    assert tempo["jsonData"]["serviceMap"]["datasourceUid"] == "prometheus"
    # logs -> traces
    assert {f["datasourceUid"] for f in loki["jsonData"]["derivedFields"]} == {"tempo"}
    # every uid referenced anywhere exists
    text = json.dumps(DATASOURCES)
    for ref in {v for k, v in _walk(DATASOURCES) if k == "datasourceUid"}:
        assert ref in DS_BY_UID, f"{ref} referenced in {text[:60]}... is not provisioned"


def _walk(node, key=None):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)
    else:
        yield key, node


def test_datasource_urls_point_at_compose_services() -> None:
    from .conftest import COMPOSE_FILE

    services = load_yaml(COMPOSE_FILE)["services"]
    for ds in DATASOURCES:
        host = ds["url"].split("//")[1].split(":")[0]
        assert host in services, f"{ds['name']}: {host} is not a compose service"


# ----------------------------------------------------------------------------- dashboards
def test_dashboards_are_generated_and_fresh() -> None:
    """The committed JSON is what deploy/grafana/build_dashboards.py produces."""
    script = GRAFANA_DIR / "build_dashboards.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_uids_and_titles_unique() -> None:
    dashboards = [_load(p) for p in DASHBOARDS]
    assert len(dashboards) >= 5
    uids = [d["uid"] for d in dashboards]
    titles = [d["title"] for d in dashboards]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    assert all(len(uid) <= 40 for uid in uids)  # Grafana's uid limit


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_has_a_datasource_and_a_query(path: Path) -> None:
    dashboard = _load(path)
    ids = []
    for panel in _panels(dashboard["panels"]):
        ids.append(panel["id"])
        if panel["type"] in NO_QUERY_PANELS:
            continue
        ds = panel.get("datasource") or {}
        assert ds.get("uid") in DS_BY_UID, f"{panel['title']}: datasource {ds} is not provisioned"
        assert ds["type"] == DS_BY_UID[ds["uid"]]["type"], panel["title"]
        targets = panel.get("targets") or []
        assert targets, f"{panel['title']}: no query"
        refids = [t["refId"] for t in targets]
        assert len(set(refids)) == len(refids), f"{panel['title']}: duplicate refId"
        for target in targets:
            tds = target.get("datasource") or ds
            assert tds.get("uid") in DS_BY_UID, panel["title"]
            query = (
                target.get("expr") or target.get("query") or target.get("queryType") == "serviceMap"
            )
            assert query, f"{panel['title']}: target {target['refId']} has no query"
        assert panel.get("description"), f"{panel['title']}: say what the panel answers"
    assert len(set(ids)) == len(ids), "duplicate panel ids"
    titles = [p["title"] for p in _panels(dashboard["panels"]) if p["type"] != "row"]
    assert len(set(titles)) == len(titles), "panel titles must be unique (tests report by title)"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_layout_fits_the_grid(path: Path) -> None:
    occupied: set[tuple[int, int]] = set()
    for panel in _load(path)["panels"]:
        g = panel["gridPos"]
        assert all(isinstance(g[k], int) for k in "hwxy")
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells


def test_prometheus_queries_use_known_series() -> None:
    for dashboard, title, expr in prometheus_panel_queries():
        for name in _metric_names(expr):
            known = name in KNOWN_METRICS or any(name.startswith(p) for p in DERIVED_SERIES)
            assert known, f"{dashboard} / {title}: unknown series {name}"


def test_documented_panels_present() -> None:
    titles = {d["uid"]: {p["title"] for p in _panels(d["panels"])} for d in map(_load, DASHBOARDS)}
    assert {
        "Request latency p50 / p95",
        "Error rate (5xx)",
        "DB query time p95",
        "Cache hit rate",
        "Worker queue depth",
    } <= titles["otel-lab-overview"]
    assert {
        "Service dependency map",
        "Request flow through the chain",
        "Error rate per service",
        "Latency percentiles",
        "DB query time p95 by operation",
    } <= titles["otel-lab-services"]
    assert (
        "otel-lab-microtrace" in titles
        and "otel-lab-enhanced-tracing" in titles
        and "otel-lab-slo" in titles
    )


# ----------------------------------------------------------------------------- Grafana schema
def _sdk():
    pytest.importorskip(
        "grafana_foundation_sdk", reason="pip package grafana-foundation-sdk (dev dependency)"
    )
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    return Dashboard, JSONEncoder


def _dropped_keys(original, roundtrip, path="") -> list[str]:
    out = []
    if isinstance(original, dict):
        for key, value in original.items():
            if not isinstance(roundtrip, dict) or key not in roundtrip:
                out.append(f"{path}.{key}")
            else:
                out += _dropped_keys(value, roundtrip[key], f"{path}.{key}")
    elif isinstance(original, list) and isinstance(roundtrip, list):
        for i, (a, b) in enumerate(zip(original, roundtrip, strict=False)):
            out += _dropped_keys(a, b, f"{path}[{i}]")
    return out


def _type_errors(obj, path="") -> list[str]:
    """Check enum, literal and scalar fields of the decoded schema objects."""
    errors: list[str] = []
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            errors += _type_errors(item, f"{path}[{i}]")
        return errors
    if not hasattr(obj, "__dict__") or not type(obj).__module__.startswith(
        "grafana_foundation_sdk"
    ):
        return errors
    try:
        hints = typing.get_type_hints(type(obj).__init__)
    except Exception:
        hints = {}
    for attr, value in vars(obj).items():
        hint = hints.get(attr)
        if value is None or hint is None:
            errors += _type_errors(value, f"{path}.{attr}")
            continue
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        literals = [
            v for a in args if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)
        ]
        scalars = [a for a in args if a in (int, float, str, bool)]
        if enums and len(args) == 1:
            valid = {m.value for e in enums for m in e}
            if getattr(value, "value", value) not in valid:
                errors.append(f"{path}.{attr}: {value!r} not one of {sorted(map(str, valid))}")
        elif literals and len(args) == 1:
            if value not in literals:
                errors.append(f"{path}.{attr}: {value!r} not one of {literals}")
        elif scalars and len(scalars) == len(args):
            allowed = tuple(scalars) + ((int,) if float in scalars else ())
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in scalars):
                errors.append(f"{path}.{attr}: {value!r} is not {scalars}")
        errors += _type_errors(value, f"{path}.{attr}")
    return errors


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_matches_grafana_schema(path: Path) -> None:
    """Decoded with the types generated from Grafana 11.6's schema, nothing is unknown or mistyped.

    grafana-foundation-sdk decodes each panel's options and each query with the model of its
    panel plugin and datasource; a key the schema does not know is dropped on the round trip.
    """
    dashboard_cls, encoder = _sdk()
    original = _load(path)
    model = dashboard_cls.from_json(original)
    roundtrip = json.loads(json.dumps(model, cls=encoder))
    assert not _dropped_keys(original, roundtrip), "keys unknown to Grafana's schema"
    assert not _type_errors(model), "values of the wrong type or outside their enum"


# What Grafana's Tempo datasource queries for the service graph and the span table under it. The
# names are hard-coded in Grafana (public/app/plugins/datasource/tempo/graphTransform.ts at the
# pinned 11.6.0); re-check them when the Grafana image changes.
GRAFANA_IMAGE = "grafana/grafana:11.6.0"
TEMPO_SERVICE_GRAPH_SERIES = {
    "traces_service_graph_request_total",
    "traces_service_graph_request_failed_total",
    "traces_service_graph_request_server_seconds_sum",
    "traces_service_graph_request_server_seconds_bucket",
    "traces_spanmetrics_calls_total",
    "traces_spanmetrics_latency_bucket",
}


def test_tempo_service_graph_finds_its_series() -> None:
    """Each series the service graph reads is written by the Collector or recorded by a rule."""
    assert load_yaml(COMPOSE_FILE)["services"]["grafana"]["image"] == GRAFANA_IMAGE
    written = collector_metric_names(load_yaml(COLLECTOR_CONFIG))
    recorded = {
        rule["record"]: rule["expr"].strip()
        for path in sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    missing = TEMPO_SERVICE_GRAPH_SERIES - written - recorded.keys()
    assert not missing, f"Grafana's service graph reads {missing}, which nothing writes"
    for name in TEMPO_SERVICE_GRAPH_SERIES & recorded.keys():
        # A rename keeps every label (span_kind, status_code, le) the service graph filters on.
        assert recorded[name] in written, f"{name} is recorded from {recorded[name]!r}"
