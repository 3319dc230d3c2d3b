"""The showcase's ``GET /weather/{city}``: a real outbound call to the weather upstream.

The api calls the offline weather upstream over real HTTP. The tests check the answer, the
failure mapping (404, 502, 504), bad city names (422), the retries, and the trace: the
api's CLIENT span with the upstream's SERVER span as its child, in one trace. The last
part runs the upstream under ``opentelemetry-instrument`` (zero-code mode) and
checks what that emits.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY

from otel_lab.registry import WEATHER_UPSTREAM
from otel_lab.runtime.harness import RunningSystem, free_ports
from otel_lab.services.api.weather import UpstreamFailure, WeatherClient
from otel_lab.services.weather_upstream import launch
from otel_lab.settings import Settings
from otel_lab.telemetry import Telemetry
from tests.conftest import Console, Span, children_of, served, span_named, trace_id_of

UPSTREAM = "weather-upstream"
OBSERVATION_KEYS = {"city", "temperature_c", "feels_like_c", "humidity_pct", "wind_kph"}


# --------------------------------------------------------------------------- helpers


def _start_upstream(
    system: RunningSystem, port: int, service_name: str, mode: str = "zero-code"
) -> tuple[subprocess.Popen[bytes], str]:
    """A second weather upstream, started the way the runtime starts it in ``mode``,
    exporting to the system's console."""
    settings = Settings(INSTRUMENTATION_MODE=mode)
    env = {
        **system.env,
        **launch.environment(settings),
        "OTEL_SERVICE_NAME": service_name,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{system.env['CONSOLE_OTLP_PORT']}",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
    }
    argv = launch.wrap_argv(WEATHER_UPSTREAM.uvicorn_argv("127.0.0.1", port), settings)
    log_path = system.data_dir / "logs" / f"{service_name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with Path(log_path).open("ab") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{service_name} exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{service_name} not ready: {log_path.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@pytest.fixture(scope="module")
def weather_upstream(system: RunningSystem) -> str:
    """The upstream the api calls, as ``otel-lab up`` runs it."""
    return system.url(UPSTREAM)


