"""OpenTelemetry Collector configurations, checked structurally.

No Collector binary runs here, so these tests check what `otelcol validate` would catch about
the pipeline graph, plus the design rules of docs/stack.md: memory_limiter first, span metrics
and service graph fed before sampling, tail sampling keeping errors, slow traces and a baseline.
"""

from __future__ import annotations

import re

import pytest

from otel_lab.telemetry.metrics import LATENCY_BUCKETS

from .conftest import COLLECTOR_CONFIG, COMPOSE_FILE, K8S_DIR, load_yaml, load_yaml_all

AGENT_CONFIG = K8S_DIR / "base" / "otel-collector" / "agent.yaml"
GATEWAY_COPY = K8S_DIR / "base" / "otel-collector" / "gateway.yaml"
CONFIGS = {"stack/gateway": COLLECTOR_CONFIG, "agent": AGENT_CONFIG}
KINDS = ("receivers", "processors", "exporters", "connectors", "extensions")


def _load(name: str) -> dict:
    return load_yaml(CONFIGS[name])


def _pipelines(config: dict) -> dict[str, dict]:
    return config["service"]["pipelines"]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_pipeline_component_is_defined(name: str) -> None:
    config = _load(name)
    for pipeline_name, pipeline in _pipelines(config).items():
        assert pipeline.get("receivers") and pipeline.get("exporters"), pipeline_name
        for receiver in pipeline["receivers"]:
            assert receiver in (config.get("receivers") or {}) or receiver in (
                config.get("connectors") or {}
            ), f"{pipeline_name}: receiver {receiver} is not defined"
        for processor in pipeline.get("processors", []):
            assert processor in (config.get("processors") or {}), (
                f"{pipeline_name}: processor {processor} is not defined"
            )
        for exporter in pipeline["exporters"]:
            assert exporter in (config.get("exporters") or {}) or exporter in (
                config.get("connectors") or {}
            ), f"{pipeline_name}: exporter {exporter} is not defined"
    for extension in config["service"].get("extensions", []):
        assert extension in (config.get("extensions") or {}), (
            f"extension {extension} is not defined"
        )


@pytest.mark.parametrize("name", CONFIGS)
def test_every_defined_component_is_used(name: str) -> None:
    config = _load(name)
    used: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for pipeline in _pipelines(config).values():
        used["receivers"] |= set(pipeline.get("receivers", []))
        used["processors"] |= set(pipeline.get("processors", []))
        used["exporters"] |= set(pipeline.get("exporters", []))
    used["connectors"] = used["receivers"] | used["exporters"]
    used["extensions"] = set(config["service"].get("extensions", []))
    for kind in KINDS:
        defined = set(config.get(kind) or {})
        unused = defined - used[kind]
        assert not unused, f"{kind} defined but used in no pipeline: {unused}"


@pytest.mark.parametrize("name", CONFIGS)
def test_connectors_join_real_pipelines(name: str) -> None:
    """A connector exports from one pipeline and receives into another, of the right signals."""
    config = _load(name)
    pipelines = _pipelines(config)
    signal = {p: p.split("/")[0] for p in pipelines}
    supported = {  # connector type -> (from signal, to signal)
        "spanmetrics": ("traces", "metrics"),
        "servicegraph": ("traces", "metrics"),
        "forward": None,  # same signal on both sides
    }
    for connector in config.get("connectors") or {}:
        ctype = connector.split("/")[0]
        exporters_in = [
            p for p, spec in pipelines.items() if connector in spec.get("exporters", [])
        ]
        receivers_in = [
            p for p, spec in pipelines.items() if connector in spec.get("receivers", [])
        ]
        assert exporters_in, f"{connector} is exported to by no pipeline"
        assert receivers_in, f"{connector} feeds no pipeline"
        assert set(exporters_in).isdisjoint(receivers_in), f"{connector} loops within one pipeline"
        assert ctype in supported, f"unknown connector type {ctype}"
        for src in exporters_in:
            for dst in receivers_in:
                if supported[ctype] is None:
                    assert signal[src] == signal[dst], f"{connector}: {src} -> {dst}"
                else:
                    assert (signal[src], signal[dst]) == supported[ctype], (
                        f"{connector}: {src} -> {dst}"
                    )


@pytest.mark.parametrize("name", CONFIGS)
def test_memory_limiter_first_batch_last(name: str) -> None:
    config = _load(name)
    for pipeline_name, pipeline in _pipelines(config).items():
        processors = pipeline.get("processors", [])
        assert processors and processors[0] == "memory_limiter", (
            f"{pipeline_name}: memory_limiter must be first"
        )
        if "batch" in processors:
            assert processors[-1] == "batch", f"{pipeline_name}: batch must be last"


def test_span_metrics_are_computed_before_sampling() -> None:
    config = _load("stack/gateway")
    pipelines = _pipelines(config)
    for connector in ("spanmetrics", "servicegraph"):
        feeding = [p for p, spec in pipelines.items() if connector in spec["exporters"]]
        assert feeding, connector
        for p in feeding:
            spec = pipelines[p]
            assert "otlp" in spec["receivers"], f"{connector} must see the spans as received"
            assert "tail_sampling" not in spec.get("processors", []), (
                f"{connector} must run before sampling"
            )
    sampled = [p for p, spec in pipelines.items() if "tail_sampling" in spec.get("processors", [])]
    assert len(sampled) == 1
    assert set(pipelines[sampled[0]]["exporters"]) == {"otlp/tempo", "otlp/jaeger"}


