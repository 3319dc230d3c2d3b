// Service map: services and databases laid out left to right by call depth; every edge
// shows calls, rate and error rate, and opens the matching traces.
"use strict";
(() => {
  const { h, s, $, clear, api } = C;
  const url = C.params();
  const windowSel = $("#window");
  windowSel.value = url.get("window") || "1h";

  function layout(nodes, edges) {
    // Layer = longest path from a source (cycles are cut by a visit guard).
    const out = new Map(nodes.map((n) => [n.id, []]));
    const indeg = new Map(nodes.map((n) => [n.id, 0]));
    for (const e of edges) { out.get(e.source)?.push(e.target); indeg.set(e.target, (indeg.get(e.target) || 0) + 1); }
    const layer = new Map();
    const sources = nodes.filter((n) => !indeg.get(n.id)).map((n) => n.id);
    const queue = (sources.length ? sources : nodes.slice(0, 1).map((n) => n.id)).map((id) => [id, 0]);
    let guard = 0;
    while (queue.length && guard++ < 10000) {
      const [id, depth] = queue.shift();
      if ((layer.get(id) ?? -1) >= depth) continue;
      layer.set(id, depth);
      for (const t of out.get(id) || []) if (depth + 1 < nodes.length) queue.push([t, depth + 1]);
    }
    for (const n of nodes) if (!layer.has(n.id)) layer.set(n.id, 0);
    // Databases go one column right of their deepest caller.
    for (const n of nodes) {
      if (n.kind !== "database") continue;
      const callers = edges.filter((e) => e.target === n.id).map((e) => layer.get(e.source));
      if (callers.length) layer.set(n.id, Math.max(...callers) + 1);
    }
    const columns = [];
    for (const n of nodes) (columns[layer.get(n.id)] ||= []).push(n);
    const cols = columns.filter(Boolean);
    // Barycentre ordering (a few sweeps): put each node near the nodes it talks to, which
    // removes most edge crossings in call graphs.
    const neighbours = new Map(nodes.map((n) => [n.id, []]));
    for (const e of edges) { neighbours.get(e.source)?.push(e.target); neighbours.get(e.target)?.push(e.source); }
    const rank = new Map();
    cols.forEach((col) => col.forEach((n, i) => rank.set(n.id, i / Math.max(col.length, 1))));
    for (let sweep = 0; sweep < 4; sweep++) {
      for (const col of cols) {
        const score = (n) => {
          const ns = neighbours.get(n.id).filter((m) => rank.has(m));
          return ns.length ? ns.reduce((a, m) => a + rank.get(m), 0) / ns.length : rank.get(n.id);
        };
        const scores = new Map(col.map((n) => [n.id, score(n)]));
        col.sort((a, b) => scores.get(a.id) - scores.get(b.id));
        col.forEach((n, i) => rank.set(n.id, (i + 0.5) / col.length));
      }
    }
    return cols;
  }

  function draw(res) {
    const box = clear($("#map"));
    const { nodes, edges } = res;
    if (!nodes.length) { box.append(h("p", { class: "muted" }, "No spans in this window.")); return; }
    const columns = layout(nodes, edges);
    const NW = 170, NH = 54, GX = 110, GY = 34;
    const W = Math.max(columns.length * (NW + GX) + 40, 400);
    const H = Math.max(...columns.map((c) => c.length)) * (NH + GY) + 40;
    const pos = new Map();
    columns.forEach((col, ci) => col.forEach((n, ri) => {
      const offset = (H - col.length * (NH + GY)) / 2;
      pos.set(n.id, { x: 20 + ci * (NW + GX), y: offset + ri * (NH + GY) + GY / 2 });
    }));
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "map-svg", width: W, height: H, role: "img", "aria-label": "service map" },
      s("defs", null, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "9", markerHeight: "9", markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
        s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))));
    for (const e of edges) {
      const a = pos.get(e.source), b = pos.get(e.target);
      if (!a || !b) continue;
      const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2;
      const back = x2 <= x1;
      const d = back
        ? `M${a.x + NW / 2},${a.y + NH} C${a.x + NW / 2},${a.y + NH + 60} ${b.x + NW / 2},${b.y + NH + 60} ${b.x + NW / 2},${b.y + NH}`
        : `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}`;
      const cls = "edge" + (e.error_rate > 0 ? " err" : "") + (e.kind === "database" ? " db" : "") + (e.kind === "messaging" ? " msg" : "");
      const width = 1.2 + Math.min(4, Math.log10(1 + e.calls));
      const title = `${e.source} → ${e.target}: ${C.fmtNum(e.calls)} calls, ${C.fmtRate(e.rate_per_second)}, ${C.fmtPct(e.error_rate)} errors, avg ${C.fmtMs(e.avg_duration_ms)}`;
      svg.append(s("path", { d, class: cls, "stroke-width": width, "marker-end": "url(#arrow)", dataset: { source: e.source, target: e.target } }, s("title", null, title)));
      const mx = back ? (a.x + b.x) / 2 + NW / 2 : (x1 + x2) / 2, my = back ? Math.max(a.y, b.y) + NH + 48 : (y1 + y2) / 2 - 6;
      svg.append(s("text", { x: mx, y: my, class: "edge-label", "text-anchor": "middle" },
        `${C.fmtRate(e.rate_per_second)} · ${C.fmtPct(e.error_rate)} err`));
    }
    for (const n of nodes) {
      const p = pos.get(n.id);
      const href = n.kind === "service" ? `/?service=${encodeURIComponent(n.name)}` : `/?attr=${encodeURIComponent(`db.system=${n.name}`)}`;
      const g = s("a", { href, class: "node-link" },
        s("rect", { x: p.x, y: p.y, width: NW, height: NH, rx: n.kind === "database" ? 18 : 6, class: "node" + (n.kind === "database" ? " db" : "") + (n.error_rate > 0 ? " err" : "") }),
        s("rect", { x: p.x, y: p.y, width: 5, height: NH, fill: C.serviceColor(n.name) }),
        s("text", { x: p.x + 12, y: p.y + 21, class: "node-name" }, n.name.length > 22 ? n.name.slice(0, 21) + "…" : n.name),
        s("text", { x: p.x + 12, y: p.y + 40, class: "node-stats" },
          n.kind === "database" ? `database · ${C.fmtNum(n.spans)} calls` : `${C.fmtNum(n.spans)} spans · ${C.fmtPct(n.error_rate)} err`),
        s("title", null, n.name));
      svg.append(g);
    }
    box.append(svg);
  }

  function table(res) {
    const tbody = clear($("#edges tbody"));
    $("#empty").hidden = res.edges.length > 0;
    for (const e of res.edges) {
      const target = res.nodes.find((n) => n.id === e.target);
      const search = e.kind === "database"
        ? `/?service=${encodeURIComponent(e.source)}&attr=${encodeURIComponent(`db.system=${target ? target.name : ""}`)}`
        : `/?service=${encodeURIComponent(e.target)}`;
      tbody.append(h("tr", { class: "edge-row" + (e.error_rate > 0 ? " err" : ""), dataset: { source: e.source, target: e.target } },
        h("td", null, e.source), h("td", null, target ? target.name : e.target), h("td", null, e.kind),
        h("td", { class: "r" }, C.fmtNum(e.calls)), h("td", { class: "r" }, C.fmtRate(e.rate_per_second)),
        h("td", { class: "r" }, C.fmtPct(e.error_rate)), h("td", { class: "r" }, C.fmtMs(e.avg_duration_ms)),
        h("td", null, h("a", { href: search }, "traces"))));
    }
  }

  async function load() {
    const res = await api("/api/service-map", { window: windowSel.value });
    C.showError($("#error"), null);
    $("#note").textContent = `${C.fmtNum(res.traces_scanned)} traces${res.truncated ? " (the most recent; rates cover their time span)" : ""}`;
    draw(res);
    table(res);
  }

  const poll = C.live(async () => { try { await load(); } catch (e) { C.showError($("#error"), e); throw e; } }, 5000, $("#pause"), $("#updated"));
  windowSel.addEventListener("change", () => {
    const p = C.params(); p.set("window", windowSel.value); C.setParams(p);
    poll.refresh();
  });
})();
