"""A real console process for the suite: ``python -m otel_lab.console`` on free ports.

Tests share one process (start-up costs about a second) and keep out of each other's way
by using fresh trace ids and service names.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

READY = re.compile(r"OTLP/HTTP on (\S+), UI and API on (\S+),")
T = TypeVar("T")


@dataclass
class Console:
    process: subprocess.Popen[str]
    otlp_url: str
    ui_url: str
    db_path: Path
    log_path: Path
    http: httpx.Client

    def api(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(self.ui_url + path, params=params)

    def post(self, path: str, body: bytes, content_type: str, **headers: str) -> httpx.Response:
        return self.http.post(
            self.otlp_url + path, content=body, headers={"content-type": content_type, **headers}
        )

    def wait_for(self, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
        """Poll until probe returns something truthy: ingest is asynchronous by design."""
        deadline = time.monotonic() + timeout
        while True:
            result = probe()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {probe}")
            time.sleep(0.02)

    def trace(self, trace_id: str, spans: int = 1) -> dict[str, Any]:
        """The trace from the API once it has at least ``spans`` spans."""

        def probe() -> dict[str, Any] | None:
            r = self.api(f"/api/traces/{trace_id}")
            if r.status_code == 200 and len(r.json()["spans"]) >= spans:
                return r.json()
            return None

        return self.wait_for(probe)

    def stop(self, timeout: float = 15.0) -> int:
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def start_console(
    db_path: Path, *extra: str, timeout: float = 20.0, env: Mapping[str, str] | None = None
) -> Console:
    """Start the console and wait for its ready line (it prints its real ports); ``env`` adds
    to the environment.

    Retention is off unless a test asks for it: most tests use fixed timestamps from 2025,
    which the default 24h retention would evict at once.
    """
    if "--retention" not in extra:
        extra = ("--retention", "0", *extra)
    log_path = db_path.with_suffix(".log")
    log_file = log_path.open("w")
    full_env = {**os.environ, "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", **(env or {})}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "otel_lab.console",
            "--otlp-port",
            "0",
            "--ui-port",
            "0",
            "--db",
            str(db_path),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
        env=full_env,
    )
    log_file.close()
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            line = process.stdout.readline()
            match = READY.search(line)
            if match:
                return Console(
                    process, match[1], match[2], db_path, log_path, httpx.Client(timeout=10)
                )
            if not line and process.poll() is not None:
                break
    process.kill()
    process.wait()
    raise RuntimeError(f"console did not start:\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    instance = start_console(tmp_path_factory.mktemp("console") / "telemetry.db")
    yield instance
    code = instance.stop()
    assert code == 0, f"console exited with {code}:\n{instance.log_path.read_text()}"
    log = instance.log_path.read_text()
    assert "Traceback" not in log, log


# ----------------------------------------------------------------------------- traffic
@contextmanager
def steady_traffic(
    base_url: str, send: Callable[[httpx.Client, int], object], pause: float = 0.2
) -> Iterator[None]:
    """``send(client, i)`` (i = 1, 2, ...) every ``pause`` seconds in the background while the
    block runs: rate panels need traffic spread over their window, not a burst."""
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(base_url=base_url, timeout=15.0) as client:
            i = 0
            while not stop.wait(pause):
                i += 1
                with suppress(httpx.HTTPError):
                    send(client, i)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=20)


# ----------------------------------------------------------------------------- Chromium
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (no browser download), one per test module."""
    if not Path(CHROMIUM).exists():
        pytest.skip("apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


@contextmanager
def browser_page(browser: Any, base_url: str, timeout_ms: int) -> Iterator[Any]:
    """A page in a fresh context; the block fails if the page raised a JavaScript error."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(timeout_ms)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert errors == []
