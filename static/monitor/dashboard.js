/* Dashboard: Chart.js charts and tables from /monitor/dashboard/data/, refreshed when run events
   arrive over the monitor socket (at most every 2 s) and every 15 s for lag and heartbeats. */
import { connect, indicator } from "./live.js";
import { escapeHtml as esc } from "./text.js";

const pct = (v) => (v == null ? "–" : `${(v * 100).toFixed(1)}%`);
const secs = (v) => (v == null ? "–" : v.toFixed(v < 10 ? 2 : 1));
let perMinute = null, durations = null;

function render(d) {
  document.getElementById("kpi-in-flight").textContent = d.in_flight;
  document.getElementById("kpi-total").textContent = d.totals.total;
  document.getElementById("kpi-success").textContent = pct(d.totals.success_rate);
  document.getElementById("kpi-failure").textContent = pct(d.totals.failure_rate);
  if (d.dead_letters != null) document.getElementById("kpi-dlq").innerHTML = `<a href="/monitor/dead-letters/">${esc(d.dead_letters)}</a>`;
  renderRunners(d);
  const pm = d.per_minute;
  const pmData = { labels: pm.labels, datasets: [
    { label: "succeeded", data: pm.succeeded, backgroundColor: "#15803d" },
    { label: "failed", data: pm.failed, backgroundColor: "#d92d20" },
    { label: "in flight / cancelled", data: pm.other, backgroundColor: "#93b4f5" }] };
  if (!perMinute) {
    perMinute = new Chart(document.getElementById("chart-per-minute"), { type: "bar", data: pmData,
      options: { animation: false, maintainAspectRatio: false, scales: { x: { stacked: true, ticks: { maxTicksLimit: 12 } }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
        plugins: { legend: { position: "bottom" } } } });
  } else { perMinute.data = pmData; perMinute.update(); }
  const dData = { labels: d.durations.map((r) => r.workflow), datasets: [
    { label: "p50", data: d.durations.map((r) => r.p50), backgroundColor: "#3056d3" },
    { label: "p95", data: d.durations.map((r) => r.p95), backgroundColor: "#b54708" }] };
  if (!durations) {
    durations = new Chart(document.getElementById("chart-durations"), { type: "bar", data: dData,
      options: { animation: false, maintainAspectRatio: false, indexAxis: "y", plugins: { legend: { position: "bottom" } },
        scales: { x: { beginAtZero: true, title: { display: true, text: "seconds" } } } } });
  } else { durations.data = dData; durations.update(); }
  document.getElementById("recent-failures").innerHTML = d.recent_failures.map((r) => `<tr>
    <td><a href="/monitor/runs/${encodeURIComponent(r.id)}/"><code>${esc(r.id.slice(0, 12))}</code></a></td><td>${esc(r.workflow)}</td>
    <td class="error small truncate">${esc(r.error)}</td><td class="small muted">${r.ended_at ? esc(new Date(r.ended_at).toLocaleTimeString()) : ""}</td></tr>`).join("")
    || '<tr><td colspan="4" class="muted">No failures in the window.</td></tr>';
  document.getElementById("lag-error").textContent = d.lag.error || "";
  document.getElementById("lag").innerHTML = d.lag.groups.map((g) => `<tr>
    <td><code>${esc(g.group)}</code></td><td><code>${esc(g.topic)}</code></td><td>${esc(g.partitions)}</td>
    <td>${esc(g.committed)}</td><td>${esc(g.end)}</td><td><strong class="${g.lag > 0 ? "error" : ""}">${esc(g.lag)}</strong></td></tr>`).join("")
    || '<tr><td colspan="6" class="muted">No consumer group has committed offsets yet.</td></tr>';
}
/* Runner liveness is judged here, not only when the data was generated: a runner that stops
   sending heartbeats turns red after a minute even if no refresh happens meanwhile. Times are
   compared on the server's clock (generated_at plus the time since), never the browser's. */
let runnerData = null, fetchedAt = 0;
function runnerState(r, serverNow) {
  const silent = serverNow - Date.parse(r.last_heartbeat) > runnerData.runner_silent_after_seconds * 1000;
  if (r.stopping) return silent ? ["stopped", "none", "stopped"] : ["stopping", "waiting", "stopping"];
  return silent ? ["silent", "failed", `no heartbeat for ${ago(serverNow - Date.parse(r.last_heartbeat))}`] : ["alive", "succeeded", "alive"];
}
function ago(ms) {
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
}
function renderRunners(d) {
  if (d) { runnerData = d; fetchedAt = Date.now(); }
  if (!runnerData) return;
  const serverNow = Date.parse(runnerData.generated_at) + (Date.now() - fetchedAt);
  const rows = runnerData.runners.map((r) => [r, runnerState(r, serverNow)]);
  const silent = rows.filter(([, [state]]) => state === "silent").length;
  const kpi = document.getElementById("kpi-runners");
  kpi.textContent = silent ? `${rows.length} (${silent} silent)` : rows.length;
  kpi.closest(".kpi").classList.toggle("bad", silent > 0);
  document.getElementById("runners").innerHTML = rows.map(([r, [state, pill, label]]) => `<tr class="runner-${state}" data-instance="${esc(r.instance)}">
    <td><code>${esc(r.instance)}</code><div class="small muted">${esc(r.host)} pid ${esc(r.pid)}</div></td>
    <td class="small">${esc((r.roles || []).join(", "))}</td>
    <td><span class="pill ${pill}">${esc(label)}</span><div class="small muted">${esc(new Date(r.last_heartbeat).toLocaleTimeString())}</div></td></tr>`).join("")
    || '<tr><td colspan="3" class="muted">No runner has sent a heartbeat yet.</td></tr>';
}
setInterval(() => renderRunners(), 5000);

let timer = null, last = 0;
function refresh() {
  if (timer) return;
  const wait = Math.max(0, 2000 - (Date.now() - last));
  timer = setTimeout(() => {
    timer = null; last = Date.now();
    fetch(window.SLUICE_DASHBOARD_URL, { credentials: "same-origin" }).then((r) => r.ok ? r.json() : null).then((d) => d && render(d));
  }, wait);
}
render(JSON.parse(document.getElementById("dashboard-data").textContent));
setInterval(refresh, 15000);
connect("/ws/monitor/", {
  onEvent: (ev) => { if (ev.kind.startsWith("run_")) refresh(); },
  onReconnect: refresh,
  onState: indicator(document.getElementById("live-indicator")),
});
