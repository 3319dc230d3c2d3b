// Trace list: filters in the URL (so every view is a link), live updates with a pause.
"use strict";
(() => {
  const { h, $, clear, api } = C;
  const form = $("#filters");
  const tbody = $("#traces tbody");
  const FIELDS = ["service", "name", "status", "min_duration_ms", "max_duration_ms", "window"];

  // State from the URL: the simple fields, repeated attr=k=v, explicit since/until, order.
  const url = C.params();
  const state = {
    order: url.get("order") || "start",
    attrs: url.getAll("attr"),
    since: url.get("since") || "",
    until: url.get("until") || "",
  };
  for (const f of FIELDS) form.elements[f].value = url.get(f) || "";
  C.fillServices(form.elements.service, url.get("service"));

  async function fillNames() {
    const service = form.elements.service.value;
    const list = $("#dl-names");
    if (!service) { clear(list); return; }
    try {
      const { operations } = await api(`/api/services/${encodeURIComponent(service)}/operations`);
      C.fillDatalist(list, [...new Set(operations.map((o) => o.name))]);
    } catch (e) { clear(list); }
  }
  form.elements.service.addEventListener("change", () => { fillNames(); search(); });
  fillNames();
  const suggest = C.attrSuggestions(form.elements.attr_key, form.elements.attr_value, "spans", () => form.elements.service.value);

  function query() {
    const q = { order: state.order, limit: 100, attr: state.attrs };
    for (const f of FIELDS) if (f !== "window") q[f] = form.elements[f].value.trim();
    q.since = state.since || C.windowSince(form.elements.window.value);
    q.until = state.until;
    return q;
  }

  function syncUrl() {
    const p = new URLSearchParams();
    for (const f of FIELDS) { const v = form.elements[f].value.trim(); if (v) p.set(f, v); }
    for (const a of state.attrs) p.append("attr", a);
    if (state.since) p.set("since", state.since);
    if (state.until) p.set("until", state.until);
    if (state.order !== "start") p.set("order", state.order);
    C.setParams(p);
  }

  function renderChips() {
    const items = state.attrs.map((a, i) => ({
      label: `attribute ${a}`,
      onRemove: () => { state.attrs.splice(i, 1); search(); },
    }));
    if (state.since || state.until) {
      items.push({
        label: `time ${state.since ? C.fmtTime(state.since, false) : "…"} – ${state.until ? C.fmtTime(state.until, false) : "now"}`,
        onRemove: () => { state.since = ""; state.until = ""; search(); },
      });
    }
    C.chips($("#chips"), items);
  }

  function renderSort() {
    for (const b of C.$$("button.sort")) {
      const active = b.dataset.sort === state.order;
      b.classList.toggle("active", active);
      b.setAttribute("aria-sort", active ? "descending" : "none");
      b.textContent = (b.dataset.sort === "start" ? "Start" : "Duration") + (active ? " ▼" : "");
    }
  }

  function row(t, maxMs) {
    const href = C.traceHref(t.trace_id);
    const width = Math.max(2, Math.round((t.duration_ms / Math.max(maxMs, 1e-9)) * 100));
    return h("tr", { class: t.error_count ? "err" : "", dataset: { traceId: t.trace_id } },
      h("td", { class: "nowrap" }, C.fmtTime(t.start_time_unix_nano)),
      h("td", null,
        h("span", { class: "svc-dot", style: { background: C.serviceColor(t.root_service_name) } }),
        h("span", { class: "muted" }, t.root_service_name, " "),
        h("a", { href, class: "root-name" }, t.root_span_name || "(no name)"),
        t.has_root ? null : h("span", { class: "badge", title: "the root span has not arrived (yet)" }, "no root")),
      h("td", { class: "dur" }, h("span", { class: "dur-bar", style: { width: `${width}%` } }), h("span", { class: "dur-text" }, C.fmtMs(t.duration_ms))),
      h("td", { class: "r" }, C.fmtNum(t.span_count)),
      h("td", { class: "r" }, t.error_count ? h("span", { class: "badge err" }, C.fmtNum(t.error_count)) : "0"),
      h("td", null, t.services.map((sv) => h("span", { class: "svc" }, h("span", { class: "svc-dot", style: { background: C.serviceColor(sv) } }), sv))),
      h("td", null, h("a", { href, class: "mono" }, t.trace_id)));
  }

  function scatter(traces) {
    const box = $("#scatter");
    clear(box);
    if (traces.length < 2) return;
    const pts = traces.map((t) => ({ x: t.start_time_unix_nano, y: t.duration_ms, t }));
    const xMin = Math.min(...pts.map((p) => p.x)), xMax = Math.max(...pts.map((p) => p.x));
    const svg = C.lineChart({
      height: 120, xMin, xMax: xMax > xMin ? xMax : xMin + 1e9, series: [], legend: false,
      yFormat: C.fmtMs, title: "Duration of the listed traces (click a dot to open it)",
      markers: pts.map((p) => ({ x: p.x, y: p.y, href: C.traceHref(p.t.trace_id),
        title: `${p.t.root_service_name}: ${p.t.root_span_name} — ${C.fmtMs(p.y)}` })),
    });
    for (const [i, p] of pts.entries()) {
      if (p.t.error_count) svg.querySelectorAll("circle.exemplar")[i]?.classList.add("err");
    }
    box.append(svg);
  }

  let lastIds = "";
  async function load() {
    const { traces } = await api("/api/traces", query());
    C.showError($("#error"), null);
    const ids = traces.map((t) => t.trace_id).join();
    $("#count").textContent = `${traces.length} trace${traces.length === 1 ? "" : "s"}${traces.length === 100 ? " (the first 100)" : ""}`;
    $("#empty").hidden = traces.length > 0;
    if (ids === lastIds) return;
    const fresh = new Set(traces.map((t) => t.trace_id));
    const old = new Set(lastIds ? lastIds.split(",") : []);
    lastIds = ids;
    const maxMs = Math.max(...traces.map((t) => t.duration_ms), 0);
    clear(tbody);
    for (const t of traces) {
      const tr = row(t, maxMs);
      if (old.size && !old.has(t.trace_id) && fresh.has(t.trace_id)) tr.classList.add("new");
      tbody.append(tr);
    }
    scatter(traces);
  }

  async function search() {
    const key = form.elements.attr_key.value.trim();
    const value = form.elements.attr_value.value;
    if (key) {
      state.attrs.push(`${key}=${value}`);
      form.elements.attr_key.value = "";
      form.elements.attr_value.value = "";
    }
    if (form.elements.window.value) { state.since = ""; state.until = ""; }
    syncUrl();
    renderChips();
    renderSort();
    lastIds = "";
    try { await load(); } catch (e) { C.showError($("#error"), e); }
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); search(); });
  for (const name of ["status", "window"]) form.elements[name].addEventListener("change", search);
  $("#reset").addEventListener("click", () => {
    form.reset();
    state.attrs = []; state.since = ""; state.until = ""; state.order = "start";
    suggest.reset();
    search();
  });
  for (const b of C.$$("button.sort")) b.addEventListener("click", () => { state.order = b.dataset.sort; search(); });

  renderChips();
  renderSort();
  C.live(async () => { try { await load(); } catch (e) { C.showError($("#error"), e); throw e; } }, 3000, $("#pause"), $("#updated"));
})();
