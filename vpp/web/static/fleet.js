// Fleet overview: every 2 s, read the same status JSON the API serves and update the unit rows in place.
(function () {
  const fmt = (v, d) => (v === null || v === undefined || Number.isNaN(v)) ? "–" : Number(v).toLocaleString(document.documentElement.lang, {minimumFractionDigits: d, maximumFractionDigits: d});
  const pct = (v) => (v === null || v === undefined) ? "–" : (100 * v).toFixed(0) + "%";
  async function refresh() {
    try {
      const r = await fetch("/ui/api/status", {credentials: "same-origin", cache: "no-store"});
      if (!r.ok) return;
      const s = await r.json();
      document.getElementById("f-health").textContent = s.health.status;
      document.getElementById("f-in").textContent = s.fleet.in_dispatch;
      document.getElementById("f-cmd").textContent = fmt(s.fleet.commanded_kw, 1);
      document.getElementById("f-meas").textContent = fmt(s.fleet.measured_kw, 1);
      document.getElementById("f-ticks").textContent = s.tick.count;
      document.getElementById("f-time").textContent = s.market_time.slice(11, 19);
      document.getElementById("alarm-count").textContent = s.alarms.length;
      const list = document.getElementById("alarms");
      list.replaceChildren(...s.alarms.map((a) => { const li = document.createElement("li"); li.className = "alarm"; li.textContent = `${a.kind} ${a.what}: ${a.detail}`; return li; }));
      for (const row of document.querySelectorAll("tr[data-unit]")) {
        const u = s.units[row.dataset.unit];
        if (!u) continue;
        const cell = (f) => row.querySelector(`[data-f="${f}"]`);
        cell("dispatch").textContent = u.in_dispatch ? window.VPP_LABELS.in : window.VPP_LABELS.out;
        cell("soc").textContent = pct(u.soc);
        cell("power").textContent = fmt(u.power_kw, 1);
        cell("commanded").textContent = fmt(u.commanded_kw, 1);
        cell("scheduled").textContent = fmt(u.scheduled_kw, 1);
        cell("reason").textContent = u.reason;
        const age = u.telemetry_age_s, stale = window.VPP_STALE_S;
        cell("light").className = "light " + (age === null || age > stale ? "red" : age > stale / 2 ? "yellow" : "green");
      }
      document.body.dataset.refreshed = String(s.tick.count);
    } catch (e) { /* the next refresh tries again */ }
  }
  setInterval(refresh, 2000);
})();
