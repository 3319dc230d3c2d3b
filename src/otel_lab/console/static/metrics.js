// Metrics explorer: pick an OTLP metric, filter by dimensions, group, see rates/values or
// latency percentiles over time; exemplars are dots and rows that open their trace.
"use strict";
(() => {
  const { h, $, clear, api } = C;
  const form = $("#filters");
  const url = C.params();
  const state = {
    name: url.get("name") || "",
    attrs: url.getAll("attr"),
    group_by: url.get("group_by") || "",
    service: url.get("service") || "",
    window: url.get("window") || "1h",
    quantile: url.get("q") || "p95",
  };
  let metrics = [];
  let lastDims = {};

  const PALETTE = ["#2f6fd6", "#d65f2f", "#2fa36b", "#9b4fd6", "#d6a62f", "#2fb8d6", "#d62f7a", "#6b7a2f"];

  function unitFormat(unit) {
    if (unit === "s") return (v) => C.fmtMs(v * 1000);
    if (unit === "ms") return (v) => C.fmtMs(v);
    if (unit === "us") return (v) => C.fmtMs(v / 1000);
    if (unit === "By") return (v) => C.fmtBytes(v);
    return (v) => (Math.abs(v) >= 1000 ? Math.round(v).toLocaleString("en-US") : String(Math.round(v * 1000) / 1000));
  }

  let varying = null; // label keys whose values differ between series (the others say nothing)

  function label(series) {
    const entries = Object.entries(series.labels).filter(([k]) => !varying || varying.has(k));
    return entries.length ? entries.map(([k, v]) => `${k}=${C.fmtValue(v)}`).join(", ") : "all";
  }

  function findVarying(res) {
    const values = new Map();
    for (const sr of res.series) for (const [k, v] of Object.entries(sr.labels)) (values.get(k) || values.set(k, new Set()).get(k)).add(JSON.stringify(v));
    varying = new Set([...values].filter(([k, vs]) => vs.size > 1 || res.series.some((sr) => !(k in sr.labels))).map(([k]) => k));
  }

  function syncUrl() {
    const p = new URLSearchParams();
    if (state.name) p.set("name", state.name);
    if (state.service) p.set("service", state.service);
    for (const a of state.attrs) p.append("attr", a);
    if (state.group_by) p.set("group_by", state.group_by);
    if (state.window !== "1h") p.set("window", state.window);
    if (state.quantile !== "p95") p.set("q", state.quantile);
    C.setParams(p);
  }

  function renderList() {
    const filter = $("#metric-filter").value.trim().toLowerCase();
    const list = clear($("#metric-list"));
    for (const m of metrics) {
      if (filter && !m.name.toLowerCase().includes(filter)) continue;
      list.append(h("li", null, h("a", {
        href: `/metrics?name=${encodeURIComponent(m.name)}`, class: m.name === state.name ? "active" : "",
        onclick: (e) => { e.preventDefault(); choose(m.name); },
      }, m.name, h("span", { class: "muted small" }, ` ${m.type}`))));
    }
    if (!list.firstChild) list.append(h("li", { class: "muted" }, metrics.length ? "no match" : "No metrics received yet."));
  }

  function choose(name) {
    state.name = name; state.attrs = []; state.group_by = ""; state.service = "";
    renderList();
    load();
  }

  function renderFilters(res) {
    form.hidden = false;
    const svc = form.elements.service;
    const keep = svc.options[0];
    clear(svc).append(keep);
    for (const s of res.dimensions["service.name"] || []) svc.append(h("option", { value: s }, s));
    if (state.service && ![...svc.options].some((o) => o.value === state.service)) svc.append(h("option", { value: state.service }, state.service));
    svc.value = state.service;
    const dimKey = $("#dim-key");
    const groupBy = $("#group-by");
    const keys = Object.keys(res.dimensions).filter((k) => k !== "service.name");
    const keepKey = dimKey.options[0];
    C.fill(dimKey, keepKey, keys.map((k) => h("option", { value: k }, k)));
    const keepGroup = groupBy.options[0];
    C.fill(groupBy, keepGroup, ["service.name", ...keys].map((k) => h("option", { value: k }, k)));
    groupBy.value = state.group_by;
    form.elements.window.value = state.window;
    lastDims = res.dimensions;
    fillValues();
    C.chips($("#chips"), state.attrs.map((a, i) => ({ label: a, onRemove: () => { state.attrs.splice(i, 1); load(); } })));
  }

  function fillValues() {
    const key = $("#dim-key").value;
    const sel = $("#dim-value");
    const keep = sel.options[0];
    clear(sel).append(keep);
    for (const v of (lastDims[key] || [])) sel.append(h("option", { value: v }, v));
  }

  function chart(title, res, pick, fmt, markers, buckets) {
    const bucketNs = res.bucket_seconds * 1e9;
    const series = res.series.slice(0, 12).map((sr, i) => ({
      name: label(sr), color: PALETTE[i % PALETTE.length],
      points: sr.points.map((p) => [p.start_unix_nano + bucketNs / 2, pick(p)]),
    }));
    return C.lineChart({ title, series, xMin: res.since_unix_nano, xMax: res.until_unix_nano, yFormat: fmt, markers, buckets });
  }

  function renderCharts(res) {
    const box = clear($("#charts"));
    const fmt = unitFormat(res.unit);
    if (!res.series.length) { box.append(h("p", { class: "muted" }, "No points in this window.")); return; }
    const exemplarMarkers = res.exemplars.filter((e) => C.isTraceId(e.trace_id)).slice(-200).map((e) => ({
      x: e.time_unix_nano, y: e.value, href: C.traceHref(e.trace_id, e.span_id),
      title: `exemplar ${fmt(e.value)} — open trace ${e.trace_id}`,
    }));
    if (res.type === "sum" && res.is_monotonic) {
      box.append(chart(`${res.name}: rate per second`, res, (p) => p.rate_per_second ?? null, (v) => `${fmt(v)}/s`, []));
    } else if (res.type === "sum" || res.type === "gauge") {
      box.append(chart(`${res.name}: ${res.type === "gauge" ? "mean value" : "value"}`, res, (p) => p.value ?? null, fmt, []));
    } else if (res.type === "histogram" || res.type === "exponential_histogram") {
      const qSel = h("select", { id: "quantile", "aria-label": "percentile", onchange: (e) => { state.quantile = e.target.value; syncUrl(); renderCharts(res); } },
        ["p50", "p95", "p99", "avg"].map((q) => h("option", { value: q }, q)));
      qSel.value = state.quantile;
      box.append(h("div", { class: "listbar" }, h("label", null, "Latency line ", qSel),
        h("span", { class: "muted" }, `Dots are exemplars: click one to open its trace. One series: p50, p95 and p99 together.`)));
      if (res.series.length === 1) {
        const sr = res.series[0];
        const bucketNs = res.bucket_seconds * 1e9;
        const lines = ["p50", "p95", "p99"].map((q, i) => ({ name: q, color: PALETTE[i], points: sr.points.map((p) => [p.start_unix_nano + bucketNs / 2, p[q] ?? null]) }));
        box.append(C.lineChart({ title: `${res.name}: percentiles`, series: lines, xMin: res.since_unix_nano, xMax: res.until_unix_nano, yFormat: fmt, markers: exemplarMarkers }));
      } else {
        box.append(chart(`${res.name}: ${state.quantile}`, res, (p) => p[state.quantile] ?? null, fmt, exemplarMarkers));
      }
      box.append(chart(`${res.name}: observations per second`, res, (p) => p.rate_per_second ?? null, (v) => `${C.fmtRate(v)}`, []));
    } else if (res.type === "summary") {
      box.append(chart(`${res.name}: reported quantile ${state.quantile === "p50" ? "0.5" : "0.99"}`, res,
        (p) => (p.quantiles ? p.quantiles[state.quantile === "p50" ? "0.5" : "0.99"] ?? null : null), fmt, []));
    }
    box.append(h("p", { class: "muted small" },
      `${C.fmtNum(res.points_read)} points read${res.truncated ? " (capped: narrow the window or add filters)" : ""}, ` +
      `${res.series.length} series${res.series.length > 12 ? " (first 12 drawn; group by a dimension to combine them)" : ""}, ` +
      `buckets of ${C.fmtMs(res.bucket_seconds * 1000)}.`));
  }

  function renderExemplars(res) {
    const rowsEx = res.exemplars.filter((e) => C.isTraceId(e.trace_id));
    $("#exemplars").hidden = $("#exemplars-title").hidden = !rowsEx.length;
    const tbody = clear($("#exemplars tbody"));
    const fmt = unitFormat(res.unit);
    for (const e of rowsEx.slice(-100).reverse()) {
      tbody.append(h("tr", null,
        h("td", { class: "nowrap" }, C.fmtTime(e.time_unix_nano)),
        h("td", { class: "r" }, fmt(e.value)),
        h("td", null, Object.entries(e.series || {}).map(([k, v]) => `${k}=${C.fmtValue(v)}`).join(", ")),
        h("td", null, h("a", { href: C.traceHref(e.trace_id, e.span_id), class: "mono exemplar-trace" }, e.trace_id))));
    }
  }

  async function load() {
    syncUrl();
    if (!state.name) return;
    const info = metrics.find((m) => m.name === state.name);
    $("#metric-title").textContent = state.name;
    $("#metric-desc").textContent = info ? `${info.type}${info.unit ? ` in ${info.unit}` : ""}${info.temporality ? `, ${info.temporality.toLowerCase()}` : ""}` +
      `${info.description ? ` — ${info.description}` : ""} · from ${info.services.join(", ")}` : "";
    try {
      const res = await api("/api/metric-series", {
        name: state.name, service: state.service, attr: state.attrs, group_by: state.group_by ? [state.group_by] : [], window: state.window,
      });
      C.showError($("#error"), null);
      renderFilters(res);
      findVarying(res);
      renderCharts(res);
      renderExemplars(res);
    } catch (e) {
      C.showError($("#error"), e);
    }
  }

  $("#metric-filter").addEventListener("input", renderList);
  $("#dim-key").addEventListener("change", fillValues);
  $("#add-filter").addEventListener("click", () => {
    const k = $("#dim-key").value, v = $("#dim-value").value;
    if (k && v) { state.attrs.push(`${k}=${v}`); load(); }
  });
  form.elements.service.addEventListener("change", (e) => { state.service = e.target.value; load(); });
  $("#group-by").addEventListener("change", (e) => { state.group_by = e.target.value; load(); });
  form.elements.window.addEventListener("change", (e) => { state.window = e.target.value; load(); });
  form.addEventListener("submit", (e) => e.preventDefault());

  (async () => {
    try {
      metrics = (await api("/api/metrics")).metrics;
    } catch (e) { C.showError($("#error"), e); }
    renderList();
    if (!state.name && metrics.length) state.name = metrics[0].name;
    await load();
    setInterval(() => { if (!document.hidden && state.name) load(); }, 10000);
  })();
})();
