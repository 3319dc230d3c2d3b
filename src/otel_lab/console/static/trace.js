// Trace page: a virtualised, collapsible waterfall (only the rows in view exist in the DOM,
// so a 10,000-span trace stays interactive), span details fetched on demand, logs inline.
"use strict";
(() => {
  const { h, $, clear, api } = C;
  const ROW_H = 24;
  const OVERSCAN = 12;
  const traceId = C.pageData().trace_id;
  const wantSpan = C.params().get("span");

  const viewport = $("#viewport");
  const spacer = $("#spacer");
  const detail = $("#detail");
  let wf = null; // the API answer
  let F = {}; // field name -> index in a row
  let rows = []; // compact span rows in tree order
  let visible = []; // row indices currently shown (collapsed subtrees skipped)
  let collapsed = new Set();
  let selected = -1;
  let matches = [];
  let matchSet = new Set();
  let matchCursor = -1;
  const byId = new Map();
  let layer = null;
  let scheduled = false;

  $("#trace-logs-link").href = `/logs?trace_id=${traceId}`;
  $("#export-link").href = `/api/export?trace_id=${traceId}`;

  function hasChildren(i) { return rows[i][F.subtree_end] > i + 1; }

  function computeVisible() {
    visible = [];
    for (let i = 0; i < rows.length;) {
      visible.push(i);
      i = collapsed.has(i) ? rows[i][F.subtree_end] : i + 1;
    }
    spacer.style.height = `${visible.length * ROW_H}px`;
  }

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => { scheduled = false; render(); });
  }

  function rowEl(pos) {
    const i = visible[pos];
    const r = rows[i];
    const service = wf.services[r[F.service]];
    const total = Math.max(wf.duration_ns, 1);
    const left = (r[F.offset_ns] / total) * 100;
    const width = Math.max((r[F.duration_ns] / total) * 100, 0.15);
    const isErr = r[F.status] === 2;
    const flags = r[F.flags];
    const toggle = hasChildren(i)
      ? h("button", { type: "button", class: "toggle", "aria-label": collapsed.has(i) ? "expand" : "collapse",
        "aria-expanded": String(!collapsed.has(i)), dataset: { row: i } }, collapsed.has(i) ? "▸" : "▾")
      : h("span", { class: "toggle-space" });
    const el = h("div", {
      class: "wf-row" + (i === selected ? " selected" : "") + (isErr ? " err" : "") + (matchSet.has(i) ? " match" : ""),
      role: "treeitem", "aria-level": r[F.depth] + 1, "aria-selected": String(i === selected),
      dataset: { row: i, spanId: r[F.span_id] }, style: { top: `${pos * ROW_H}px` },
    },
    h("div", { class: "wf-name", style: { paddingLeft: `${4 + r[F.depth] * 14}px` } },
      toggle,
      h("span", { class: "svc-dot", style: { background: C.serviceColor(service) } }),
      h("span", { class: "svc-name" }, service),
      h("span", { class: "span-name" }, r[F.name]),
      flags & 2 ? h("span", { class: "badge err", title: "exception" }, "exception") : null,
      r[F.logs] ? h("span", { class: "badge", title: `${r[F.logs]} log records` }, `${r[F.logs]} log${r[F.logs] > 1 ? "s" : ""}`) : null,
      flags & 8 ? h("span", { class: "badge", title: "parent span not received" }, "orphan") : null,
      collapsed.has(i) ? h("span", { class: "badge" }, `+${r[F.subtree_end] - i - 1}`) : null),
    h("div", { class: "wf-track" },
      h("div", { class: "wf-bar" + (isErr ? " err" : ""), style: { left: `${left}%`, width: `${width}%`, background: C.serviceColor(service) } }),
      h("span", { class: "wf-dur", style: left + width < 88 ? { left: `calc(${left + width}% + 4px)` }
        : left > 40 ? { right: `calc(${100 - left}% + 4px)` } : { right: `calc(${100 - left - width}% + 4px)`, color: "#fff" } },
        C.fmtNs(r[F.duration_ns]))));
    return el;
  }

  function render() {
    if (!wf) return;
    const first = Math.max(0, Math.floor(viewport.scrollTop / ROW_H) - OVERSCAN);
    const last = Math.min(visible.length, Math.ceil((viewport.scrollTop + viewport.clientHeight) / ROW_H) + OVERSCAN);
    const next = h("div", { class: "wf-rows", role: "tree" });
    for (let pos = first; pos < last; pos++) next.append(rowEl(pos));
    if (layer) layer.replaceWith(next); else spacer.append(next);
    layer = next;
  }

  function ruler() {
    const el = clear($("#ruler"));
    for (let k = 0; k <= 4; k++) {
      el.append(h("span", { class: "tick", style: { left: `${k * 25}%` } }, C.fmtNs((wf.duration_ns * k) / 4)));
    }
  }

  function toggle(i) {
    if (collapsed.has(i)) collapsed.delete(i); else collapsed.add(i);
    computeVisible();
    render();
  }

  function reveal(i) {
    // Expand every ancestor, then scroll the row into view.
    for (let p = rows[i][F.parent]; p >= 0; p = rows[p][F.parent]) collapsed.delete(p);
    computeVisible();
    const pos = visible.indexOf(i);
    const top = pos * ROW_H;
    if (top < viewport.scrollTop || top > viewport.scrollTop + viewport.clientHeight - ROW_H) {
      viewport.scrollTop = Math.max(0, top - viewport.clientHeight / 3);
    }
    render();
  }

  // ------------------------------------------------------------------ details

  function kvTable(obj, cls) {
    const entries = Object.entries(obj || {});
    if (!entries.length) return h("p", { class: "muted" }, "none");
    return h("table", { class: "kv-table " + (cls || "") },
      h("tbody", null, entries.sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) =>
        h("tr", null, h("th", null, k), h("td", null, h("span", { class: "value" }, C.fmtValue(v)))))));
  }

  function exceptionBlock(ev) {
    const a = ev.attributes || {};
    return h("div", { class: "exception" },
      h("div", { class: "exc-head" }, h("strong", null, a["exception.type"] || "exception"), a["exception.message"] ? `: ${a["exception.message"]}` : ""),
      a["exception.stacktrace"] ? h("pre", { class: "stack" }, a["exception.stacktrace"]) : null);
  }

  function logLine(l, withSpanLink) {
    const attrs = l.attributes || {};
    return h("tr", { class: "log-line" },
      h("td", { class: "nowrap" }, C.fmtTime(l.time_unix_nano)),
      h("td", null, h("span", { class: `sev sev-${severityClass(l.severity_number)}` }, l.severity_text || "–")),
      h("td", { class: "nowrap" }, l.service_name),
      h("td", { class: "log-body" }, C.fmtValue(l.body),
        attrs["exception.stacktrace"] ? h("pre", { class: "stack" }, attrs["exception.stacktrace"]) : null),
      withSpanLink && C.isSpanId(l.span_id) ? h("td", null, h("button", { type: "button", class: "link", onclick: () => selectSpanId(l.span_id) }, "span")) : h("td"));
  }

  function severityClass(n) {
    if (n >= 17) return "error";
    if (n >= 13) return "warn";
    if (n >= 9) return "info";
    return "debug";
  }

  let detailToken = 0;
  async function select(i, fromUser) {
    selected = i;
    render();
    const r = rows[i];
    const spanId = r[F.span_id];
    const p = C.params();
    p.set("span", spanId);
    C.setParams(p);
    const token = ++detailToken;
    clear(detail).append(h("p", { class: "muted" }, "Loading span…"));
    let sp;
    try {
      sp = await api(`/api/traces/${traceId}/spans/${spanId}`);
    } catch (e) {
      if (token === detailToken) clear(detail).append(h("p", { class: "error" }, e.message));
      return;
    }
    if (token !== detailToken) return;
    const exceptions = sp.events.filter((e) => e.name === "exception");
    const others = sp.events.filter((e) => e.name !== "exception");
    const parentRow = r[F.parent] >= 0 ? rows[r[F.parent]] : null;
    C.fill(detail,
      h("h2", { class: "span-title" }, sp.name),
      h("div", { class: "summary" },
        h("span", { class: "svc" }, h("span", { class: "svc-dot", style: { background: C.serviceColor(sp.service_name) } }), sp.service_name),
        h("span", { class: "badge" }, sp.kind),
        h("span", { class: "badge" + (sp.status.code === "ERROR" ? " err" : "") }, sp.status.code + (sp.status.message ? `: ${sp.status.message}` : ""))),
      h("dl", { class: "kv" },
        h("dt", null, "Duration"), h("dd", null, C.fmtMs(sp.duration_ms)),
        h("dt", null, "Self time"), h("dd", null, C.fmtNs(r[F.self_ns])),
        h("dt", null, "Starts at"), h("dd", null, `+${C.fmtNs(r[F.offset_ns])} (${C.fmtTime(sp.start_time_unix_nano)})`),
        h("dt", null, "Span ID"), h("dd", { class: "mono" }, sp.span_id),
        h("dt", null, "Parent"), h("dd", { class: "mono" }, parentRow
          ? h("button", { type: "button", class: "link", onclick: () => selectSpanId(parentRow[F.span_id]) }, parentRow[F.name])
          : (sp.parent_span_id ? `${sp.parent_span_id} (not received)` : "none (root)")),
        h("dt", null, "Scope"), h("dd", null, `${sp.scope.name}${sp.scope.version ? " " + sp.scope.version : ""}`)),
      exceptions.length ? h("section", null, h("h3", null, "Exceptions"), exceptions.map(exceptionBlock)) : null,
      h("section", null, h("h3", null, "Attributes"), kvTable(sp.attributes, "span-attributes")),
      others.length ? h("section", null, h("h3", null, `Events (${others.length})`),
        h("ul", { class: "events" }, others.map((e) => h("li", null,
          h("span", { class: "muted" }, `+${C.fmtNs(e.time_unix_nano - wf.start_time_unix_nano)} `),
          h("strong", null, e.name), Object.keys(e.attributes || {}).length ? kvTable(e.attributes) : null)))) : null,
      sp.links.length ? h("section", null, h("h3", null, `Links (${sp.links.length})`),
        h("ul", { class: "links" }, sp.links.map((l) => h("li", null, C.traceLink(l.trace_id, l.span_id, `${l.trace_id} / ${l.span_id}`),
          Object.keys(l.attributes || {}).length ? kvTable(l.attributes) : null)))) : null,
      h("section", null, h("h3", null, `Logs of this span (${sp.logs.length})`),
        sp.logs.length ? h("table", { class: "grid logs span-logs" }, h("tbody", null, sp.logs.map((l) => logLine(l, false))))
          : h("p", { class: "muted" }, "none")),
      h("section", null, h("h3", null, "Resource"), kvTable(sp.resource, "resource")),
    );
    if (fromUser) detail.scrollTop = 0;
  }

  function selectSpanId(spanId) {
    const i = byId.get(spanId);
    if (i === undefined) return;
    reveal(i);
    select(i, true);
  }

  // ------------------------------------------------------------------ search

  function find(text) {
    text = text.trim().toLowerCase();
    matches = [];
    if (text) {
      for (let i = 0; i < rows.length; i++) {
        if (rows[i][F.name].toLowerCase().includes(text) || wf.services[rows[i][F.service]].toLowerCase().includes(text) || rows[i][F.span_id] === text) matches.push(i);
      }
    }
    matchSet = new Set(matches);
    matchCursor = -1;
    $("#search-count").textContent = text ? `${matches.length} match${matches.length === 1 ? "" : "es"}${matches.length ? " (Enter: next)" : ""}` : "";
    render();
  }

  $("#span-search").addEventListener("input", (e) => find(e.target.value));
  $("#span-search").addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || !matches.length) return;
    e.preventDefault();
    matchCursor = (matchCursor + 1) % matches.length;
    reveal(matches[matchCursor]);
    select(matches[matchCursor], true);
  });

  // ------------------------------------------------------------------ events

  viewport.addEventListener("scroll", schedule, { passive: true });
  window.addEventListener("resize", schedule);
  viewport.addEventListener("click", (e) => {
    const t = e.target.closest(".toggle");
    if (t) { toggle(Number(t.dataset.row)); return; }
    const row = e.target.closest(".wf-row");
    if (row) select(Number(row.dataset.row), true);
  });
  viewport.addEventListener("keydown", (e) => {
    if (!wf || selected < 0) return;
    const pos = visible.indexOf(selected);
    if (e.key === "ArrowDown" && pos < visible.length - 1) { e.preventDefault(); reveal(visible[pos + 1]); select(visible[pos + 1]); }
    else if (e.key === "ArrowUp" && pos > 0) { e.preventDefault(); reveal(visible[pos - 1]); select(visible[pos - 1]); }
    else if ((e.key === "ArrowLeft" && !collapsed.has(selected) && hasChildren(selected)) || (e.key === "ArrowRight" && collapsed.has(selected))) { e.preventDefault(); toggle(selected); }
  });
  $("#expand-all").addEventListener("click", () => { collapsed.clear(); computeVisible(); render(); });
  $("#collapse-all").addEventListener("click", () => {
    collapsed = new Set();
    for (let i = 0; i < rows.length; i++) if (hasChildren(i)) collapsed.add(i);
    computeVisible();
    viewport.scrollTop = 0;
    render();
  });

  // ------------------------------------------------------------------ load

  async function loadLogs() {
    const tbody = $("#trace-logs tbody");
    try {
      const { logs } = await api(`/api/traces/${traceId}/logs`, { limit: 1000 });
      $("#trace-logs-count").textContent = `(${logs.length}${logs.length === 1000 ? "+" : ""})`;
      clear(tbody);
      if (!logs.length) tbody.append(h("tr", null, h("td", { class: "muted" }, "No log records carry this trace id.")));
      for (const l of logs) tbody.append(logLine(l, true));
    } catch (e) {
      clear(tbody).append(h("tr", null, h("td", { class: "error" }, e.message)));
    }
    // The waterfall is usable first (body[data-ready]); the logs table says when it is filled.
    $("#trace-logs").dataset.loaded = "1";
  }

  async function load() {
    const started = performance.now();
    try {
      wf = await api(`/api/traces/${traceId}/waterfall`);
    } catch (e) {
      $("#trace-title").textContent = `Trace ${traceId}`;
      C.showError($("#error"), e.message.includes("not found")
        ? new Error(`Trace ${traceId} is not in the store (yet). Spans arrive a few seconds after a request; this page retries.`)
        : e);
      setTimeout(load, 2000);
      return;
    }
    C.showError($("#error"), null);
    F = Object.fromEntries(wf.fields.map((f, i) => [f, i]));
    rows = wf.spans;
    rows.forEach((r, i) => byId.set(r[F.span_id], i));
    const root = rows[0];
    $("#trace-title").textContent = `${wf.services[root[F.service]]}: ${root[F.name]}`;
    C.fill($("#trace-summary"), 
      h("span", { class: "mono" }, traceId), " · ",
      `${C.fmtTime(wf.start_time_unix_nano)} · ${C.fmtNs(wf.duration_ns)} · ${C.fmtNum(wf.span_count)} spans · `,
      h("span", { class: wf.error_count ? "badge err" : "badge" }, `${wf.error_count} errors`), " · ",
      `${wf.log_count} logs · `,
      wf.services.map((sv) => h("span", { class: "svc" }, h("span", { class: "svc-dot", style: { background: C.serviceColor(sv) } }), sv)));
    ruler();
    computeVisible();
    render();
    const target = wantSpan && byId.has(wantSpan) ? byId.get(wantSpan) : 0;
    reveal(target);
    select(target, false);
    // Exposed for the benchmark and tests: when the waterfall became usable.
    window.__traceReady = { ms: performance.now() - started, at: performance.now(), spans: rows.length };
    document.body.dataset.ready = "1";
    loadLogs();
  }

  load();
})();