def _city(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _client_spans(spans: list[Span], parent: Span) -> list[Span]:
    return [s for s in children_of(spans, parent) if s["kind"] == "CLIENT"]


def _metric_value(text: str, series: str) -> float:
    """One sample from the OpenMetrics text, by its exact name and labels (0 if absent)."""
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name == series:
            return float(rest.split(" ")[0])
    return 0.0


# --------------------------------------------------------------------------- answers


@pytest.mark.usefixtures("weather_upstream")
def test_weather_through_the_gateway(gateway: httpx.Client) -> None:
    response = gateway.get("/weather/London")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["city"] == "London"
    assert set(body) >= OBSERVATION_KEYS
    assert isinstance(body["conditions"], str) and body["conditions"]
    assert body["attempts"] == 1
    again = gateway.get("/weather/London").json()
    assert again["temperature_c"] == body["temperature_c"], "the fake weather is deterministic"


@pytest.mark.usefixtures("weather_upstream")
def test_non_ascii_city(api: httpx.Client) -> None:
    response = api.get("/weather/São Paulo")
    assert response.status_code == 200, response.text
    assert response.json()["city"] == "São Paulo"


@pytest.mark.usefixtures("weather_upstream")
def test_one_trace_from_api_client_span_to_upstream_server_span(
    api: httpx.Client, console: Console
) -> None:
    city = _city("Oslo-")
    response = api.get(f"/weather/{city}")
    assert response.status_code == 200, response.text
    trace_id = trace_id_of(response)

    spans = console.trace(trace_id, until=served("api", UPSTREAM))
    server = span_named(spans, "GET /weather/{city}", "api")
    assert server["attributes"]["http.route"] == "/weather/{city}"
    fetch = span_named(spans, "weather.fetch", "api")
    assert fetch["attributes"]["api.operation"] == "weather.current"
    assert fetch["attributes"]["operation.type"] == "external_api"
    assert fetch["attributes"]["weather.attempts"] == 1
    assert fetch["status"]["code"] != "ERROR"

    [client] = _client_spans(spans, fetch)
    assert client["service_name"] == "api"
    assert client["attributes"]["http.request.method"] == "GET"  # formerly http.method
    assert "/v1/current" in client["attributes"]["url.full"]  # formerly http.url
    assert client["attributes"]["http.response.status_code"] == 200

    upstream = [
        s
        for s in spans
        if s["service_name"] == UPSTREAM
        and s["kind"] == "SERVER"
        and s["parent_span_id"] == client["span_id"]
    ]
    assert upstream, "the upstream's server span is a child of the api's client span"
    assert upstream[0]["attributes"]["http.route"] == "/v1/current"
    lookup = span_named(spans, "weather.lookup", UPSTREAM)
    assert lookup["attributes"]["weather.city"] == city


# --------------------------------------------------------------------------- failures


@pytest.mark.usefixtures("weather_upstream")
def test_flaky_upstream_is_retried_and_the_retry_is_in_the_trace(
    api: httpx.Client, console: Console
) -> None:
    response = api.get(f"/weather/{_city('flaky-')}")
    assert response.status_code == 200, response.text
    assert response.json()["attempts"] == 2
    trace_id = trace_id_of(response)

    spans = console.trace(
        trace_id,
        until=lambda spans: (
            sum(s["name"] == "weather.lookup" for s in spans) == 2
            and any(s["name"] == "weather.fetch" for s in spans)
        ),
    )
    fetch = span_named(spans, "weather.fetch", "api")
    assert fetch["attributes"]["weather.attempts"] == 2
    retries = [e for e in fetch["events"] if e["name"] == "retry"]
    assert len(retries) == 1
    assert retries[0]["attributes"]["retry.reason"] == "status_503"
    statuses = sorted(
        s["attributes"]["http.response.status_code"] for s in _client_spans(spans, fetch)
    )
    assert statuses == [200, 503]


@pytest.mark.parametrize(
    ("city", "status", "error_type", "attempts"),
    [
        ("error-500", 502, "upstream_error", 1),  # a 500 is not worth retrying
        ("error-503", 502, "upstream_error", 3),  # 503 is: 1 + WEATHER_MAX_RETRIES (2)
        ("error-418", 502, "upstream_error", 1),
        ("invalid-page", 502, "upstream_invalid_response", 1),
        ("error-404", 404, "city_not_found", 1),
    ],
)
@pytest.mark.usefixtures("weather_upstream")
def test_upstream_failures_map_to_clear_json(
    api: httpx.Client, city: str, status: int, error_type: str, attempts: int
) -> None:
    response = api.get(f"/weather/{city}")
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error_type"] == error_type
    assert body["attempts"] == attempts
    assert body["request_id"] == response.headers["x-request-id"]
    assert "weather upstream" in body["detail"] or "unknown city" in body["detail"]


@pytest.mark.usefixtures("weather_upstream")
def test_upstream_error_is_recorded_on_the_spans(api: httpx.Client, console: Console) -> None:
    response = api.get("/weather/error-500")
    assert response.status_code == 502
    spans = console.trace(
        trace_id_of(response),
        until=lambda spans: (
            any(s["name"] == "GET /weather/{city}" for s in spans)
            and any(s["name"] == "weather.fetch" for s in spans)
        ),
    )
    fetch = span_named(spans, "weather.fetch", "api")
    assert fetch["status"]["code"] == "ERROR"
    assert fetch["attributes"]["error.type"] == "upstream_error"
    assert any(e["name"] == "exception" for e in fetch["events"])
    server = span_named(spans, "GET /weather/{city}", "api")
    assert server["status"]["code"] == "ERROR"
    assert server["attributes"]["http.response.status_code"] == 502


@pytest.mark.usefixtures("weather_upstream")
def test_slow_upstream_times_out_as_504_within_the_deadline(
    api: httpx.Client, console: Console
) -> None:
    started = time.monotonic()
    response = api.get("/weather/slow-8000", timeout=20)
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    body = response.json()
    assert body["error_type"] == "upstream_timeout"
    assert "timed out" in body["detail"]
    assert elapsed < 7, "WEATHER_DEADLINE_SECONDS (2 s) bounds the whole call"

    spans = console.trace(
        trace_id_of(response),
        until=lambda spans: any(s["name"] == "weather.fetch" for s in spans),
    )
    fetch = span_named(spans, "weather.fetch", "api")
    assert fetch["attributes"]["error.type"] == "upstream_timeout"
    clients = _client_spans(spans, fetch)
    assert clients and all(s["status"]["code"] == "ERROR" for s in clients)
    assert all("Timeout" in s["attributes"].get("error.type", "") for s in clients)


def test_unreachable_upstream_is_502() -> None:
    """The client itself against a port nobody listens on: a real refused connection."""
    [port] = free_ports(1)

    async def call() -> UpstreamFailure:
        client = WeatherClient(
            f"http://127.0.0.1:{port}",
            timeout_seconds=1.0,
            max_retries=1,
            backoff_seconds=0.01,
            deadline_seconds=3.0,
            settings=Settings(),
            telemetry=Telemetry(enabled=False),
        )
        try:
            with pytest.raises(UpstreamFailure) as failure:
                await client.current("London")
            return failure.value
        finally:
            await client.aclose()

    failure = asyncio.run(call())
    assert failure.status_code == 502
    assert failure.error_type == "upstream_unreachable"
    assert failure.attempts == 2


@pytest.mark.parametrize(
    "path",
    [
        "/weather/%20",  # empty once trimmed
        "/weather",  # no city at all
        "/weather/",
        "/weather/a_b",
        "/weather/a%3Cscript%3E",
        "/weather/semi;colon",
        "/weather/quote%22d",
        "/weather/1999",  # must start with a letter
        "/weather/London%0Aset-cookie",
        "/weather/" + "x" * 65,
    ],
)
def test_bad_city_names_are_422(api: httpx.Client, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 422, (path, response.text)
    assert response.headers["content-type"] == "application/json"
    assert "detail" in response.json()


@pytest.mark.usefixtures("weather_upstream")
def test_metrics_time_the_outbound_call(api: httpx.Client) -> None:
    api.get("/weather/Paris")
    api.get(f"/weather/{_city('flaky-')}")
    text = api.get("/metrics").text
    assert _metric_value(text, 'api_operation_seconds_count{operation="weather.current"}') >= 2
    assert (
        _metric_value(
            text, 'api_operation_retries_total{operation="weather.current",reason="status_503"}'
        )
        >= 1
    )


# --------------------------------------------------------------------------- retries, breaker
# A WeatherClient in this process, reporting to in-memory exporters, against real upstream
# processes: per-attempt timeouts shorter than the system's (whose 1.8 s request deadline
# leaves no room to retry a 1.5 s timeout), and an upstream of its own to kill.


def _memory_telemetry() -> tuple[InMemorySpanExporter, Telemetry]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return spans, Telemetry(provider, MeterProvider())


def _retries(reason: str) -> float:
    labels = {"operation": "weather.current", "reason": reason}
    return REGISTRY.get_sample_value("api_operation_retries_total", labels) or 0.0


def _fetch(spans: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The one weather.fetch span recorded, and its attempts' CLIENT spans in order."""
    finished = spans.get_finished_spans()
    [fetch] = [s for s in finished if s.name == "weather.fetch"]
    attempts = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert all(a.parent is not None and a.parent.span_id == fetch.context.span_id for a in attempts)
    return fetch, sorted(attempts, key=lambda s: s.start_time or 0)


def _events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


async def _current(client: WeatherClient, city: str) -> UpstreamFailure | int:
    """The call's failure, or the attempts a success took."""
    try:
        return (await client.current(city))[1]
    except UpstreamFailure as failure:
        return failure


def test_read_timeouts_are_retried_with_their_reason_and_delay(weather_upstream: str) -> None:
    spans, telemetry = _memory_telemetry()
    before = _retries("ReadTimeout")

    async def call() -> UpstreamFailure:
        client = WeatherClient(
            weather_upstream,
            timeout_seconds=0.3,
            max_retries=2,
            backoff_seconds=0.05,
            deadline_seconds=5.0,
            settings=Settings(),
            telemetry=telemetry,
        )
        try:
            with pytest.raises(UpstreamFailure) as failure:
                await client.current(_city("slow-1000-"))
            return failure.value
        finally:
            await client.aclose()

    failure = asyncio.run(call())
    assert (failure.status_code, failure.error_type) == (504, "upstream_timeout")
    assert failure.attempts == 3
    assert _retries("ReadTimeout") == before + 2

    fetch, attempts = _fetch(spans)
    retries = _events(fetch, "retry")
    assert [r["retry.reason"] for r in retries] == ["ReadTimeout", "ReadTimeout"]
    assert [r["retry.attempt"] for r in retries] == [1, 2]
    assert len(attempts) == 3
    for retry, failed, following in zip(retries, attempts[:-1], attempts[1:], strict=True):
        delay = retry["retry.delay_s"]
        assert isinstance(delay, float) and 0.05 <= delay <= 5.0, retry
        # The delay is the pause actually taken between the attempts.
        assert following.start_time and failed.end_time
        assert following.start_time - failed.end_time >= (delay - 0.001) * 1e9


def test_refused_calls_open_the_breaker_and_it_closes_again(system: RunningSystem) -> None:
    """A port nothing listens on yet: refused connections are retried as ConnectError; five
    consecutive ones open the breaker (503 circuit_open, no connection tried); once a real
    upstream listens there and the cool-down is over, one trial call closes it."""
    [port] = free_ports(1)
    upstream: list[subprocess.Popen[bytes]] = []
    spans, telemetry = _memory_telemetry()
    settings = Settings(CIRCUIT_BREAKER_FAILURE_THRESHOLD=5, CIRCUIT_BREAKER_RESET_SECONDS=1.0)

    async def scenario() -> None:
        client = WeatherClient(
            f"http://127.0.0.1:{port}",
            timeout_seconds=1.0,
            max_retries=2,
            backoff_seconds=0.01,
            deadline_seconds=3.0,
            settings=settings,
            telemetry=telemetry,
        )
        try:
            await _breaker_scenario(client, upstream, spans, system, port)
        finally:
            await client.aclose()

    try:
        asyncio.run(scenario())
    finally:
        for process in upstream:
            _stop(process)


async def _breaker_scenario(
    client: WeatherClient,
    upstream: list[subprocess.Popen[bytes]],
    spans: InMemorySpanExporter,
    system: RunningSystem,
    port: int,
) -> None:
    before = _retries("ConnectError")

    first = await _current(client, "London")  # three refused attempts: failures 1-3
    assert isinstance(first, UpstreamFailure)
    assert (first.status_code, first.error_type, first.attempts) == (
        502, "upstream_unreachable", 3,
    )  # fmt: skip
    fetch, attempts = _fetch(spans)
    retries = _events(fetch, "retry")
    assert [r["retry.reason"] for r in retries] == ["ConnectError"] * 2
    assert all(isinstance(r["retry.delay_s"], float) for r in retries)
    refused = [(a.attributes or {}).get("error.type") for a in attempts]
    assert refused == ["ConnectError"] * 3
    assert _retries("ConnectError") == before + 2
    spans.clear()

    second = await _current(client, "London")  # failures 4 and 5 open it; then refused
    assert isinstance(second, UpstreamFailure) and second.error_type == "upstream_unreachable"
    fetch, attempts = _fetch(spans)
    assert len(attempts) == 2
    assert _events(fetch, "circuit_breaker.state_change") == [
        {"circuit_breaker.from": "closed", "circuit_breaker.to": "open"}
    ]
    assert _events(fetch, "circuit_breaker.rejected") == [{"circuit_breaker.state": "open"}]
    opened = time.monotonic()
    spans.clear()

    rejected = await _current(client, "London")  # open: answered without trying
    assert isinstance(rejected, UpstreamFailure)
    assert (rejected.status_code, rejected.error_type) == (503, "circuit_open")
    assert "circuit open" in str(rejected)
    fetch, attempts = _fetch(spans)
    assert attempts == [] and fetch.status.status_code is StatusCode.ERROR

    upstream.append(_start_upstream(system, port, "weather-upstream-breaker", mode="manual")[0])
    await asyncio.sleep(max(0.0, opened + 1.0 - time.monotonic()) + 0.05)  # the cool-down
    spans.clear()
    assert await _current(client, "London") == 1  # the half-open trial succeeds
    fetch, _ = _fetch(spans)
    assert _events(fetch, "circuit_breaker.state_change") == [
        {"circuit_breaker.from": "open", "circuit_breaker.to": "half_open"},
        {"circuit_breaker.from": "half_open", "circuit_breaker.to": "closed"},
    ]
    assert await _current(client, "Paris") == 1  # closed: calls go through again


# --------------------------------------------------------------------------- zero-code mode


@pytest.fixture(scope="module")
def zero_code_upstream(system: RunningSystem) -> Iterator[str]:
    """The upstream under ``opentelemetry-instrument``, as zero-code mode runs it."""
    [port] = free_ports(1)
    process, url = _start_upstream(system, port, "weather-upstream-zero-code")
    try:
        yield url
    finally:
        _stop(process)


def test_launch_wraps_the_command_only_in_zero_code_mode() -> None:
    argv = WEATHER_UPSTREAM.uvicorn_argv("127.0.0.1", 8090)
    assert launch.wrap_argv(argv, Settings(INSTRUMENTATION_MODE="manual")) == argv
    assert launch.environment(Settings(INSTRUMENTATION_MODE="manual")) == {}
    wrapped = launch.wrap_argv(argv, Settings(INSTRUMENTATION_MODE="zero-code"))
    assert wrapped[-len(argv) :] == argv
    assert "opentelemetry" in " ".join(wrapped[: -len(argv)])
    env = launch.environment(Settings(INSTRUMENTATION_MODE="zero-code"))
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert "sqlalchemy" in env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"]


def test_zero_code_upstream_joins_the_callers_trace(
    zero_code_upstream: str, console: Console
) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    response = httpx.get(
        f"{zero_code_upstream}/v1/current",
        params={"city": "Lisbon"},
        headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    assert response.status_code == 200
    assert response.json()["city"] == "Lisbon"
    assert httpx.get(f"{zero_code_upstream}/health").json()["instrumentation"] == "zero-code"

    service = "weather-upstream-zero-code"
    spans = console.trace(
        trace_id,
        until=lambda spans: (
            any(s["kind"] == "SERVER" for s in spans)
            and any(s["name"] == "weather.lookup" for s in spans)
        ),
    )
    servers = [s for s in spans if s["kind"] == "SERVER"]
    assert len(servers) == 1, f"one server span, not two: {[s['scope'] for s in servers]}"
    [server] = servers
    assert server["service_name"] == service
    assert server["parent_span_id"] == parent_id, "traceparent honoured"
    assert server["name"] == "GET /v1/current"
    assert server["attributes"]["http.route"] == "/v1/current"
    assert "opentelemetry.instrumentation" in str(server["scope"])
    # What the agent adds that our middleware does not: per-message ASGI spans.
    sends = [s for s in children_of(spans, server) if s["name"].endswith("http send")]
    assert sends, "the stock ASGI instrumentation emits send spans"
    # The manual span inside the handler still lands under the agent's server span.
    lookup = span_named(spans, "weather.lookup", service)
    assert lookup["parent_span_id"] == server["span_id"]

    logs = console.logs(
        trace_id, until=lambda logs: any(log["body"] == "weather_served" for log in logs)
    )
    served_log = next(log for log in logs if log["body"] == "weather_served")
    assert served_log["service_name"] == service
    assert served_log["span_id"] == lookup["span_id"]


def test_no_duplicate_server_spans_in_manual_mode(weather_upstream: str, console: Console) -> None:
    """Our middleware alone makes the upstream's server span (no second one from FastAPI)."""
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    response = httpx.get(
        f"{weather_upstream}/v1/current",
        params={"city": "Lima"},
        headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    assert response.status_code == 200
    spans = console.trace(
        trace_id, until=lambda spans: any(s["name"] == "weather.lookup" for s in spans)
    )
    time.sleep(1)  # a second server span, if any, is exported in the same batches
    spans = console.trace(trace_id)
    servers = [s for s in spans if s["kind"] == "SERVER"]
    assert len(servers) == 1, [(s["name"], s["scope"]) for s in servers]
