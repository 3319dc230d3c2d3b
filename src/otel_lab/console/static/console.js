// Shared helpers for the console pages. Rule: telemetry values reach the DOM only through
// textContent and setAttribute (h() below), never innerHTML, so they always render as text.
"use strict";

const C = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.setAttribute("class", v);
      else if (k === "text") el.textContent = v;
      else if (k === "style") Object.assign(el.style, v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }

  /** An HTML element: h("a", {href: "/x", class: "y"}, "text", child, ...). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    return append(el, children);
  }

  /** An SVG element, same calling convention as h(). */
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    return append(el, children);
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  /** Replace an element's children (arrays flattened, null/false skipped). */
  function fill(el, ...children) {
    return append(clear(el), children);
  }

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  /** GET (or POST with body) a JSON API path; throws Error(detail) on a non-2xx answer. */
  async function api(path, params, init) {
    const url = new URL(path, location.origin);
    for (const [k, v] of Object.entries(params || {})) {
      if (v === undefined || v === null || v === "") continue;
      if (Array.isArray(v)) v.forEach((x) => url.searchParams.append(k, x));
      else url.searchParams.set(k, v);
    }
    const r = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" }, ...init });
    let body = {};
    try { body = await r.json(); } catch (e) { body = {}; }
    if (!r.ok) throw new Error(body.detail || `${r.status} ${r.statusText}`);
    return body;
  }

  function showError(el, err) {
    if (!el) return;
    if (!err) { el.hidden = true; el.textContent = ""; return; }
    el.hidden = false;
    el.textContent = err.message || String(err);
  }

  // ---------------------------------------------------------------- formatting

  function fmtMs(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
    if (ms < 1) return `${Math.round(ms * 1000)}µs`;
    if (ms < 10) return `${ms.toFixed(2)}ms`;
    if (ms < 1000) return `${ms.toFixed(1)}ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(2)}s`;
    const m = Math.floor(ms / 60000);
    return `${m}m ${Math.round((ms % 60000) / 1000)}s`;
  }
  const fmtNs = (ns) => fmtMs(ns / 1e6);

  function pad(n, w = 2) { return String(n).padStart(w, "0"); }

  function fmtTime(ns, withMs = true) {
    if (ns === null || ns === undefined) return "–";
    const d = new Date(Number(ns) / 1e6);
    const today = new Date();
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` +
      (withMs ? `.${pad(d.getMilliseconds(), 3)}` : "");
    if (d.toDateString() === today.toDateString()) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  function fmtRate(r) {
    if (r === null || r === undefined) return "–";
    if (r === 0) return "0/s";
    if (r < 0.1) return `${(r * 60).toFixed(r * 60 < 10 ? 1 : 0)}/min`;
    if (r < 10) return `${r.toFixed(2)}/s`;
    return `${r.toFixed(0)}/s`;
  }

  function fmtPct(x) {
    if (x === null || x === undefined) return "–";
    if (x === 0) return "0%";
    if (x < 0.001) return "<0.1%";
    return `${(x * 100).toFixed(x < 0.1 ? 1 : 0)}%`;
  }

  const fmtNum = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

  function fmtBytes(b) {
    if (b === null || b === undefined) return "–";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return `${b.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function fmtValue(v) {
    if (typeof v === "string") return v;
    return JSON.stringify(v);
  }

  function fmtSeconds(sec) {
    if (!sec) return "off";
    const units = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
    for (const [u, n] of units) if (sec % n === 0 && sec >= n) return `${sec / n}${u}`;
    return `${sec}s`;
  }

  function serviceColor(name) {
    // FNV-1a, then golden-ratio spread, so similar names (svc-1, svc-2) get distant hues.
    let hash = 2166136261;
    for (const ch of String(name)) hash = Math.imul(hash ^ ch.codePointAt(0), 16777619) >>> 0;
    const hue = Math.round(((hash * 0.618033988749895) % 1) * 360);
    return `hsl(${hue}, 55%, 50%)`;
  }

  const WINDOW_SECONDS = { "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800 };

  /** "since" (unix ns as a string) for a window name, or "" for none/"all". */
  function windowSince(w) {
    const seconds = WINDOW_SECONDS[w];
    if (!seconds) return "";
    return String(BigInt(Date.now() - seconds * 1000) * 1000000n);
  }

  const isTraceId = (x) => typeof x === "string" && /^[0-9a-f]{32}$/.test(x);
  const isSpanId = (x) => typeof x === "string" && /^[0-9a-f]{16}$/.test(x);

  /** A link to a trace (and span) page; ids from telemetry are validated, never trusted. */
  function traceHref(traceId, spanId) {
    if (!isTraceId(traceId)) return null;
    return `/trace/${traceId}` + (isSpanId(spanId) ? `?span=${spanId}` : "");
  }

  function traceLink(traceId, spanId, label) {
    const href = traceHref(traceId, spanId);
    if (!href) return document.createTextNode(label || String(traceId || ""));
    return h("a", { href, class: "mono", title: `trace ${traceId}` }, label || traceId.slice(0, 16) + "…");
  }

  // ---------------------------------------------------------------- URL state

  function params() { return new URLSearchParams(location.search); }

  function setParams(p) {
    const qs = p.toString();
    history.replaceState(null, "", location.pathname + (qs ? `?${qs}` : ""));
  }

  // ---------------------------------------------------------------- live updates

  /** Run fn now and every ms while the page is visible, with a pause toggle button. */
  function live(fn, ms, button, label) {
    let paused = false;
    let timer = null;
    let running = false;
    async function tick() {
      clearTimeout(timer);
      if (!paused && !document.hidden && !running) {
        running = true;
        try {
          await fn();
          if (label) label.textContent = `updated ${fmtTime(Date.now() * 1e6, false)}`;
        } catch (e) {
          if (label) label.textContent = `update failed: ${e.message}`;
        } finally { running = false; }
      }
      timer = setTimeout(tick, ms);
    }
    if (button) {
      button.addEventListener("click", () => {
        paused = !paused;
        button.textContent = paused ? "Resume live updates" : "Pause live updates";
        button.setAttribute("aria-pressed", String(paused));
        button.classList.toggle("paused", paused);
        if (label && paused) label.textContent = "paused";
        if (!paused) tick();
      });
    }
    document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
    tick();
    return { refresh: tick, get paused() { return paused; } };
  }

  // ---------------------------------------------------------------- pickers

  async function fillServices(select, selected) {
    try {
      const { services } = await api("/api/services");
      const keep = select.options[0];
      clear(select).append(keep);
      for (const svc of services) select.append(h("option", { value: svc.name }, svc.name));
      if (selected) {
        if (!services.some((s) => s.name === selected)) select.append(h("option", { value: selected }, selected));
        select.value = selected;
      }
    } catch (e) { /* the list stays as it is */ }
  }

  function fillDatalist(list, values) {
    clear(list);
    for (const v of values.slice(0, 200)) list.append(h("option", { value: v }));
  }

  /** Suggestions for attribute key/value inputs from keys and values seen in stored data. */
  function attrSuggestions(keyInput, valueInput, signal, getService) {
    const keyList = document.getElementById(keyInput.getAttribute("list"));
    const valueList = document.getElementById(valueInput.getAttribute("list"));
    let lastKeys = "";
    let lastValues = "";
    async function keys() {
      const service = getService ? getService() : "";
      const tag = `${signal}|${service}`;
      if (tag === lastKeys) return;
      lastKeys = tag;
      try {
        const r = await api("/api/attributes", { signal, service });
        fillDatalist(keyList, r.keys.map((k) => k.key));
      } catch (e) { lastKeys = ""; }
    }
    async function values() {
      const key = keyInput.value.trim();
      const service = getService ? getService() : "";
      const tag = `${signal}|${service}|${key}`;
      if (!key || tag === lastValues) return;
      lastValues = tag;
      try {
        const r = await api("/api/attributes", { signal, service, key });
        fillDatalist(valueList, r.values.map((v) => v.value));
      } catch (e) { lastValues = ""; }
    }
    keyInput.addEventListener("focus", keys);
    keyInput.addEventListener("change", values);
    valueInput.addEventListener("focus", values);
    return { reset() { lastKeys = ""; lastValues = ""; } };
  }

  /** Removable filter chips: items [{label, onRemove}]. */
  function chips(container, items) {
    clear(container);
    for (const item of items) {
      container.append(h("span", { class: "chip" }, item.label,
        h("button", { type: "button", class: "chip-x", title: "remove filter", "aria-label": `remove ${item.label}`, onclick: item.onRemove }, "×")));
    }
  }

  // ---------------------------------------------------------------- charts

  /**
   * A small SVG line chart.
   * opts: {width, height, xMin, xMax, series: [{name, color, points: [[x, y|null], ...]}],
   *        yFormat, xFormat, buckets: [{x0, x1, title, onClick}], markers: [{x, y, href, title}],
   *        title, yMin}
   */
  function lineChart(opts) {
    const W = opts.width || 720, H = opts.height || 170;
    const L = 56, R = 10, T = 18, B = 22;
    const iw = W - L - R, ih = H - T - B;
    const xs = [], ys = [];
    for (const sr of opts.series) for (const [x, y] of sr.points) { xs.push(x); if (y !== null && y !== undefined && !Number.isNaN(y)) ys.push(y); }
    for (const m of opts.markers || []) ys.push(m.y);
    const xMin = opts.xMin ?? Math.min(...xs), xMax = opts.xMax ?? Math.max(...xs);
    let yMax = ys.length ? Math.max(...ys) : 1;
    const yMin = opts.yMin ?? 0;
    if (yMax <= yMin) yMax = yMin + 1;
    yMax *= 1.08;
    const X = (x) => L + ((x - xMin) / Math.max(xMax - xMin, 1e-9)) * iw;
    const Y = (y) => T + ih - ((y - yMin) / (yMax - yMin)) * ih;
    const fy = opts.yFormat || ((v) => String(Math.round(v * 100) / 100));
    const fx = opts.xFormat || ((v) => fmtTime(v, false));
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": opts.title || "chart" });
    if (opts.title) svg.append(s("text", { x: L, y: 12, class: "chart-title" }, opts.title));
    for (let i = 0; i <= 4; i++) {
      const v = yMin + ((yMax - yMin) * i) / 4;
      const y = Y(v);
      svg.append(s("line", { x1: L, x2: W - R, y1: y, y2: y, class: "grid-line" }));
      svg.append(s("text", { x: L - 6, y: y + 4, class: "axis", "text-anchor": "end" }, fy(v)));
    }
    for (const frac of [0, 0.5, 1]) {
      const x = xMin + (xMax - xMin) * frac;
      svg.append(s("text", { x: X(x), y: H - 6, class: "axis", "text-anchor": frac === 0 ? "start" : frac === 1 ? "end" : "middle" }, fx(x)));
    }
    for (const sr of opts.series) {
      let d = "";
      let pen = false;
      for (const [x, y] of sr.points) {
        if (y === null || y === undefined || Number.isNaN(y)) { pen = false; continue; }
        d += `${pen ? "L" : "M"}${X(x).toFixed(1)},${Y(y).toFixed(1)}`;
        pen = true;
      }
      if (d) svg.append(s("path", { d, class: "series", stroke: sr.color || "#2f6fd6" }, s("title", null, sr.name || "")));
      for (const [x, y] of sr.points) {
        if (y === null || y === undefined || Number.isNaN(y)) continue;
        svg.append(s("circle", { cx: X(x), cy: Y(y), r: 2, fill: sr.color || "#2f6fd6", class: "dot" }));
      }
    }
    for (const b of opts.buckets || []) {
      const x0 = X(b.x0), x1 = X(b.x1);
      const rect = s("rect", { x: x0, y: T, width: Math.max(x1 - x0, 1), height: ih, class: "bucket", tabindex: "0" }, s("title", null, b.title || ""));
      if (b.onClick) {
        rect.addEventListener("click", () => b.onClick(rect));
        rect.addEventListener("keydown", (e) => { if (e.key === "Enter") b.onClick(rect); });
      }
      svg.append(rect);
    }
    for (const m of opts.markers || []) {
      const dot = s("circle", { cx: X(m.x), cy: Y(m.y), r: 3.5, class: "exemplar" }, s("title", null, m.title || ""));
      svg.append(m.href ? s("a", { href: m.href, class: "exemplar-link" }, dot) : dot);
    }
    if (opts.legend === false || opts.series.length < 2) return svg;
    const legend = h("div", { class: "legend-box" }, opts.series.map((sr) =>
      h("span", { class: "legend-item" }, h("span", { class: "swatch", style: { background: sr.color } }), sr.name)));
    return h("figure", { class: "chart-box" }, svg, legend);
  }

  /** A tiny sparkline (no axes). */
  function sparkline(values, color) {
    const W = 140, H = 26;
    const max = Math.max(...values.filter((v) => v !== null), 1e-9);
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "spark" });
    let d = "";
    values.forEach((v, i) => {
      const x = (i / Math.max(values.length - 1, 1)) * (W - 2) + 1;
      const y = H - 2 - ((v || 0) / max) * (H - 4);
      d += `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    });
    svg.append(s("path", { d, stroke: color || "#2f6fd6", class: "series" }));
    return svg;
  }

  // ---------------------------------------------------------------- eviction banner

  async function banner() {
    const el = document.getElementById("banner");
    if (!el) return;
    try {
      const st = await api("/api/stats");
      const parts = [];
      const ev = st.evicted || {};
      if (ev.spans || ev.logs || ev.metric_points) {
        const why = ev.last_reason === "size"
          ? `to stay under the size cap of ${fmtBytes(st.max_db_bytes)}`
          : `by the retention of ${fmtSeconds(st.retention_seconds)}`;
        parts.push(`Evicted ${fmtNum(ev.spans)} spans (${fmtNum(ev.traces)} traces), ${fmtNum(ev.logs)} logs and ` +
          `${fmtNum(ev.metric_points)} metric points older than ${fmtTime(ev.last_cutoff_unix_nano, false)}, ${why}.`);
        if (st.oldest_unix_nano) parts.push(`Stored data now starts at ${fmtTime(st.oldest_unix_nano, false)}.`);
      }
      if (ev.cleared_at) parts.push(`All data was cleared at ${fmtTime(ev.cleared_at * 1e9, false)}.`);
      if (st.rows_refused) parts.push(`${fmtNum(st.rows_refused)} rows were refused (HTTP 503) while the write queue was full; exporters retry them.`);
      if (st.write_errors) parts.push(`${fmtNum(st.write_errors)} batches failed to write (see the console's log).`);
      if (!parts.length) { el.hidden = true; return; }
      clear(el).append(h("span", { id: "banner-text" }, parts.join(" ")), " ", h("a", { href: "/store" }, "Store details"));
      el.hidden = false;
    } catch (e) { /* no banner when stats are unavailable */ }
  }

  document.addEventListener("DOMContentLoaded", () => {
    banner();
    setInterval(banner, 15000);
  });

  function pageData() {
    const el = document.getElementById("page-data");
    try { return JSON.parse(el ? el.textContent : "{}"); } catch (e) { return {}; }
  }

  return {
    h, s, $, $$, clear, fill, append, api, showError, fmtMs, fmtNs, fmtTime, fmtRate, fmtPct, fmtNum, fmtBytes,
    fmtValue, fmtSeconds, serviceColor, windowSince, WINDOW_SECONDS, isTraceId, isSpanId, traceHref,
    traceLink, params, setParams, live, fillServices, fillDatalist, attrSuggestions, chips, lineChart,
    sparkline, banner, pageData,
  };
})();
