"""What a console process runs with, from :class:`~otel_lab.settings.Settings` (the
environment, ``.env`` and the command line's overrides). Light to import: the command line
binds its ports before the heavy imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import otel_lab
from otel_lab import faults
from otel_lab.console.queries import QueryError, parse_duration_seconds
from otel_lab.settings import Settings

_NO_LIMIT = ("0", "off", "none", "forever")


def checkout_deploy_dir() -> Path:
    """The checkout's ``deploy/``: the console reads the stack's rule files and dashboards
    there (it has no copy of its own) unless ``CONSOLE_DEPLOY_DIR`` names another."""
    return Path(otel_lab.__file__).resolve().parents[2] / "deploy"


class ConfigError(ValueError):
    """A console setting has a value the console cannot use; the message says which."""


@dataclass(frozen=True)
class Target:
    """A /metrics endpoint to scrape (``job=url``)."""

    job: str
    url: str

    @property
    def instance(self) -> str:
        return urlsplit(self.url).netloc


@dataclass(frozen=True)
class ConsoleConfig:
    host: str
    otlp_port: int
    ui_port: int
    db_path: Path
    flags_file: Path  # the fault flags the Scenarios page switches (otel_lab.faults)
    max_pending_rows: int = 100_000
    retention_seconds: float | None = None
    max_db_bytes: int | None = None
    token: str | None = None
    sql_timeout: float = 5.0
    scrape_targets: tuple[Target, ...] = ()
    scrape_interval: float = 10.0
    rules_interval: float = 15.0
    slow_rules_interval: float = 300.0
    switch_interval: float = 0.001
    deploy_dir: Path = field(default_factory=checkout_deploy_dir)

    @classmethod
    def from_settings(cls, s: Settings) -> ConsoleConfig:
        mb = s.console_max_db_mb
        return cls(
            host=s.host,
            otlp_port=s.console_otlp_port,
            ui_port=s.console_ui_port,
            db_path=s.console_db or s.data_dir / "console" / "telemetry.db",
            flags_file=faults.flags_path(s),
            max_pending_rows=s.console_max_pending_rows,
            retention_seconds=retention_seconds(s.console_retention),
            max_db_bytes=int(mb * 1024 * 1024) if mb > 0 else None,
            token=s.console_token,
            sql_timeout=s.console_sql_timeout,
            scrape_targets=parse_targets(s.console_scrape_targets),
            scrape_interval=s.console_scrape_interval,
            rules_interval=s.console_rules_interval,
            slow_rules_interval=s.console_slow_rules_interval,
            switch_interval=s.console_switch_interval,
            deploy_dir=s.console_deploy_dir or checkout_deploy_dir(),
        )


def retention_seconds(value: str) -> float | None:
    """``24h``, ``7d``, ``90m``, seconds; ``0`` or ``off`` keeps data until the size cap."""
    if value.strip().lower() in _NO_LIMIT:
        return None
    try:
        return parse_duration_seconds(value, "retention") or None
    except QueryError as exc:
        raise ConfigError(f"CONSOLE_RETENTION / --retention: {exc}") from None


def parse_targets(text: str | None) -> tuple[Target, ...]:
    """``job=url,job=url`` -> targets (the format of ``--scrape`` / CONSOLE_SCRAPE_TARGETS)."""
    targets = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        job, sep, url = part.partition("=")
        if not sep or not job.strip() or not url.strip().startswith(("http://", "https://")):
            raise ConfigError(f"scrape target {part!r}: use job=http://host:port/metrics")
        targets.append(Target(job.strip(), url.strip()))
    return tuple(targets)
