// Read-only SQL over the store: examples, schema, results (BLOB ids shown as hex).
"use strict";
(() => {
  const { h, $, clear, api } = C;
  const area = $("#sql");
  const fromUrl = C.params().get("q");
  if (fromUrl) area.value = fromUrl;

  async function run() {
    const sql = area.value;
    const p = C.params(); p.set("q", sql); C.setParams(p);
    $("#status").textContent = "running…";
    C.showError($("#error"), null);
    try {
      const res = await api("/api/sql", null, {
        method: "POST", body: JSON.stringify({ sql }), headers: { "content-type": "application/json", accept: "application/json" },
      });
      const thead = clear($("#result thead"));
      const tbody = clear($("#result tbody"));
      thead.append(h("tr", null, res.columns.map((c) => h("th", null, c))));
      for (const row of res.rows) {
        tbody.append(h("tr", null, row.map((v) => {
          if (v === null) return h("td", { class: "muted" }, "NULL");
          if (typeof v === "string" && C.isTraceId(v)) return h("td", null, h("a", { href: C.traceHref(v), class: "mono" }, v));
          return h("td", { class: typeof v === "number" ? "r" : "" }, C.fmtValue(v));
        })));
      }
      $("#status").textContent = `${res.rows.length} row${res.rows.length === 1 ? "" : "s"}${res.truncated ? ` (capped at ${res.max_rows})` : ""} in ${res.elapsed_ms.toFixed(1)} ms`;
    } catch (e) {
      $("#status").textContent = "";
      C.showError($("#error"), e);
    }
  }

  $("#sql-form").addEventListener("submit", (e) => { e.preventDefault(); run(); });
  area.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); } });

  (async () => {
    try {
      const info = await api("/api/sql/schema");
      $("#limits").textContent = `read-only · stops after ${info.timeout_seconds}s · at most ${C.fmtNum(info.max_rows)} rows`;
      const ex = clear($("#examples"));
      for (const e of info.examples) {
        ex.append(h("li", null, h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); area.value = e.sql; run(); } }, e.title)));
      }
      const schema = clear($("#schema"));
      for (const t of info.tables) {
        schema.append(h("details", null, h("summary", null, t.table),
          h("ul", { class: "cols" }, t.columns.map((c) => h("li", null, c.name, h("span", { class: "muted" }, ` ${c.type}`))))));
      }
    } catch (e) { C.showError($("#error"), e); }
    if (fromUrl) run();
  })();
})();
