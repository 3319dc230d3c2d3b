// Alerts: the Prometheus rules evaluated by the console (GET /api/alerts), with the series
// that fired and example traces of the service they name.
"use strict";
(() => {
  const { h, $, clear, api } = C;
  const ORDER = { firing: 0, pending: 1, inactive: 2 };

  function badge(state) {
    return h("span", { class: "badge alert-" + state + (state === "firing" ? " err" : "") }, state);
  }

  function detail(rule) {
    const rows = rule.alerts.map((a) => h("li", null,
      badge(a.state), " ", Object.entries(a.labels).filter(([k]) => k !== "severity").map(([k, v]) => `${k}=${v}`).join(", "),
      ` · value ${typeof a.value === "number" ? Math.round(a.value * 10000) / 10000 : a.value}`,
      ` · since ${C.fmtTime(a.active_since * 1e9, false)}`,
      a.annotations.description ? h("div", { class: "muted" }, a.annotations.description) : null,
      a.examples ? h("div", null, "Example traces: ",
        a.examples.slowest ? C.traceLink(a.examples.slowest, null, "slowest") : null,
        a.examples.slowest && a.examples.error ? ", " : null,
        a.examples.error ? C.traceLink(a.examples.error, null, "a failed one") : null) : null));
    const resolved = rule.recently_resolved.slice(0, 3).map((a) => h("li", { class: "muted" },
      `resolved ${C.fmtTime(a.resolved_at_ms * 1e6, false)}: `, Object.entries(a.labels).map(([k, v]) => `${k}=${v}`).join(", ")));
    return h("tr", { class: "alert-detail" }, h("td", { colspan: 6 },
      h("code", null, rule.expr), rule.error ? h("p", { class: "error" }, rule.error) : null,
      rows.length || resolved.length ? h("ul", null, rows, resolved) : null));
  }

  async function load() {
    const res = await api("/api/alerts");
    const rules = res.rules.slice().sort((a, b) => ORDER[a.state] - ORDER[b.state] || a.name.localeCompare(b.name));
    const count = (s) => rules.filter((r) => r.state === s).length;
    clear($("#summary")).append(
      ...["firing", "pending", "inactive"].map((s) => h("div", { class: "card" }, h("div", { class: "card-value" }, String(count(s))), h("div", { class: "card-label" }, s))),
      h("div", { class: "card" }, h("div", { class: "card-value" }, res.evaluated_at ? C.fmtTime(res.evaluated_at * 1e9, false) : "–"), h("div", { class: "card-label" }, "last evaluation")));
    const tbody = clear($("#rules tbody"));
    for (const rule of rules) {
      tbody.append(h("tr", { class: rule.state === "firing" ? "err" : "", dataset: { alert: rule.name } },
        h("td", null, rule.name), h("td", null, badge(rule.state)), h("td", null, rule.severity || ""),
        h("td", null, rule.active_since ? C.fmtTime(rule.active_since * 1e9, false) : "–"),
        h("td", { class: "muted" }, rule.group), h("td", null, (rule.alerts[0] && rule.alerts[0].annotations.summary) || (rule.summary || "").replace(/\{\{\s*\$labels\.(\w+)\s*\}\}/g, "‹$1›"))));
      if (rule.state !== "inactive" || rule.recently_resolved.length || rule.error) tbody.append(detail(rule));
    }
    C.showError($("#error"), null);
  }

  C.live(async () => { try { await load(); } catch (e) { C.showError($("#error"), e); throw e; } }, 5000, $("#pause"), $("#updated"));
})();
