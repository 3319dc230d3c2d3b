"""Stack mode: the compose files, the Dockerfile and .dockerignore."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

from otel_lab.registry import HTTP_PROTOCOL, SERVICES, WORKER

from .conftest import (
    COLLECTOR_CONFIG,
    COMPOSE_DEV_FILE,
    COMPOSE_DIR,
    COMPOSE_FILE,
    REPO,
    load_yaml,
    require_tool,
    run,
)

# compose service: (container port, module), from the registry.
APP_SERVICES = {s.name: (s.port, f"{s.module}:{s.attr}") for s in SERVICES if s.uses_datastores}
# Started like the services, but depends on no data store.
STUB_SERVICES = {
    s.name: (s.port, f"{s.module}:{s.attr}") for s in SERVICES if not s.uses_datastores
}
# Ports the README documents, published on the host: every service but the weather stub.
DOCUMENTED_PORTS = {
    **{name: {port} for name, (port, _) in APP_SERVICES.items()},
    "grafana": {3000},
    "prometheus": {9090},
    "jaeger": {16686},
    "otel-collector": {4317, 4318, 8888},
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def dev() -> dict:
    return load_yaml(COMPOSE_DEV_FILE)


# ----------------------------------------------------------------------------- real tool
@pytest.mark.parametrize(
    "files",
    [[COMPOSE_FILE], [COMPOSE_FILE, COMPOSE_DEV_FILE]],
    ids=["base", "base+dev"],
)
def test_compose_config_validates(files: list[Path]) -> None:
    """`docker-compose config -q` accepts the file (and the dev override on top of it)."""
    tool = require_tool("docker-compose")
    cmd = [tool]
    for f in files:
        cmd += ["-f", str(f)]
    result = run([*cmd, "config", "-q"], cwd=COMPOSE_DIR)
    assert result.returncode == 0, result.stderr or result.stdout


def test_collector_alone_starts_nothing_else() -> None:
    """`docker compose up otel-collector` must start only the Collector."""
    tool = require_tool("docker-compose")
    result = run([tool, "-f", str(COMPOSE_FILE), "config", "--services"], cwd=COMPOSE_DIR)
    assert result.returncode == 0, result.stderr
    assert "otel-collector" in result.stdout.split()
    spec = load_yaml(COMPOSE_FILE)["services"]["otel-collector"]
    assert "depends_on" not in spec


# ----------------------------------------------------------------------------- structure
def test_every_container_has_a_memory_limit(compose: dict) -> None:
    missing = [
        name
        for name, svc in compose["services"].items()
        if not svc.get("mem_limit")
        and not (svc.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory"))
    ]
    assert not missing, f"no memory limit: {missing}"


def test_images_are_pinned(compose: dict) -> None:
    for name, svc in compose["services"].items():
        image = svc.get("image", "")
        if "build" in svc:
            continue  # built from this repository
        assert ":" in image, f"{name}: image {image!r} has no tag"
        tag = image.rsplit(":", 1)[1]
        assert tag not in {"latest", "main", "master", "nightly"}, f"{name}: {image} is not pinned"
        assert re.search(r"\d", tag), f"{name}: {image} tag is not a version"


def test_health_gated_start_order(compose: dict) -> None:
    """Every `service_healthy` dependency has a healthcheck; apps wait for migrations."""
    services = compose["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = cond.get("condition") if isinstance(cond, dict) else None
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], (
                    f"{name} waits for {dep} to be healthy, but it has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", (
                    f"{dep} is a one-shot job: restart must be 'no'"
                )
    for name in [*APP_SERVICES, WORKER.name]:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["valkey"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    for backend in APP_SERVICES.keys() - {"gateway"}:
        assert services["gateway"]["depends_on"][backend]["condition"] == "service_healthy"


def test_app_services_run_the_documented_commands(compose: dict) -> None:
    services = compose["services"]
    for name, (port, module) in {**APP_SERVICES, **STUB_SERVICES}.items():
        svc = services[name]
        assert svc["command"][:3] == ["uvicorn", "--factory", module]
        assert svc["command"][-1] == str(port)
        assert svc["environment"]["OTEL_SERVICE_NAME"] == name
        assert svc["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert svc["environment"]["OTEL_SEMCONV_STABILITY_OPT_IN"] == "http,database"
        assert svc["environment"]["OTEL_LAB_HOST"] == "0.0.0.0"  # worker metrics reachable
        assert str(port) in " ".join(svc["healthcheck"]["test"])
    worker = services["worker"]
    assert worker["command"][:4] == ["celery", "-A", WORKER.module, "worker"]
    assert "threads" in worker["command"]
    assert worker["environment"]["OTEL_SERVICE_NAME"] == WORKER.name
    assert str(WORKER.port) in " ".join(worker["healthcheck"]["test"])
    migrate = services["migrate"]
    assert migrate["command"] == [
        "python",
        "-m",
        "alembic",
        "-c",
        "src/otel_lab/migrations/alembic.ini",
        "upgrade",
        "head",
    ]


def test_documented_ports_are_published(compose: dict) -> None:
    for name, ports in DOCUMENTED_PORTS.items():
        published = set()
        for spec in compose["services"][name].get("ports", []):
            # "${BIND_ADDRESS:-127.0.0.1}:8080:8080" -> host port 8080
            published.add(int(str(spec).rsplit(":", 2)[-2]))
        assert ports <= published, f"{name}: publishes {published}, the README documents {ports}"


def test_prometheus_flags(compose: dict) -> None:
    command = compose["services"]["prometheus"]["command"]
    for flag in (
        "--enable-feature=exemplar-storage",
        "--web.enable-remote-write-receiver",
        "--web.enable-otlp-receiver",
        "--storage.tsdb.retention.time=15d",
    ):
        assert flag in command


def test_grafana_admin_and_provisioning(compose: dict) -> None:
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_USER"].endswith(":-admin}")
    assert env["GF_SECURITY_ADMIN_PASSWORD"].endswith(":-admin}")
    provider = load_yaml(REPO / "deploy/grafana/provisioning/dashboards/dashboards.yaml")
    dash_path = provider["providers"][0]["options"]["path"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("../")}
    assert dash_path in mounts, f"dashboards provider reads {dash_path}, which is not mounted"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    home_file = (COMPOSE_DIR / mounts[dash_path] / Path(home).name).resolve()
    assert home.startswith(dash_path) and home_file.exists(), home


def test_mounted_config_files_exist(compose: dict, dev: dict) -> None:
    for doc in (compose, dev):
        for name, svc in doc["services"].items():
            for volume in svc.get("volumes", []):
                source = str(volume).split(":")[0]
                if source.startswith("."):
                    assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"


def test_collector_config_is_the_one_mounted(compose: dict) -> None:
    volumes = compose["services"]["otel-collector"]["volumes"]
    sources = [(COMPOSE_DIR / v.split(":")[0]).resolve() for v in volumes]
    assert COLLECTOR_CONFIG.resolve() in sources


def test_dev_override(dev: dict, compose: dict) -> None:
    """Dev target, source mounted, reload, and an idle option."""
    for name in [*APP_SERVICES, *STUB_SERVICES, WORKER.name]:
        svc = dev["services"][name]
        assert svc["build"]["target"] == "dev"
        assert any(v.startswith("../../src:/app/src") for v in svc["volumes"])
        command = " ".join(svc["command"])
        assert "tail -f /dev/null" in command and "DEV_IDLE" in command
        assert "--reload" in command or "watchfiles" in command
        assert name in compose["services"]


# ----------------------------------------------------------------------------- Dockerfile
def _dockerfile():
    dockerfile = pytest.importorskip(
        "dockerfile", reason="pip package `dockerfile` (dev dependency)"
    )
    return dockerfile.parse_file(str(REPO / "Dockerfile"))


def _stages(commands) -> dict[str, list]:
    stages: dict[str, list] = {}
    current = None
    for cmd in commands:
        if cmd.cmd == "FROM":
            parts = cmd.value
            current = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else parts[0]
            stages[current] = []
        elif current is not None:
            stages[current].append(cmd)
    return stages


def test_dockerfile_parses_with_buildkit_parser() -> None:
    commands = _dockerfile()
    assert commands, "empty Dockerfile"


def test_dockerfile_stages() -> None:
    commands = _dockerfile()
    stages = _stages(commands)
    assert {"dev", "runtime"} <= stages.keys()
    froms = [c for c in commands if c.cmd == "FROM"]
    assert froms[-1].value[-1] == "runtime", "the default (last) stage must be the runtime image"
    for stage in ("dev", "runtime"):
        users = [c.value[0] for c in stages[stage] if c.cmd == "USER"]
        assert users and users[-1] not in {"root", "0"}, f"{stage} must run as a non-root user"
    syncs = [c for c in commands if c.cmd == "RUN" and "uv sync" in c.value[0]]
    assert syncs and all("--frozen" in c.value[0] for c in syncs), "uv sync must honour uv.lock"
    runtime_syncs = [c for c in stages["builder"] if c.cmd == "RUN" and "uv sync" in c.value[0]]
    assert all("--no-dev" in c.value[0] for c in runtime_syncs)
    args = {
        c.value[0].split("=")[0]: c.value[0].split("=", 1)[1] for c in commands if c.cmd == "ARG"
    }
    for image in args.values():
        assert ":" in image and not image.endswith(":latest"), f"base image {image} is not pinned"


def test_every_uvicorn_of_the_image_serves_the_services_http_protocol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """compose and Kubernetes run plain ``uvicorn`` commands; the image's UVICORN_HTTP gives
    each the protocol ``otel-lab up`` passes as ``--http`` (JSON 400s)."""
    from uvicorn.main import main as uvicorn_command

    stages = _stages(_dockerfile())
    env: dict[str, str] = {}
    for cmd in stages["base"]:
        if cmd.cmd == "ENV":
            env |= dict(zip(cmd.value[::2], cmd.value[1::2], strict=True))
    assert env.get("UVICORN_HTTP") == HTTP_PROTOCOL
    monkeypatch.setenv("UVICORN_HTTP", env["UVICORN_HTTP"])
    context = uvicorn_command.make_context("uvicorn", ["--factory", "otel_lab.x:create_app"])
    assert context.params["http"] == HTTP_PROTOCOL


def _dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile_copies_only_what_the_context_sends() -> None:
    commands = _dockerfile()
    ignored = _dockerignore_patterns()
    sources: list[str] = []
    for cmd in commands:
        if cmd.cmd == "COPY" and not any(f.startswith("--from") for f in cmd.flags):
            sources += list(cmd.value[:-1])
        if cmd.cmd == "RUN":
            sources += [f.split("source=")[1].split(",")[0] for f in cmd.flags if "source=" in f]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY source {source} does not exist"
        assert not any(fnmatch.fnmatch(source, pat) for pat in ignored), (
            f"{source} is in .dockerignore"
        )
    for must_ignore in (".venv", ".git", ".otel-lab"):
        assert must_ignore in ignored


def _stage_context(commands) -> list[tuple[object, str, dict[str, str]]]:
    """Each RUN with the WORKDIR and ENV in effect (inherited through `FROM <stage>`)."""
    state: dict[str, tuple[str, dict[str, str]]] = {}
    workdir: str = "/"
    env: dict[str, str] = {}
    name: str | None = None
    runs = []
    for cmd in commands:
        if cmd.cmd == "FROM":
            parent = cmd.value[0]
            workdir, env = state.get(parent, ("/", {}))
            env = dict(env)
            name = cmd.value[2] if len(cmd.value) >= 3 and cmd.value[1].upper() == "AS" else parent
        elif cmd.cmd == "WORKDIR":
            workdir = str(Path(workdir, cmd.value[0]))
        elif cmd.cmd == "ENV":
            env.update(zip(cmd.value[::2], cmd.value[1::2], strict=True))
        elif cmd.cmd == "RUN":
            runs.append((cmd, workdir, dict(env)))
        if name is not None and cmd.cmd != "RUN":
            state[name] = (workdir, dict(env))
    return runs


def _expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda v: env.get(v.group(1), v.group(0)), text)


def test_dockerfile_never_changes_read_only_bind_mounts() -> None:
    """A `RUN --mount=type=bind` mount is read-only: a recursive chown/chmod over a folder that
    holds one fails the build (it broke the dev image and docker-compose.dev.yml)."""
    checked = 0
    for cmd, workdir, env in _stage_context(_dockerfile()):
        mounts = [
            dict(kv.split("=", 1) for kv in flag.removeprefix("--mount=").split(",") if "=" in kv)
            for flag in cmd.flags
            if flag.startswith("--mount=")
        ]
        read_only = [
            Path(workdir, m["target"])
            for m in mounts
            if m.get("type") == "bind" and m.get("rw", m.get("readwrite", "false")) == "false"
        ]
        for match in re.finditer(
            r"\b(?:chown|chmod|chgrp)\s+(?:-R|--recursive)\s+\S+\s+(\S+)", cmd.value[0]
        ):
            target = _expand(match.group(1), env).strip("\"'")
            checked += 1
            for mount in read_only:
                assert not mount.is_relative_to(Path(workdir, target)), (
                    f"`{match.group(0)}` covers the read-only bind mount {mount}"
                )
    assert checked, "no recursive chown left to check: drop or adapt this test"
