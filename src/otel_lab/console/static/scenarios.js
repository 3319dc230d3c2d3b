// Scenarios: switch a fault on or off (POST /api/scenarios/{name}), then follow it on the
// dashboard panel it moves, the alert it fires, and the traces it marks (otel_lab.fault).
"use strict";
(() => {
  const { h, $, clear, api } = C;

  async function toggle(s) {
    await api(`/api/scenarios/${encodeURIComponent(s.name)}`, null, {
      method: "POST", body: JSON.stringify({ enabled: !s.enabled }),
      headers: { "content-type": "application/json", accept: "application/json" },
    });
    poll.refresh();
  }

  async function load() {
    const res = await api("/api/scenarios");
    $("#flags-file").textContent = res.flags_file;
    const tbody = clear($("#scenarios tbody"));
    for (const s of res.scenarios) {
      const traces = `/?attr=${encodeURIComponent(`otel_lab.fault=${s.name}`)}`;
      tbody.append(h("tr", { class: s.enabled ? "err" : "", dataset: { scenario: s.name } },
        h("td", null, s.name),
        h("td", null, h("span", { class: "badge" + (s.enabled ? " err" : "") }, s.enabled ? "on" : "off")),
        h("td", null, s.service), h("td", null, s.description),
        h("td", null, h("a", { href: `/dashboards?uid=${encodeURIComponent(s.dashboard)}&window=15m` }, s.panel), " · ",
          h("a", { href: "/alerts" }, s.alert), " · ", h("a", { href: traces }, "marked traces")),
        h("td", null, h("button", { type: "button", class: s.enabled ? "secondary" : "", onclick: () => toggle(s).catch((e) => C.showError($("#error"), e)) },
          s.enabled ? "Switch off" : "Switch on"))));
    }
    C.showError($("#error"), null);
  }

  const poll = C.live(async () => { try { await load(); } catch (e) { C.showError($("#error"), e); throw e; } }, 5000, $("#pause"), $("#updated"));
})();
