// RED: rate, errors and duration per service and route, from SERVER/CONSUMER spans.
// Clicking a time bucket shows example traces for it (slowest, an error, and a search).
"use strict";
(() => {
  const { h, $, clear, api } = C;
  const url = C.params();
  const windowSel = $("#window");
  windowSel.value = url.get("window") || "1h";
  let service = url.get("service") || "";
  let route = url.get("route") || "";

  function syncUrl() {
    const p = new URLSearchParams();
    if (windowSel.value !== "1h") p.set("window", windowSel.value);
    if (service) p.set("service", service);
    if (route) p.set("route", route);
    C.setParams(p);
  }

  function statsCells(g) {
    return [
      h("td", { class: "r" }, C.fmtNum(g.count)),
      h("td", { class: "r" }, C.fmtRate(g.rate_per_second)),
      h("td", { class: "r" + (g.error_rate > 0 ? " err-text" : "") }, C.fmtPct(g.error_rate)),
      h("td", { class: "r" }, C.fmtMs(g.p50_ms)),
      h("td", { class: "r" }, C.fmtMs(g.p95_ms)),
      h("td", { class: "r" }, C.fmtMs(g.p99_ms)),
    ];
  }

  function searchHref(svc, search, bucket, extra) {
    const p = new URLSearchParams();
    p.set("service", svc);
    if (search && search.name) p.set("name", search.name);
    for (const a of (search && search.attr) || []) p.append("attr", a);
    if (bucket) { p.set("since", String(bucket.start_unix_nano)); p.set("until", String(bucket.end_unix_nano)); }
    for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
    return `/?${p.toString()}`;
  }

  function showExamples(group, bucket, search) {
    const box = $("#examples");
    box.hidden = false;
    clear(box).append(
      h("h3", null, `Examples ${C.fmtTime(bucket.start_unix_nano, false)} – ${C.fmtTime(bucket.end_unix_nano, false)}`,
        route ? ` · ${route}` : ""),
      h("p", null, `${C.fmtNum(bucket.count)} requests, ${C.fmtPct(bucket.error_rate)} errors, p50 ${C.fmtMs(bucket.p50_ms)}, ` +
        `p95 ${C.fmtMs(bucket.p95_ms)}, p99 ${C.fmtMs(bucket.p99_ms)}, max ${C.fmtMs(bucket.max_ms)}.`),
      h("ul", null,
        bucket.slow_trace_id ? h("li", null, "Slowest request: ", h("a", { href: C.traceHref(bucket.slow_trace_id), class: "slow-trace" }, `trace ${bucket.slow_trace_id}`), ` (${C.fmtMs(bucket.max_ms)})`) : null,
        bucket.error_trace_id ? h("li", null, "A failed request: ", h("a", { href: C.traceHref(bucket.error_trace_id), class: "error-trace" }, `trace ${bucket.error_trace_id}`)) : null,
        h("li", null, h("a", { href: searchHref(service, search, bucket, { order: "duration" }), class: "bucket-search" }, "All traces of this bucket, slowest first")),
        bucket.errors ? h("li", null, h("a", { href: searchHref(service, search, bucket, { status: "error" }) }, "Failed traces of this bucket")) : null));
    box.scrollIntoView({ block: "nearest" });
  }

  function charts(group, search) {
    const box = clear($("#charts"));
    const half = group.series.length ? (group.series[0].end_unix_nano - group.series[0].start_unix_nano) / 2 : 0;
    const x = (b) => b.start_unix_nano + half;
    const buckets = group.series.map((b) => ({
      x0: b.start_unix_nano, x1: b.end_unix_nano,
      title: `${C.fmtTime(b.start_unix_nano, false)}: ${C.fmtNum(b.count)} req, ${C.fmtPct(b.error_rate)} err, p95 ${C.fmtMs(b.p95_ms)} — click for example traces`,
      onClick: b.count ? () => showExamples(group, b, search) : null,
    }));
    const common = { xMin: group.series[0]?.start_unix_nano, xMax: group.series.at(-1)?.end_unix_nano, buckets };
    box.append(C.lineChart({ ...common, title: "Duration (p50, p95, p99)", yFormat: C.fmtMs, series: [
      { name: "p50", color: "#2fa36b", points: group.series.map((b) => [x(b), b.p50_ms]) },
      { name: "p95", color: "#d6a62f", points: group.series.map((b) => [x(b), b.p95_ms]) },
      { name: "p99", color: "#d65f2f", points: group.series.map((b) => [x(b), b.p99_ms]) },
    ] }));
    box.append(C.lineChart({ ...common, title: "Rate (requests per second)", yFormat: C.fmtRate, height: 130,
      series: [{ name: "rate", color: "#2f6fd6", points: group.series.map((b) => [x(b), b.count ? b.rate_per_second : 0]) }] }));
    box.append(C.lineChart({ ...common, title: "Error rate", yFormat: C.fmtPct, height: 130,
      series: [{ name: "errors", color: "#c62828", points: group.series.map((b) => [x(b), b.count ? b.error_rate : null]) }] }));
  }

  async function loadServices() {
    const res = await api("/api/red", { window: windowSel.value });
    const tbody = clear($("#services tbody"));
    $("#empty").hidden = res.services.length > 0;
    for (const g of res.services) {
      tbody.append(h("tr", { class: "svc-row" + (g.name === service ? " selected" : ""), dataset: { service: g.name } },
        h("td", null, h("a", { href: `/red?service=${encodeURIComponent(g.name)}`, onclick: (e) => { e.preventDefault(); service = g.name; route = ""; refresh(); } },
          h("span", { class: "svc-dot", style: { background: C.serviceColor(g.name) } }), g.name)),
        ...statsCells(g),
        h("td", null, C.sparkline(g.series.map((b) => b.rate_per_second), C.serviceColor(g.name)))));
    }
  }

  async function loadService() {
    const section = $("#service-detail");
    if (!service) { section.hidden = true; return; }
    const res = await api("/api/red", { window: windowSel.value, service });
    section.hidden = false;
    const focus = route ? res.routes.find((r) => r.route === route) : null;
    $("#detail-title").textContent = route ? `${service} · ${route}` : service;
    charts(focus || res.service, focus ? focus.search : null);
    const tbody = clear($("#routes tbody"));
    for (const r of res.routes) {
      tbody.append(h("tr", { class: "route-row" + (r.route === route ? " selected" : "") },
        h("td", null, h("a", { href: "#", onclick: (e) => { e.preventDefault(); route = r.route === route ? "" : r.route; refresh(); } }, r.route)),
        ...statsCells(r),
        h("td", null, h("a", { href: searchHref(service, r.search, null, { order: "duration" }) }, "traces"))));
    }
  }

  async function load() {
    syncUrl();
    await loadServices();
    await loadService();
    C.showError($("#error"), null);
  }

  const poll = C.live(async () => { try { await load(); } catch (e) { C.showError($("#error"), e); throw e; } }, 10000, $("#pause"), $("#updated"));
  function refresh() { $("#examples").hidden = true; poll.refresh(); }
  windowSel.addEventListener("change", refresh);
})();
