"""Cluster mode: the Kubernetes manifests, validated against the Kubernetes schemas.

Each manifest file is validated on its own (kubernetes-validate, strict: unknown fields fail),
and the kustomize output of the base and of every overlay is rendered with the real kustomize
(`kubectl kustomize`) and validated object by object.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from otel_lab.registry import SERVICES, WORKER
from otel_lab.settings import Settings

from .conftest import K8S_DIR, load_yaml, load_yaml_all, require_tool, run

KUBERNETES_VERSION = "1.32.0"
BASE = K8S_DIR / "base"
OVERLAYS = sorted(p.parent for p in (K8S_DIR / "overlays").glob("*/kustomization.yaml"))
# Files that are not Kubernetes objects (Collector configs fed to configMapGenerator).
NOT_MANIFESTS = {"kustomization.yaml", "agent.yaml", "gateway.yaml"}
# The registry's services that use the data stores, and the worker.
APP_DEPLOYMENTS = {s.name for s in SERVICES if s.uses_datastores} | {WORKER.name}


def _kv():
    return pytest.importorskip(
        "kubernetes_validate", reason="pip package kubernetes-validate (dev dependency)"
    )


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.rglob("*.yaml") if p.name not in NOT_MANIFESTS)


def _validate(doc: dict, where: str) -> None:
    kv = _kv()
    try:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)
    except kv.ValidationError as e:
        pytest.fail(
            f"{where}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {e.message}"
        )


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(K8S_DIR)))
def test_manifest_file_validates(path: Path) -> None:
    docs = load_yaml_all(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        _validate(doc, str(path.relative_to(K8S_DIR)))


def _render(directory: Path) -> list[dict]:
    kubectl = require_tool("kubectl")
    result = run([kubectl, "kustomize", str(directory)])
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module", params=[BASE, *OVERLAYS], ids=lambda p: str(p.relative_to(K8S_DIR)))
def rendered(request) -> tuple[str, list[dict]]:
    return str(request.param.relative_to(K8S_DIR)), _render(request.param)


def test_kustomize_output_validates(rendered) -> None:
    where, docs = rendered
    assert len(docs) > 20
    for doc in docs:
        _validate(doc, where)
        assert doc["metadata"].get("namespace", "otel-lab") == "otel-lab" or doc["kind"] in {
            "Namespace",
            "ClusterRole",
            "ClusterRoleBinding",
        }


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_workloads_have_probes_resources_and_run_unprivileged(rendered) -> None:
    where, docs = rendered
    workloads = [d for d in docs if d["kind"] in {"Deployment", "DaemonSet", "StatefulSet", "Job"}]
    for w in workloads:
        name = f"{where}: {w['kind']}/{w['metadata']['name']}"
        pod = w["spec"]["template"]["spec"]
        assert pod.get("securityContext", {}).get("runAsNonRoot") is True, name
        for c in pod["containers"]:
            res = c.get("resources", {})
            assert res.get("requests", {}).get("memory") and res.get("limits", {}).get("memory"), (
                name
            )
            assert c.get("securityContext", {}).get("allowPrivilegeEscalation") is False, name
            if w["kind"] != "Job":
                assert "livenessProbe" in c, f"{name}: no liveness probe"
            if w["metadata"]["name"] in APP_DEPLOYMENTS - {"worker"}:
                assert c["readinessProbe"]["httpGet"]["path"] == "/ready", name
                assert c["livenessProbe"]["httpGet"]["path"] == "/health", name


def test_services_and_worker_autoscale(rendered) -> None:
    where, docs = rendered
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in _by_kind(docs, "HorizontalPodAutoscaler").values()
    }
    assert APP_DEPLOYMENTS | {"otel-gateway"} <= hpas, (
        f"{where}: missing HPAs {APP_DEPLOYMENTS - hpas}"
    )


def test_collector_agent_and_gateway_tiers(rendered) -> None:
    where, docs = rendered
    assert "otel-agent" in _by_kind(docs, "DaemonSet"), where
    assert "otel-gateway" in _by_kind(docs, "Deployment"), where
    services = _by_kind(docs, "Service")
    assert services["otel-gateway-headless"]["spec"]["clusterIP"] == "None"
    assert services["otel-agent"]["spec"]["internalTrafficPolicy"] == "Local"
    # The generated ConfigMaps are mounted under their hashed names.
    configmaps = set(_by_kind(docs, "ConfigMap"))
    for workload in [
        _by_kind(docs, "DaemonSet")["otel-agent"],
        _by_kind(docs, "Deployment")["otel-gateway"],
    ]:
        for volume in workload["spec"]["template"]["spec"]["volumes"]:
            assert volume["configMap"]["name"] in configmaps


def test_no_secret_values_in_plain_text(rendered) -> None:
    """The base references a Secret it does not define; only an overlay may generate it."""
    where, docs = rendered
    secrets = _by_kind(docs, "Secret")
    if where == "base":
        assert not secrets, "the base must not carry Secret objects"
    referenced = set()
    for d in docs:
        for key, value in _walk(d):
            if key == "secretKeyRef":
                referenced.add(value["name"])
    assert referenced, "the database password should come from a Secret"
    if where != "base":
        assert referenced <= set(secrets), (
            f"{where}: references {referenced - set(secrets)} it does not provide"
        )
    # Nothing that looks like a password in ConfigMaps or env values.
    for d in docs:
        if d["kind"] == "ConfigMap":
            for key in d.get("data", {}):
                assert "PASSWORD" not in key.upper() and "SECRET" not in key.upper(), (
                    f"{key} in ConfigMap"
                )
        for key, value in _walk(d):
            if key == "env":
                for var in value:
                    if "PASSWORD" in var["name"]:
                        assert "valueFrom" in var, f"{var['name']} set in plain text"


def _walk(node, key=None):
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from _walk(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(BASE / "kustomization.yaml")
    listed = {(BASE / r).resolve() for r in kustomization["resources"]}
    generated = {
        (BASE / f.split("=")[-1]).resolve()
        for g in kustomization["configMapGenerator"]
        for f in g["files"]
        if f.endswith(".yaml")  # not the flag file (json), which test_flagd checks
    }
    on_disk = {p.resolve() for p in BASE.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert on_disk == listed | generated, (
        f"not in kustomization.yaml: {on_disk - listed - generated}"
    )


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_each_service_runs_as_the_registry_says(service) -> None:
    """Its Deployment runs the registry's module on the registry's port, its Service exposes
    that port, and the shared ConfigMap points the others at it (name and port)."""
    docs = load_yaml_all(BASE / f"{service.name}.yaml")
    deployment = _by_kind(docs, "Deployment")[service.name]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:3] == ["uvicorn", "--factory", f"{service.module}:{service.attr}"]
    assert command[command.index("--port") + 1] == str(service.port)
    assert {p["containerPort"] for p in container["ports"]} == {service.port}
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env["OTEL_SERVICE_NAME"] == service.name
    assert [p["port"] for p in _by_kind(docs, "Service")[service.name]["spec"]["ports"]] == [
        service.port
    ]
    config = load_yaml(BASE / "config.yaml")["data"]
    if service.url_field is not None:
        variable = Settings.model_fields[service.url_field].alias
        assert config[variable] == f"http://{service.name}:{service.port}"
