// Store page: what is stored, disk use, retention and evictions; export, import, clear.
"use strict";
(() => {
  const { h, $, clear, api } = C;

  async function load() {
    try {
      const st = await api("/api/stats");
      C.showError($("#error"), null);
      const cards = clear($("#cards"));
      const card = (label, value, note) => h("div", { class: "card" }, h("div", { class: "card-value" }, value), h("div", { class: "card-label" }, label), note ? h("div", { class: "muted small" }, note) : null);
      cards.append(
        card("spans stored", C.fmtNum(st.stored.spans)),
        card("log records stored", C.fmtNum(st.stored.logs)),
        card("metric points stored", C.fmtNum(st.stored.metric_points)),
        card("database file", C.fmtBytes(st.disk.db_bytes), `${C.fmtBytes(st.disk.used_bytes)} in use, WAL ${C.fmtBytes(st.disk.wal_bytes)}`),
        card("written since start", C.fmtNum(st.written.spans + st.written.logs + st.written.metric_points), `${C.fmtNum(st.rows_refused)} refused (queue full)`),
      );
      const ev = st.evicted;
      const dl = clear($("#retention"));
      const item = (k, v) => [h("dt", null, k), h("dd", { id: `ret-${k.toLowerCase().replace(/[^a-z]+/g, "-")}` }, v)];
      dl.append(
        ...item("Retention", st.retention_seconds ? `${C.fmtSeconds(st.retention_seconds)} (older data is evicted)` : "off (kept until the size cap)"),
        ...item("Size cap", st.max_db_bytes ? `${C.fmtBytes(st.max_db_bytes)} (the oldest data is evicted beyond it)` : "off"),
        ...item("Oldest data", st.oldest_unix_nano ? C.fmtTime(st.oldest_unix_nano) : "–"),
        ...item("Evicted", `${C.fmtNum(ev.spans)} spans (${C.fmtNum(ev.traces)} traces), ${C.fmtNum(ev.logs)} logs, ${C.fmtNum(ev.metric_points)} metric points`),
        ...item("Last eviction", ev.last_at ? `${C.fmtTime(ev.last_at * 1e9, false)}: older than ${C.fmtTime(ev.last_cutoff_unix_nano, false)} (${ev.last_reason})` : "never"),
        ...item("Cleared", ev.cleared_at ? C.fmtTime(ev.cleared_at * 1e9, false) : "never"),
        ...item("Database", st.db_path),
        ...item("OTLP endpoint", st.otlp_url || "–"),
      );
      $("#clear-what").textContent = `${C.fmtNum(st.stored.spans)} spans, ${C.fmtNum(st.stored.logs)} logs and ${C.fmtNum(st.stored.metric_points)} metric points will be deleted.`;
    } catch (e) { C.showError($("#error"), e); }
  }

  $("#import-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const file = $("#import-file").files[0];
    const out = $("#import-result");
    if (!file) { out.textContent = "choose a file first"; return; }
    out.textContent = "importing…";
    try {
      const res = await api("/api/import", null, { method: "POST", body: file, headers: { "content-type": "application/json", accept: "application/json" } });
      const n = res.imported;
      out.textContent = `imported ${C.fmtNum(n.spans)} spans, ${C.fmtNum(n.logs)} logs, ${C.fmtNum(n.metric_points)} metric points` +
        (n.rejected ? `; ${n.rejected} rejected (${res.problems.join("; ")})` : "") + (res.warning ? `. ${res.warning}` : "");
      load();
      C.banner();
    } catch (err) { out.textContent = `import failed: ${err.message}`; }
  });

  $("#clear").addEventListener("click", () => { $("#clear-confirm").hidden = false; $("#clear").hidden = true; });
  $("#clear-no").addEventListener("click", () => { $("#clear-confirm").hidden = true; $("#clear").hidden = false; });
  $("#clear-yes").addEventListener("click", async () => {
    $("#clear-result").textContent = "clearing…";
    try {
      const res = await api("/api/clear", { confirm: "yes" }, { method: "POST" });
      $("#clear-result").textContent = `Deleted ${C.fmtNum(res.cleared.spans)} spans, ${C.fmtNum(res.cleared.logs)} logs and ${C.fmtNum(res.cleared.metric_points)} metric points.`;
    } catch (e) { $("#clear-result").textContent = `clear failed: ${e.message}`; }
    $("#clear-confirm").hidden = true;
    $("#clear").hidden = false;
    load();
    C.banner();
  });

  load();
  setInterval(() => { if (!document.hidden) load(); }, 5000);
})();
