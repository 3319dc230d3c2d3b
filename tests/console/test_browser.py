"""The UI in a real browser: Playwright driving the Debian Chromium.

The chain gateway -> user-service -> order-service -> audit-service arrives as real OTLP
protobuf, with logs, an exception, a metric whose exemplar points at the trace, and
attribute values and names that try to inject script.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    Exemplar,
    Metric,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .builders import (
    key_values,
    log_record,
    logs_request,
    metrics_request,
    new_span_id,
    new_trace_id,
    span,
    traces_request,
)
from .conftest import Console, browser_page, start_console
from .synthetic import Generator

PROTOBUF = "application/x-protobuf"
SERVER, CLIENT = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT
MS = 1_000_000
XSS_ATTR = "<script>window.pwned=1</script>"
XSS_NAME = '<img src=x onerror="window.pwned=2">'
STACK = (
    'Traceback (most recent call last):\n  File "pricing.py", line 9, in price\n'
    "ZeroDivisionError: division by zero\n"
)


@pytest.fixture
def page(browser: Any, console: Console) -> Iterator[Any]:
    with browser_page(browser, console.ui_url, 10_000) as pg:
        yield pg


@pytest.fixture(scope="module")
def chain(console: Console) -> dict[str, Any]:
    """Two requests through the chain (one fails in order-service), their logs and a
    latency metric whose exemplar is the failing request."""
    now = time.time_ns() - 30_000 * MS
    services = ("gateway", "user-service", "order-service", "audit-service")
    result: dict[str, Any] = {"metric": f"ui.request.duration.{uuid.uuid4().hex[:8]}"}
    spans: dict[str, list[Span]] = {s: [] for s in services}
    records: dict[str, list[Any]] = {s: [] for s in services}
    for n, fail in enumerate((False, True)):
        tid = new_trace_id()
        start = now + n * 1000 * MS
        ids = {s: (new_span_id(), new_span_id()) for s in services}  # (server, client) per hop
        # The failing request stops in order-service: no call to audit-service.
        hops = services[:3] if fail else services
        for depth, service in enumerate(hops):
            server, client = ids[service]
            parent = ids[services[depth - 1]][1] if depth else None
            attrs: dict[str, Any] = {"http.request.method": "POST", "http.route": "/process"}
            if service == "user-service":
                attrs["note"] = XSS_ATTR
            error = fail and service == "order-service"
            exception = {"exception.type": "ZeroDivisionError", "exception.stacktrace": STACK}
            events = [("exception", start + 5 * MS, exception)] if error else None
            spans[service].append(
                span(tid, server, "POST /process", parent=parent, kind=SERVER,
                     start=start + depth * 2 * MS, duration_ms=40 - depth * 8,
                     attributes=attrs, status=2 if error else 0, events=events)
            )  # fmt: skip
            if depth < len(hops) - 1:
                spans[service].append(
                    span(tid, client, "POST", parent=server, kind=CLIENT,
                         start=start + depth * 2 * MS + MS, duration_ms=36 - depth * 8)
                )  # fmt: skip
            body = f"{service} handled the request"
            if service == "gateway":
                body += " <b>bold?</b>"
            records[service].append(
                log_record(body, trace_id=tid, span_id=server, at=start + depth * 2 * MS + MS // 2,
                           severity=17 if error else 9, severity_text="ERROR" if error else "INFO")
            )  # fmt: skip
        spans["gateway"].append(span(tid, new_span_id(), XSS_NAME, parent=ids["gateway"][0],
                                     start=start + MS, duration_ms=1))  # fmt: skip
        result["failed" if fail else "ok"] = {"trace_id": tid, **{s: ids[s][0] for s in services}}
    for service in services:
        body = traces_request(service, spans[service]).SerializeToString()
        assert console.post("/v1/traces", body, PROTOBUF).status_code == 200
        body = logs_request(service, records[service]).SerializeToString()
        assert console.post("/v1/logs", body, PROTOBUF).status_code == 200
    failed = result["failed"]
    metric = Metric(name=result["metric"], unit="s")
    metric.histogram.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
    for k in range(3):
        dp = metric.histogram.data_points.add(
            start_time_unix_nano=now - 60_000 * MS, time_unix_nano=now + k * 10_000 * MS,
            count=5 * (k + 1), sum=0.2 * (k + 1), bucket_counts=[4 * (k + 1), k + 1],
            explicit_bounds=[0.05])  # fmt: skip
        dp.attributes.extend(key_values({"http.route": "/process"}))
        if k == 2:
            dp.exemplars.append(Exemplar(time_unix_nano=now + 1000 * MS, as_double=0.04,
                                         trace_id=bytes.fromhex(failed["trace_id"]),
                                         span_id=bytes.fromhex(failed["gateway"])))  # fmt: skip
    body = metrics_request("gateway", [metric]).SerializeToString()
    assert console.post("/v1/metrics", body, PROTOBUF).status_code == 200
    console.trace(result["ok"]["trace_id"], spans=8)
    console.trace(failed["trace_id"], spans=6)
    console.wait_for(lambda: console.api(f"/api/metrics/{result['metric']}").status_code == 200)
    return result


def open_trace(page: Any, trace_id: str, span_id: str | None = None) -> None:
    page.goto(f"/trace/{trace_id}" + (f"?span={span_id}" if span_id else ""))
    page.wait_for_selector("body[data-ready='1']")
    # The trace's logs load after the waterfall is ready.
    page.wait_for_selector("#trace-logs[data-loaded='1']", state="attached")


def test_find_trace_by_id_and_expand_spans(page: Any, chain: dict[str, Any]) -> None:
    trace_id = chain["failed"]["trace_id"]
    page.goto("/")
    page.fill("#find-trace", trace_id.upper())
    page.press("#find-trace", "Enter")
    # The trace page selects its root span as it loads and records it in the URL
    # (?span=, history.replaceState): a fast load can be past that when the wait starts.
    root = chain["failed"]["gateway"]
    page.wait_for_url(re.compile(rf"/trace/{trace_id}(\?span={root})?$"))
    page.wait_for_selector("body[data-ready='1']")
    rows = page.locator(".wf-row")
    assert rows.count() == 6
    page.click("#collapse-all")
    assert rows.count() == 1
    page.click(".wf-row[data-row='0'] .toggle")
    assert rows.count() == 3  # the root's children: its client call and the injected span
    page.fill("#span-search", "order-service")
    page.press("#span-search", "Enter")  # jumps to the match, expanding its ancestors
    detail = page.locator("#detail")
    detail.locator(".exception").wait_for()
    assert "ZeroDivisionError" in detail.locator(".exception").inner_text()
    assert "division by zero" in detail.locator("pre.stack").inner_text()
    assert "Logs of this span (1)" in detail.inner_text()
    assert page.locator(".wf-row.selected .span-name").inner_text() == "POST /process"


def test_logs_of_a_trace_and_back(page: Any, chain: dict[str, Any]) -> None:
    ok = chain["ok"]
    open_trace(page, ok["trace_id"])
    assert page.locator("#trace-logs tr").count() == 4
    page.click("#trace-logs-link")
    page.wait_for_url(f"**/logs?trace_id={ok['trace_id']}")
    lines = page.locator("#logs tr.log-line")
    lines.first.wait_for()
    assert lines.count() == 4
    line = lines.filter(has_text="audit-service handled the request")
    line.locator("a.trace-link").click()
    page.wait_for_url(f"**/trace/{ok['trace_id']}?span={ok['audit-service']}")
    page.wait_for_selector("body[data-ready='1']")
    selected = page.locator(".wf-row.selected")
    assert selected.get_attribute("data-span-id") == ok["audit-service"]
    assert "audit-service handled the request" in page.locator("#detail").inner_text()


def test_exemplar_opens_its_trace(page: Any, chain: dict[str, Any]) -> None:
    failed = chain["failed"]
    page.goto(f"/metrics?name={chain['metric']}")
    link = page.locator("a.exemplar-trace").first
    link.wait_for()
    assert page.locator("svg.chart a.exemplar-link").count() == 1
    link.click()
    page.wait_for_url(f"**/trace/{failed['trace_id']}?span={failed['gateway']}")
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#trace-title").inner_text() == "gateway: POST /process"


def test_service_map_shows_the_chain(page: Any, chain: dict[str, Any]) -> None:
    page.goto("/map")
    page.locator("#edges tr.edge-row").first.wait_for()
    hops = [("gateway", "user-service"), ("user-service", "order-service"),
            ("order-service", "audit-service")]  # fmt: skip
    for source, target in hops:
        row = page.locator(f"#edges tr.edge-row[data-source='{source}'][data-target='{target}']")
        assert row.count() == 1
        cells = row.locator("td").all_inner_texts()
        assert cells[2] == "http" and int(cells[3]) >= 1
        edge = page.locator(
            f"svg.map-svg path.edge[data-source='{source}'][data-target='{target}']"
        )
        assert edge.count() == 1
    failing = page.locator(
        "#edges tr.edge-row[data-source='user-service'][data-target='order-service']"
    )
    assert "err" in (failing.get_attribute("class") or "")


def test_filter_the_trace_list(page: Any, chain: dict[str, Any]) -> None:
    page.goto("/")
    page.locator("#traces tbody tr").first.wait_for()
    page.select_option("select[name=service]", "audit-service")
    page.wait_for_function(
        "() => location.search.includes('audit-service') && [...document.querySelectorAll("
        "'#traces tbody tr')].every(tr => tr.textContent.includes('audit-service'))"
    )
    assert chain["ok"]["trace_id"] in page.locator("#traces tbody").inner_text()
    assert chain["failed"]["trace_id"] not in page.locator("#traces tbody").inner_text()
    page.select_option("select[name=service]", "order-service")
    page.select_option("select[name=status]", "error")
    page.wait_for_function("() => location.search.includes('status=error')")
    page.wait_for_function(
        "id => document.querySelectorAll('#traces tbody tr').length === 1 && "
        "document.querySelector('#traces tbody').textContent.includes(id)",
        arg=chain["failed"]["trace_id"],
    )
    page.fill("input[name=attr_key]", "note")
    page.fill("input[name=attr_value]", XSS_ATTR)
    page.click("#filters button[type=submit]")
    page.wait_for_selector("#chips .chip")
    assert XSS_ATTR in page.locator("#chips").inner_text()
    # The attribute lives on user-service spans; with service=order-service nothing matches.
    page.wait_for_selector("#empty:not([hidden])")
    page.click("#chips .chip-x")
    page.locator("#traces tbody tr").first.wait_for()


def test_malicious_values_render_as_text(page: Any, chain: dict[str, Any]) -> None:
    ok = chain["ok"]
    open_trace(page, ok["trace_id"], ok["user-service"])
    page.wait_for_selector("#detail .span-attributes")
    assert XSS_ATTR in page.locator("#detail .span-attributes").inner_text()
    assert page.locator(f".wf-row .span-name:text-is('{XSS_NAME}')").count() == 1
    assert "<b>bold?</b>" in page.locator("#trace-logs").inner_text()
    assert page.locator("#detail script, #viewport img, #trace-logs b").count() == 0
    page.goto("/logs")
    page.locator("#logs tr.log-line").first.wait_for()
    note = "json_extract(attributes, '$.note')"
    sql = f"SELECT {note} FROM spans WHERE {note} IS NOT NULL LIMIT 1"
    page.goto("/sql?" + urlencode({"q": sql}))
    page.wait_for_selector("#result tbody td")
    assert page.locator("#result tbody td").first.inner_text() == XSS_ATTR
    assert page.evaluate("typeof window.pwned") == "undefined"


def test_red_bucket_jumps_to_example_traces(page: Any, chain: dict[str, Any]) -> None:
    page.goto("/red?service=order-service")
    page.locator("#routes tr.route-row").first.wait_for()
    bucket = page.locator("#charts svg.chart rect.bucket").last
    page.wait_for_function(
        "() => document.querySelectorAll('#charts svg.chart rect.bucket').length > 0"
    )
    # The last bucket holds this minute's requests (the chain was sent seconds ago); click
    # the latest non-empty one.
    buckets = page.locator("#charts svg.chart").first.locator("rect.bucket")
    for i in range(buckets.count() - 1, -1, -1):
        if "0 req" not in (buckets.nth(i).locator("title").text_content() or "0 req"):
            bucket = buckets.nth(i)
            break
    bucket.click()
    example = page.locator("#examples a.error-trace")
    example.wait_for()
    example.click()
    page.wait_for_url("**/trace/*")
    page.wait_for_selector("body[data-ready='1']")
    assert "errors" in page.locator("#trace-summary").inner_text()


def test_a_10k_span_trace_renders_only_what_is_visible(page: Any, console: Console) -> None:
    big = Generator(seed=3).big_trace(10_000, time.time_ns() - 120_000 * MS)
    body = big.traces_request().SerializeToString()
    assert console.post("/v1/traces", body, PROTOBUF).status_code == 200
    trace_id = big.trace_ids[0]
    console.trace(trace_id, spans=10_000)
    open_trace(page, trace_id)
    assert page.evaluate("window.__traceReady.spans") == 10_000
    rendered = page.locator(".wf-row").count()
    assert 10 < rendered < 200  # virtualised: only the rows in view (plus a margin) exist
    page.locator("#viewport").evaluate("el => { el.scrollTop = el.scrollHeight; }")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.wf-row')].some(r => Number(r.dataset.row) > 9900)"
    )
    page.click("#collapse-all")
    assert page.locator(".wf-row").count() == 1


def test_eviction_banner_and_clear_all(browser: Any, tmp_path: Path) -> None:
    """On a console of its own: evicted data is announced on every page; Clear all asks
    before it deletes."""
    own = start_console(tmp_path / "banner.db", "--retention", "1h")
    context = browser.new_context(base_url=own.ui_url)
    context.set_default_timeout(10_000)
    try:
        old, fresh = new_trace_id(), new_trace_id()
        now = time.time_ns()
        for tid, at in ((old, now - 2 * 3600 * 10**9), (fresh, now)):
            body = traces_request("banner", [span(tid, new_span_id(), "op", start=at)])
            assert own.post("/v1/traces", body.SerializeToString(), PROTOBUF).status_code == 200
        own.wait_for(lambda: own.api("/api/stats").json()["evicted"]["spans"] == 1)
        page = context.new_page()
        page.goto("/")
        banner = page.locator("#banner")
        banner.wait_for()
        assert "Evicted 1 spans (1 traces)" in banner.inner_text()
        assert "retention of 1h" in banner.inner_text()
        page.goto("/store")
        page.wait_for_function("() => document.querySelector('#cards').textContent.includes('1')")
        page.click("#clear")
        assert page.locator("#clear-confirm").is_visible()
        page.click("#clear-no")
        assert own.api("/api/stats").json()["stored"]["spans"] == 1
        page.click("#clear")
        page.click("#clear-yes")
        page.wait_for_function(
            "() => document.getElementById('clear-result').textContent.startsWith('Deleted 1 ')"
        )
        assert own.api("/api/stats").json()["stored"]["spans"] == 0
        page.wait_for_function(
            "() => document.getElementById('banner').textContent.includes('All data was cleared')"
        )
    finally:
        context.close()
        assert own.stop() == 0