def test_tail_sampling_policies() -> None:
    config = _load("stack/gateway")
    policies = {p["type"]: p for p in config["processors"]["tail_sampling"]["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert "TAIL_SAMPLING_LATENCY_THRESHOLD_MS" in str(
        policies["latency"]["latency"]["threshold_ms"]
    )
    assert "TAIL_SAMPLING_BASELINE_PERCENT" in str(
        policies["probabilistic"]["probabilistic"]["sampling_percentage"]
    )


def test_every_signal_reaches_its_backend() -> None:
    config = _load("stack/gateway")
    exporters = config["exporters"]
    pipelines = _pipelines(config)
    reached = {e for spec in pipelines.values() for e in spec["exporters"]}
    assert {"otlp/tempo", "otlp/jaeger", "otlphttp/prometheus", "otlphttp/loki"} <= reached
    assert "/api/v1/otlp/v1/metrics" in exporters["otlphttp/prometheus"]["metrics_endpoint"]
    assert exporters["otlphttp/loki"]["endpoint"].rstrip("}").endswith("/otlp")


def test_metrics_pushed_to_prometheus_keep_the_bare_service_name_as_job() -> None:
    """Prometheus' OTLP receiver sets job to "<service.namespace>/<service.name>" when the
    namespace is there (the SDK sets service.namespace=otel-lab); the dashboards filter
    job=~"$service" on the bare name, as the scraped series have it. Every pipeline that
    pushes to Prometheus must drop the namespace before the exporter."""
    config = _load("stack/gateway")
    processors = config["processors"]
    pushing = {
        name: spec
        for name, spec in _pipelines(config).items()
        if "otlphttp/prometheus" in spec["exporters"]
    }
    assert set(pushing) == {"metrics", "metrics/derived"}
    for name, spec in pushing.items():
        deletes = {
            action["key"]
            for processor in spec["processors"]
            if processor.split("/")[0] == "resource"
            for action in processors[processor]["attributes"]
            if action["action"] == "delete"
        }
        assert "service.namespace" in deletes, name


def test_own_metrics_on_8888() -> None:
    for name in CONFIGS:
        readers = _load(name)["service"]["telemetry"]["metrics"]["readers"]
        ports = [r["pull"]["exporter"]["prometheus"]["port"] for r in readers]
        assert 8888 in ports, name


def test_exporter_defaults_point_at_compose_services() -> None:
    """`${env:X:-host:port}` defaults name services of the compose file."""
    text = COLLECTOR_CONFIG.read_text()
    services = load_yaml(COMPOSE_FILE)["services"]
    defaults = re.findall(r"\$\{env:[A-Z_]+_ENDPOINT:-(?:https?://)?([a-z0-9-]+):\d+", text)
    assert defaults
    for host in defaults:
        assert host in services, f"{host} is not a compose service"


def _seconds(duration: str) -> float:
    """A Go duration of the connectors' bucket lists (``5ms``, ``2500ms``, ``1s``) in seconds."""
    match = re.fullmatch(r"(\d+)(ms|s)", duration)
    assert match, duration
    return int(match[1]) / (1000 if match[2] == "ms" else 1)


def test_connector_buckets_are_the_services_buckets() -> None:
    """Span metrics and the service graph bucket like the services' own latency histograms
    (and the console's derived series in embedded mode), so their quantiles line up."""
    connectors = _load("stack/gateway")["connectors"]
    spanmetrics = connectors["spanmetrics"]["histogram"]["explicit"]["buckets"]
    servicegraph = connectors["servicegraph"]["latency_histogram_buckets"]
    for buckets in (spanmetrics, servicegraph):
        assert tuple(_seconds(b) for b in buckets) == LATENCY_BUCKETS


def test_gateway_copy_matches_stack_config() -> None:
    """Kustomize cannot read files outside its folder, so the k8s gateway tier uses a copy."""
    assert GATEWAY_COPY.read_text() == COLLECTOR_CONFIG.read_text(), (
        f"cp {COLLECTOR_CONFIG.relative_to(K8S_DIR.parents[1])} "
        f"{GATEWAY_COPY.relative_to(K8S_DIR.parents[1])}"
    )


def test_agent_routes_traces_by_trace_id_to_the_headless_service() -> None:
    agent = _load("agent")
    lb = agent["exporters"]["loadbalancing"]
    assert lb["routing_key"] == "traceID"
    hostname = lb["resolver"]["dns"]["hostname"]
    assert "otel-gateway-headless" in hostname
    assert _pipelines(agent)["traces"]["exporters"] == ["loadbalancing"]
    assert "tail_sampling" not in agent.get("processors", {})
    services = load_yaml_all(K8S_DIR / "base" / "otel-collector" / "gateway-deployment.yaml")
    headless = [
        d
        for d in services
        if d["kind"] == "Service" and d["metadata"]["name"] == "otel-gateway-headless"
    ]
    assert headless and headless[0]["spec"]["clusterIP"] == "None"


def test_agent_resolver_port_is_a_string() -> None:
    """Collector 0.128.0 decodes `resolver.dns.port` into a Go string (loadbalancingexporter
    config.go: `Port string mapstructure:"port"`) and rejects a YAML integer at start-up, which
    crash-loops the agent DaemonSet."""
    dns = _load("agent")["exporters"]["loadbalancing"]["resolver"]["dns"]
    assert isinstance(dns["port"], str), f"port: {dns['port']!r} must be quoted"
    assert dns["port"] == "4317", "the gateway tier's OTLP/gRPC port"
