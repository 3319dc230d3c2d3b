"""Settings shared by every process, read from the environment (and `.env`).

OpenTelemetry itself is configured by the standard ``OTEL_*`` variables, which the SDK
reads directly; only what the SDK does not cover lives here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, TypedDict

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from otel_lab import __version__, registry


class TelemetryDefaults(TypedDict):
    """What ``setup_telemetry`` takes from the settings; ``OTEL_*`` variables override it."""

    service_version: str
    environment: str
    log_level: str


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Where embedded mode keeps PostgreSQL, Valkey, the console store and logs.
    data_dir: Path = Field(Path(".otel-lab"), alias="OTEL_LAB_DATA_DIR")
    environment: str = Field("local", alias="DEPLOYMENT_ENVIRONMENT")

    # External servers; when unset, `otel-lab up` starts embedded ones.
    database_url: str | None = Field(None, alias="DATABASE_URL")
    redis_url: str | None = Field(None, alias="REDIS_URL")

    # Ports (embedded mode binds 127.0.0.1); the defaults are the registry's.
    host: str = Field("127.0.0.1", alias="OTEL_LAB_HOST")
    gateway_port: int = Field(registry.GATEWAY.port, alias="GATEWAY_PORT")
    api_port: int = Field(registry.API.port, alias="API_PORT")
    user_service_port: int = Field(registry.USERS.port, alias="USER_SERVICE_PORT")
    order_service_port: int = Field(registry.ORDERS.port, alias="ORDER_SERVICE_PORT")
    audit_service_port: int = Field(registry.AUDIT.port, alias="AUDIT_SERVICE_PORT")
    worker_metrics_port: int = Field(registry.WORKER.port, alias="WORKER_METRICS_PORT")
    weather_upstream_port: int = Field(
        registry.WEATHER_UPSTREAM.port, alias="WEATHER_UPSTREAM_PORT"
    )
    console_otlp_port: int = Field(4318, alias="CONSOLE_OTLP_PORT")
    console_ui_port: int = Field(16686, alias="CONSOLE_UI_PORT")
    # The embedded servers' ports; unset, a free port is picked once and remembered in data_dir.
    postgres_port: int | None = Field(None, ge=1, le=65535, alias="OTEL_LAB_POSTGRES_PORT")
    valkey_port: int | None = Field(None, ge=1, le=65535, alias="OTEL_LAB_VALKEY_PORT")

    # The telemetry console. With a token, OTLP and the UI/API require it (and `otel-lab up`
    # gives it to every child); it is also what lets the console bind beyond loopback.
    console_token: str | None = Field(None, alias="CONSOLE_TOKEN")
    # Evict telemetry older than this (90m, 24h, 7d; 0 = no time limit) or beyond this size.
    console_retention: str = Field("24h", alias="CONSOLE_RETENTION")
    console_max_db_mb: float = Field(1024, ge=0, alias="CONSOLE_MAX_DB_MB")
    # /metrics endpoints the console scrapes like Prometheus (job=url,job=url; `otel-lab up`
    # passes every service), how often (0: never), and how often it evaluates the alert rules.
    console_scrape_targets: str = Field("", alias="CONSOLE_SCRAPE_TARGETS")
    console_scrape_interval: float = Field(10.0, ge=0, alias="CONSOLE_SCRAPE_INTERVAL")
    console_rules_interval: float = Field(15.0, gt=0, alias="CONSOLE_RULES_INTERVAL")
    # Rules over long ranges are evaluated this seldom, in seconds.
    console_slow_rules_interval: float = Field(300.0, gt=0, alias="CONSOLE_SLOW_RULES_INTERVAL")
    # Where the console reads the rule files and dashboards; unset: the checkout's deploy/.
    console_deploy_dir: Path | None = Field(None, alias="CONSOLE_DEPLOY_DIR")
    # The console's interpreter thread switch interval (docs/console.md).
    console_switch_interval: float = Field(0.001, gt=0, alias="CONSOLE_SWITCH_INTERVAL")
    # The console's store (unset: <data_dir>/console/telemetry.db), the rows it queues for its
    # writer before the receiver answers 503, and the SQL page's time limit per statement.
    console_db: Path | None = Field(None, alias="CONSOLE_DB")
    console_max_pending_rows: int = Field(100_000, ge=1, alias="CONSOLE_MAX_PENDING_ROWS")
    console_sql_timeout: float = Field(5.0, gt=0, alias="CONSOLE_SQL_TIMEOUT")

    # Where services find each other; default to the local ports above.
    api_url: str | None = Field(None, alias="API_URL")
    user_service_url: str | None = Field(None, alias="USER_SERVICE_URL")
    order_service_url: str | None = Field(None, alias="ORDER_SERVICE_URL")
    audit_service_url: str | None = Field(None, alias="AUDIT_SERVICE_URL")
    weather_api_url: str | None = Field(None, alias="WEATHER_API_URL")

    # Calls between services (services/downstream.py): timeouts, retries, circuit breakers.
    downstream_timeout_seconds: float = Field(5.0, gt=0, alias="DOWNSTREAM_TIMEOUT_SECONDS")
    downstream_connect_timeout_seconds: float = Field(
        1.0, gt=0, alias="DOWNSTREAM_CONNECT_TIMEOUT_SECONDS"
    )
    downstream_retry_attempts: int = Field(3, ge=1, le=10, alias="DOWNSTREAM_RETRY_ATTEMPTS")
    downstream_retry_backoff_seconds: float = Field(
        0.1, ge=0, alias="DOWNSTREAM_RETRY_BACKOFF_SECONDS"
    )
    downstream_retry_max_backoff_seconds: float = Field(
        1.0, ge=0, alias="DOWNSTREAM_RETRY_MAX_BACKOFF_SECONDS"
    )
    breaker_failure_threshold: int = Field(5, ge=1, alias="CIRCUIT_BREAKER_FAILURE_THRESHOLD")
    breaker_reset_seconds: float = Field(10.0, gt=0, alias="CIRCUIT_BREAKER_RESET_SECONDS")
    # Personal data (name, email) in baggage and span attributes: off unless asked for.
    record_pii: bool = Field(False, alias="TELEMETRY_RECORD_PII")
    # The chain's `simulate_failure` body field (demos and tests); turn off in production.
    simulated_failures: bool = Field(True, alias="CHAIN_SIMULATED_FAILURES")

    # One budget per request (services/deadline.py): where a request enters (the gateway, or
    # a service called directly) it gets this long, and every hop it reaches, every retry
    # and every PostgreSQL wait shares what is left (X-Request-Timeout-Ms may only shorten it).
    request_deadline_seconds: float = Field(1.8, gt=0, le=300, alias="REQUEST_DEADLINE_SECONDS")
    # The gateway: per attempt, capped by the request's deadline.
    gateway_upstream_timeout_seconds: float = Field(
        15.0, gt=0, alias="GATEWAY_UPSTREAM_TIMEOUT_SECONDS"
    )
    gateway_trust_inbound_baggage: bool = Field(False, alias="GATEWAY_TRUST_INBOUND_BAGGAGE")
    gateway_max_body_bytes: int = Field(1_048_576, ge=1, alias="GATEWAY_MAX_BODY_BYTES")

    # Cache-aside for items.
    cache_ttl_seconds: int = Field(300, alias="CACHE_TTL_SECONDS")
    # Client-side deadline of each PostgreSQL call (connect, statement, pool wait; see db.py):
    # a database that is down or hung answers 503 within about this long, not a hang.
    dependency_timeout_seconds: float = Field(1.5, gt=0, alias="DEPENDENCY_TIMEOUT_SECONDS")

    # Chaos mode: a share of requests gets an injected delay.
    chaos_enabled: bool = Field(False, alias="CHAOS_ENABLED")
    chaos_rate: float = Field(0.05, ge=0.0, le=1.0, alias="CHAOS_RATE")
    chaos_min_delay_ms: int = Field(100, ge=0, alias="CHAOS_MIN_DELAY_MS")
    chaos_max_delay_ms: int = Field(200, ge=0, alias="CHAOS_MAX_DELAY_MS")

    # How often the worker re-queues items left pending (e.g. written during a broker outage).
    pending_sweep_seconds: float = Field(30.0, gt=0, alias="PENDING_SWEEP_SECONDS")

    log_level: str = Field("INFO", alias="LOG_LEVEL")

    # Outbound weather call: each attempt times out on its own, retries back off
    # exponentially, and the whole call never outlives the deadline (then 504): a hung
    # upstream is a 504 within about 2 s, as a hung database is a 503 (issue 9).
    weather_timeout_seconds: float = Field(1.5, gt=0, le=60, alias="WEATHER_TIMEOUT_SECONDS")
    weather_max_retries: int = Field(2, ge=0, le=5, alias="WEATHER_MAX_RETRIES")
    weather_backoff_seconds: float = Field(0.1, ge=0, le=5, alias="WEATHER_BACKOFF_SECONDS")
    weather_deadline_seconds: float = Field(2.0, gt=0, le=120, alias="WEATHER_DEADLINE_SECONDS")
    # Share of /error-simulation requests that fail on purpose; ?probability=
    # overrides it per request.
    error_simulation_rate: float = Field(0.5, ge=0.0, le=1.0, alias="ERROR_SIMULATION_RATE")
    # How the weather upstream is instrumented: "manual" is our telemetry package,
    # "zero-code" runs it under `opentelemetry-instrument` (see docs/instrumentation.md).
    instrumentation_mode: Literal["manual", "zero-code"] = Field(
        "manual", alias="INSTRUMENTATION_MODE"
    )

    @field_validator(
        "postgres_port",
        "valkey_port",
        "console_token",
        "console_deploy_dir",
        "console_db",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``OTEL_LAB_POSTGRES_PORT=`` (or an empty token) means not set."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, url: str | None) -> str | None:
        """Accept plain ``postgresql://`` URLs (as compose files and PaaS give them)."""
        if url and url.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + url.split("://", 1)[1]
        return url

    def telemetry_defaults(self) -> TelemetryDefaults:
        return {
            "service_version": __version__,
            "environment": self.environment,
            "log_level": self.log_level,
        }

    def url_of(self, port: int, explicit: str | None) -> str:
        return (explicit or f"http://{self.host}:{port}").rstrip("/")

    def port_of(self, service: registry.Service | registry.Worker) -> int:
        """The port ``service`` listens on (its ``*_PORT`` setting)."""
        port: int = getattr(self, service.port_field)
        return port

    def base_url(self, service: registry.Service) -> str:
        """Where ``service`` is reached: its ``*_URL`` setting, else this host and its port."""
        explicit: str | None = getattr(self, service.url_field) if service.url_field else None
        return self.url_of(self.port_of(service), explicit)


@lru_cache
def get_settings() -> Settings:
    return Settings()
