// Dashboards: the Grafana dashboards' panels, filled by the console (GET /api/dashboards/{uid}).
// Metric panels show the traces behind them (exemplars); trace, log and map panels come
// from the console's own data.
"use strict";
(() => {
  const { h, $, clear, api } = C;
  const url = C.params();
  const boardSel = $("#board");
  const windowSel = $("#window");
  const serviceInput = $("#service");
  windowSel.value = url.get("window") || "30m";
  serviceInput.value = url.get("service") || "";
  const PALETTE = ["#2f6fd6", "#d65f2f", "#2fa36b", "#9b4fd6", "#d6a62f", "#2fb8d6", "#d62f7a", "#6b7a2f"];

  function format(unit) {
    if (unit === "s") return (v) => C.fmtMs(v * 1000);
    if (unit === "ms") return (v) => C.fmtMs(v);
    if (unit === "percentunit") return (v) => `${(v * 100).toFixed(Math.abs(v) < 0.1 ? 2 : 1)}%`;
    if (unit === "reqps" || unit === "ops") return (v) => C.fmtRate(v);
    return (v) => (Math.abs(v) >= 1000 ? Math.round(v).toLocaleString("en-US") : String(Math.round(v * 1000) / 1000));
  }
  const show = (v, f) => (v === null || v === undefined ? "–" : typeof v === "string" ? v : f(v));

  function traceLinks(panel) {
    if (!panel.links || !panel.links.length) return null;
    return h("p", { class: "panel-links muted" }, "Traces behind this panel: ",
      ...panel.links.slice(0, 6).flatMap((l, i) => [i ? ", " : "",
        C.traceLink(l.trace_id, null, `${l.trace_id.slice(0, 8)} (${l.kind === "failed" ? `failed, ${l.series.job}` : l.kind ? `slowest, ${l.series.job}` : C.fmtMs(l.value * 1000)})`)]));
  }

  function timeseries(panel) {
    const f = format(panel.unit);
    const series = panel.series.map((s, i) => ({
      name: s.name, color: PALETTE[i % PALETTE.length],
      points: s.points.map(([t, v]) => [t * 1e9, typeof v === "number" ? v : null]),
    }));
    const markers = panel.unit === "s" ? (panel.links || []).filter((l) => !l.kind).map((l) => ({
      x: l.time * 1e9, y: l.value, href: C.traceHref(l.trace_id), title: `trace ${l.trace_id}: ${C.fmtMs(l.value * 1000)}`,
    })) : [];
    const end = board.end * 1e9;
    return C.lineChart({ series, markers, yFormat: f, xMin: end - board.range_seconds * 1e9, xMax: end, height: 190 });
  }

  function stat(panel) {
    const f = format(panel.unit);
    const values = panel.series.map((s) => h("div", { class: "card-value" }, show(s.value, f),
      panel.series.length > 1 ? h("span", { class: "muted" }, ` ${s.name}`) : null));
    return h("div", { class: "stat" }, values.length ? values : h("div", { class: "card-value" }, "–"));
  }

  function table(columns, rows, cell) {
    return h("table", { class: "grid" },
      h("thead", null, h("tr", null, columns.map((c) => h("th", null, c)))),
      h("tbody", null, rows.map((r) => h("tr", null, r.map((v, i) => h("td", null, cell(v, i)))))));
  }

  function body(panel) {
    if (panel.error) return h("p", { class: "error" }, panel.error);
    if (panel.traces) {
      return table(["Trace", "Root", "Services", "Duration", "Spans", "Errors"], panel.traces.map((t) => [
        t.trace_id, `${t.root_service_name || ""} ${t.root_span_name || ""}`, (t.services || []).join(", "), t.duration_ms, t.span_count, t.error_count,
      ]), (v, i) => (i === 0 ? C.traceLink(v, null, v.slice(0, 16)) : i === 3 ? C.fmtMs(v) : String(v ?? "")));
    }
    if (panel.logs) {
      return h("ul", { class: "dash-logs" }, panel.logs.slice(0, 20).map((l) => h("li", null,
        h("span", { class: "muted" }, C.fmtTime(l.time_unix_nano), " "), `${l.severity_text || ""} `,
        typeof l.body === "string" ? l.body : JSON.stringify(l.body),
        l.trace_id ? [" ", C.traceLink(l.trace_id, l.span_id, "trace")] : null)));
    }
    if (panel.graph) {
      return table(["From", "To", "Calls", "Errors"], (panel.graph.edges || []).map((e) => [e.source, e.target, e.calls, e.errors]),
        (v) => String(v ?? ""));
    }
    if (!panel.series) return h("p", { class: "muted" }, "No data.");
    if (panel.type === "stat") return stat(panel);
    if (panel.table) {
      const f = format(panel.unit);
      return table(panel.table.columns, panel.table.rows, (v) => (typeof v === "number" ? f(v) : String(v ?? "–")));
    }
    return timeseries(panel);
  }

  let board = null;
  function render() {
    const box = clear($("#panels"));
    $("#board-title").textContent = board.title;
    for (const panel of board.panels) {
      if (panel.type === "row") { box.append(h("h2", { class: "dash-row" }, panel.title)); continue; }
      const w = panel.gridPos ? Math.max(4, panel.gridPos.w) : 12;
      box.append(h("section", { class: "dash-panel" + (panel.empty ? " empty" : ""), style: { gridColumn: `span ${w}` }, dataset: { title: panel.title } },
        h("h3", { title: panel.description || "" }, panel.title),
        panel.empty && !panel.error ? h("p", { class: "muted note" }, panel.note || "No data in this time range.") : body(panel),
        traceLinks(panel)));
    }
  }

  async function load() {
    if (!boardSel.options.length) {
      const res = await api("/api/dashboards");
      for (const d of res.dashboards) boardSel.append(h("option", { value: d.uid }, d.title));
      boardSel.value = url.get("uid") || "otel-lab-overview";
      if (!boardSel.value && res.dashboards.length) boardSel.value = res.dashboards[0].uid;
    }
    const p = new URLSearchParams({ uid: boardSel.value });
    if (windowSel.value !== "30m") p.set("window", windowSel.value);
    if (serviceInput.value.trim()) p.set("service", serviceInput.value.trim());
    C.setParams(p);
    board = await api(`/api/dashboards/${encodeURIComponent(boardSel.value)}`,
      { window: windowSel.value, service: serviceInput.value.trim() || undefined });
    render();
    C.showError($("#error"), null);
  }

  const poll = C.live(async () => { try { await load(); } catch (e) { C.showError($("#error"), e); throw e; } }, 10000, $("#pause"), $("#updated"));
  boardSel.addEventListener("change", () => poll.refresh());
  windowSel.addEventListener("change", () => poll.refresh());
  serviceInput.addEventListener("change", () => poll.refresh());
})();
