"""Fault flags in stack and cluster modes: a flagd container serves the flag file that
``otel-lab fault`` writes, and every service syncs from it (issue 11).

Validated like the other stack files, without a container engine: the flag file is the one
:mod:`otel_lab.faults` generates (every fault, all off), the cluster's copy is identical,
compose mounts it where flagd's ``--uri`` reads it, and the services' settings point the
OpenFeature flagd provider at flagd's sync port.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from otel_lab import faults

from .conftest import COMPOSE_DIR, COMPOSE_FILE, DEPLOY, load_yaml, require_tool, run
from .test_compose import APP_SERVICES, STUB_SERVICES
from .test_k8s import BASE, _by_kind

FLAG_FILE = DEPLOY / "flagd" / "flags.flagd.json"
K8S_COPY = BASE / "flagd" / "flags.flagd.json"
SYNC_PORT = "8015"  # flagd's gRPC sync port (`flagd start --sync-port`, default 8015)


def test_flag_file_is_the_generated_one(tmp_path: Path) -> None:
    """Every fault, each a boolean flag that is off; regenerate with ``otel-lab fault off
    NAME --file deploy/flagd/flags.flagd.json`` (or faults.write) when a fault is added."""
    generated = faults.write(set(), tmp_path / "flags.flagd.json")
    assert FLAG_FILE.read_text() == generated.read_text()
    assert K8S_COPY.read_text() == FLAG_FILE.read_text(), "deploy/k8s copy differs"
    flags = json.loads(FLAG_FILE.read_text())["flags"]
    assert set(flags) == set(faults.FAULTS)
    for name, flag in flags.items():
        assert flag["state"] == "ENABLED", name
        assert flag["variants"] == {"on": True, "off": False}, name
        assert flag["defaultVariant"] == "off", name
    assert faults.read_enabled(FLAG_FILE) == set()


def test_compose_runs_flagd_on_the_flag_file() -> None:
    services = load_yaml(COMPOSE_FILE)["services"]
    flagd = services["flagd"]
    assert flagd["image"].startswith("ghcr.io/open-feature/flagd:v")
    command = flagd["command"]
    assert command[:2] == ["start", "--uri"] and command[2].startswith("file:")
    path_in_container = Path(command[2].removeprefix("file:"))
    # The directory is mounted (an atomic rewrite renames a new file into it).
    mounts = {v.split(":")[1]: v.split(":")[0] for v in flagd["volumes"]}
    source = mounts[str(path_in_container.parent)]
    assert (COMPOSE_DIR / source / path_in_container.name).resolve() == FLAG_FILE.resolve()


def test_compose_services_sync_their_flags_from_flagd() -> None:
    tool = require_tool("docker-compose")
    result = run([tool, "-f", str(COMPOSE_FILE), "config"], cwd=COMPOSE_DIR)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in [*APP_SERVICES, *STUB_SERVICES, "worker"]:
        env = services[name]["environment"]
        assert env["FLAGD_HOST"] == "flagd", name
        assert env["FLAGD_RESOLVER"] == "in-process", name
        assert str(env["FLAGD_SYNC_PORT"]) == SYNC_PORT, name
        assert "FLAGD_OFFLINE_FLAG_SOURCE_PATH" not in env, name  # would mean the file resolver
        assert "flagd" in services[name]["depends_on"], name


@pytest.fixture(scope="module")
def cluster() -> list[dict]:
    kubectl = require_tool("kubectl")
    result = run([kubectl, "kustomize", str(BASE)])
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_cluster_runs_flagd_on_the_flag_file(cluster: list[dict]) -> None:
    configmaps = _by_kind(cluster, "ConfigMap")
    assert configmaps["flagd-flags"]["data"]["flags.flagd.json"] == FLAG_FILE.read_text()
    pod = _by_kind(cluster, "Deployment")["flagd"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (volume,) = pod["volumes"]
    assert volume["configMap"]["name"] == "flagd-flags"
    (mount,) = container["volumeMounts"]
    assert container["args"] == ["start", "--uri", f"file:{mount['mountPath']}/flags.flagd.json"]
    ports = {p["port"] for p in _by_kind(cluster, "Service")["flagd"]["spec"]["ports"]}
    assert int(SYNC_PORT) in ports
    settings = configmaps["otel-lab-config"]["data"]
    assert (settings["FLAGD_HOST"], settings["FLAGD_RESOLVER"], settings["FLAGD_SYNC_PORT"]) == (
        "flagd", "in-process", SYNC_PORT,
    )  # fmt: skip


def test_stack_settings_make_the_provider_sync_from_flagd(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables compose and the cluster set give the flagd provider's in-process
    resolver on flagd:8015 (and not the file resolver of embedded mode)."""
    from openfeature.contrib.provider.flagd.config import Config, ResolverType

    monkeypatch.delenv(faults.PATH_ENV, raising=False)
    for key, value in {"FLAGD_HOST": "flagd", "FLAGD_RESOLVER": "in-process",
                       "FLAGD_SYNC_PORT": SYNC_PORT}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    config = Config()
    assert (config.resolver, config.host, config.port) == (ResolverType.IN_PROCESS, "flagd", 8015)
    assert config.offline_flag_source_path is None
