"""Every setting comes from the environment or ``.env``, through one ``Settings``.

The console's token, retention and size cap and the embedded servers' ports used to be read
from the environment only, so with ``OTEL_LAB_HOST`` and ``CONSOLE_TOKEN`` both in ``.env`` the
console saw a non-loopback host without a token and refused to start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from otel_lab.console.config import ConsoleConfig
from otel_lab.runtime.harness import free_ports
from otel_lab.runtime.plan import child_env
from otel_lab.settings import Settings, get_settings

TOKEN = "s3cret-token"
# Everything .env sets here, kept out of the process environment so only .env can supply it.
NAMES = (
    "OTEL_LAB_HOST",
    "OTEL_LAB_DATA_DIR",
    "CONSOLE_TOKEN",
    "CONSOLE_RETENTION",
    "CONSOLE_MAX_DB_MB",
    "CONSOLE_OTLP_PORT",
    "CONSOLE_UI_PORT",
    "OTEL_LAB_POSTGRES_PORT",
    "OTEL_LAB_VALKEY_PORT",
    "CONSOLE_DEPLOY_DIR",
    "CONSOLE_SWITCH_INTERVAL",
)


@pytest.fixture
def dotenv_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory whose ``.env`` is the only source of the settings above."""
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_console_and_embedded_settings_come_from_dotenv(dotenv_dir: Path) -> None:
    (dotenv_dir / ".env").write_text(
        f"CONSOLE_TOKEN={TOKEN}\nCONSOLE_RETENTION=2h\nCONSOLE_MAX_DB_MB=5\n"
        "OTEL_LAB_POSTGRES_PORT=15432\nOTEL_LAB_VALKEY_PORT=16379\n"
        f"CONSOLE_DEPLOY_DIR={dotenv_dir / 'deploy'}\nCONSOLE_SWITCH_INTERVAL=0.002\n"
    )
    settings = Settings()
    assert settings.console_token == TOKEN
    assert (settings.console_retention, settings.console_max_db_mb) == ("2h", 5)
    assert (settings.postgres_port, settings.valkey_port) == (15432, 16379)
    assert settings.console_switch_interval == 0.002

    config = ConsoleConfig.from_settings(settings)  # the console runs with the same Settings
    assert config.deploy_dir == dotenv_dir / "deploy"
    assert (config.token, config.retention_seconds, config.max_db_bytes) == (TOKEN, 7200, 5 << 20)

    env = child_env(settings, dotenv_dir, "postgresql://x", "redis://y")
    assert env["OTEL_EXPORTER_OTLP_HEADERS"] == f"Authorization=Bearer {TOKEN}"
    assert env["OTEL_LAB_POSTGRES_PORT"] == "15432"


def test_empty_values_mean_unset(dotenv_dir: Path) -> None:
    (dotenv_dir / ".env").write_text("CONSOLE_TOKEN=\nOTEL_LAB_POSTGRES_PORT=\n")
    settings = Settings()
    assert settings.console_token is None and settings.postgres_port is None
    env = child_env(settings, dotenv_dir, "postgresql://x", "redis://y")
    assert "OTEL_EXPORTER_OTLP_HEADERS" not in env and "OTEL_LAB_POSTGRES_PORT" not in env


def test_bad_port_is_refused(dotenv_dir: Path) -> None:
    (dotenv_dir / ".env").write_text("OTEL_LAB_VALKEY_PORT=70000\n")
    with pytest.raises(ValueError, match="OTEL_LAB_VALKEY_PORT"):
        Settings()


def test_console_starts_with_host_and_token_in_dotenv(tmp_path: Path) -> None:
    """The console binds beyond loopback with the token from .env, and requires it."""
    otlp_port, ui_port = free_ports(2)
    (tmp_path / ".env").write_text(
        f"OTEL_LAB_HOST=0.0.0.0\nCONSOLE_TOKEN={TOKEN}\nCONSOLE_RETENTION=2h\n"
        f"CONSOLE_MAX_DB_MB=5\nCONSOLE_OTLP_PORT={otlp_port}\nCONSOLE_UI_PORT={ui_port}\n"
        f"OTEL_LAB_DATA_DIR={tmp_path / 'data'}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in NAMES}
    log = tmp_path / "console.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otel_lab.console"], cwd=tmp_path, env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{ui_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"the console exited: {log.read_text()}"
            try:
                if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"console not ready: {log.read_text()}"
            time.sleep(0.2)
        assert httpx.get(f"{base}/api/stats", timeout=5).status_code == 401
        stats = httpx.get(
            f"{base}/api/stats", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        )
        assert stats.status_code == 200, stats.text
        body = stats.json()
        assert body["retention_seconds"] == 7200
        assert body["max_db_bytes"] == 5 * 1024 * 1024
    finally:
        proc.terminate()
        proc.wait(timeout=15)
