// Logs search: service, severity, text, attributes, trace id; each line links to its trace
// and span; live tail with a pause.
"use strict";
(() => {
  const { h, $, clear, api } = C;
  const form = $("#filters");
  const tbody = $("#logs tbody");
  const FIELDS = ["service", "severity", "q", "window", "trace_id"];
  const url = C.params();
  const state = { attrs: url.getAll("attr"), span_id: url.get("span_id") || "", since: url.get("since") || "", until: url.get("until") || "" };
  for (const f of FIELDS) form.elements[f].value = url.get(f) || "";
  C.fillServices(form.elements.service, url.get("service"));
  const suggest = C.attrSuggestions(form.elements.attr_key, form.elements.attr_value, "logs", () => form.elements.service.value);

  function severityClass(n) {
    if (n >= 17) return "error";
    if (n >= 13) return "warn";
    if (n >= 9) return "info";
    return "debug";
  }

  function query() {
    const q = { limit: 200, attr: state.attrs, span_id: state.span_id, until: state.until };
    for (const f of FIELDS) if (f !== "window") q[f] = form.elements[f].value.trim();
    q.since = state.since || C.windowSince(form.elements.window.value);
    return q;
  }

  function syncUrl() {
    const p = new URLSearchParams();
    for (const f of FIELDS) { const v = form.elements[f].value.trim(); if (v) p.set(f, v); }
    for (const a of state.attrs) p.append("attr", a);
    for (const k of ["span_id", "since", "until"]) if (state[k]) p.set(k, state[k]);
    C.setParams(p);
    const tid = form.elements.trace_id.value.trim();
    const back = $("#back-to-trace");
    back.hidden = !C.isTraceId(tid);
    if (!back.hidden) back.href = C.traceHref(tid, state.span_id);
  }

  function renderChips() {
    const items = state.attrs.map((a, i) => ({ label: `attribute ${a}`, onRemove: () => { state.attrs.splice(i, 1); search(); } }));
    if (state.span_id) items.push({ label: `span ${state.span_id}`, onRemove: () => { state.span_id = ""; search(); } });
    if (state.since || state.until) items.push({ label: "time range", onRemove: () => { state.since = ""; state.until = ""; search(); } });
    C.chips($("#chips"), items);
  }

  function line(l) {
    const attrs = l.attributes || {};
    const extra = Object.keys(attrs).filter((k) => k !== "exception.stacktrace");
    const details = extra.length ? h("details", { class: "log-attrs" }, h("summary", null, `${extra.length} attributes`),
      h("table", { class: "kv-table" }, h("tbody", null, extra.sort().map((k) => h("tr", null, h("th", null, k), h("td", null, C.fmtValue(attrs[k]))))))) : null;
    return h("tr", { class: `log-line sev-row-${severityClass(l.severity_number)}` },
      h("td", { class: "nowrap" }, C.fmtTime(l.time_unix_nano)),
      h("td", null, h("span", { class: `sev sev-${severityClass(l.severity_number)}` }, l.severity_text || "–")),
      h("td", { class: "nowrap" }, h("span", { class: "svc-dot", style: { background: C.serviceColor(l.service_name) } }), l.service_name),
      h("td", { class: "log-body" }, h("span", { class: "body-text" }, C.fmtValue(l.body)), details,
        attrs["exception.stacktrace"] ? h("pre", { class: "stack" }, attrs["exception.stacktrace"]) : null),
      h("td", { class: "nowrap" }, C.isTraceId(l.trace_id)
        ? h("a", { href: C.traceHref(l.trace_id, l.span_id), class: "trace-link", title: `trace ${l.trace_id} span ${l.span_id || "-"}` }, "trace ↗")
        : h("span", { class: "muted" }, "no trace")));
  }

  let last = "";
  async function load() {
    const { logs } = await api("/api/logs", query());
    C.showError($("#error"), null);
    const sig = logs.map((l) => `${l.time_unix_nano}${l.span_id}`).join();
    $("#count").textContent = `${logs.length} record${logs.length === 1 ? "" : "s"}${logs.length === 200 ? " (the newest 200)" : ""}`;
    $("#empty").hidden = logs.length > 0;
    if (sig === last) return;
    last = sig;
    clear(tbody);
    for (const l of logs) tbody.append(line(l));
  }

  async function search() {
    const key = form.elements.attr_key.value.trim();
    if (key) {
      state.attrs.push(`${key}=${form.elements.attr_value.value}`);
      form.elements.attr_key.value = "";
      form.elements.attr_value.value = "";
    }
    syncUrl();
    renderChips();
    last = "";
    try { await load(); } catch (e) { C.showError($("#error"), e); }
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); search(); });
  for (const name of ["service", "severity", "window"]) form.elements[name].addEventListener("change", search);
  $("#reset").addEventListener("click", () => {
    form.reset();
    state.attrs = []; state.span_id = ""; state.since = ""; state.until = "";
    suggest.reset();
    search();
  });
  syncUrl();
  renderChips();
  C.live(async () => { try { await load(); } catch (e) { C.showError($("#error"), e); throw e; } }, 3000, $("#pause"), $("#updated"));
})();
