/* Run detail: the workflow graph (X6, read-only) coloured by step status, a Gantt timeline of
   attempts (Chart.js), step details, and the raw history log, all kept live over the run socket. */
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("run-data").textContent);
  const run = data.run;
  const definition = data.definition || { steps: [], edges: [] };
  const steps = {}; // step_id -> {step_id, type, status, attempts, input, output, error, port, started_at, ended_at}
  (definition.steps || []).forEach((s) => { steps[s.id] = { step_id: s.id, type: s.type, status: "pending", attempts: [] }; });
  data.steps.forEach((s) => { steps[s.step_id] = Object.assign(steps[s.step_id] || {}, s); });
  let lastSeq = 0;
  let selected = null;

  const COLORS = {
    pending: ["#f8f9fb", "#98a2b3"], running: ["#e8efff", "#2563eb"], waiting: ["#f3edff", "#6d28d9"],
    retrying: ["#fef4e6", "#b54708"], succeeded: ["#e8f6ee", "#15803d"], failed: ["#fdeceb", "#d92d20"],
    skipped: ["#f2f4f7", "#c0c6d0"], cancelled: ["#f4ebea", "#9a3412"],
  };
  const STEP_KINDS = { step_started: "running", step_succeeded: "succeeded", step_failed: "failed",
    step_retrying: "retrying", step_waiting: "waiting", step_skipped: "skipped", step_cancelled: "cancelled" };
  const RUN_KINDS = { run_started: "running", run_succeeded: "succeeded", run_failed: "failed",
    run_cancelled: "cancelled", run_retried: "running" };
  const esc = (v) => String(v == null ? "" : v).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const json = (v) => JSON.stringify(v, null, 2);
  const iso = (epoch) => (epoch == null ? null : new Date(epoch * 1000).toISOString());

  // ---- graph ------------------------------------------------------------------------------
  const NODE_W = 180, NODE_H = 52;
  let graph = null;
  function buildGraph() {
    const container = document.getElementById("run-graph");
    if (!window.X6) { container.textContent = "The graph library did not load."; return; }
    // Fixed size, resized by hand: X6's autoResize in a flex card grows the card without end.
    graph = new X6.Graph({
      container, width: container.clientWidth, height: container.clientHeight, background: { color: "#f8f9fb" },
      grid: { visible: true, size: 8, type: "dot", args: { color: "#e1e4ea", thickness: 1 } },
      panning: { enabled: true }, mousewheel: { enabled: true, modifiers: ["ctrl", "meta"], minScale: 0.3, maxScale: 1.5 },
      interacting: () => ({ nodeMovable: false, edgeMovable: false, edgeLabelMovable: false, magnetConnectable: false }),
    });
    const ids = Object.keys(steps);
    const layout = definition.layout || {};
    const positioned = ids.length && ids.every((id) => layout[id]);
    let pos = {};
    if (positioned) {
      ids.forEach((id) => { pos[id] = { x: layout[id].x, y: layout[id].y }; });
    } else if (window.dagre) {
      const g = new dagre.graphlib.Graph();
      g.setGraph({ rankdir: "LR", nodesep: 24, ranksep: 64, marginx: 24, marginy: 24 });
      g.setDefaultEdgeLabel(() => ({}));
      ids.forEach((id) => g.setNode(id, { width: NODE_W, height: NODE_H }));
      (definition.edges || []).forEach((e) => { if (steps[e.from] && steps[e.to]) g.setEdge(e.from, e.to); });
      dagre.layout(g);
      ids.forEach((id) => { const p = g.node(id); pos[id] = { x: p.x - NODE_W / 2, y: p.y - NODE_H / 2 }; });
    } else {
      ids.forEach((id, i) => { pos[id] = { x: 24 + i * (NODE_W + 40), y: 40 }; });
    }
    ids.forEach((id) => {
      graph.addNode({
        id, shape: "rect", x: pos[id].x, y: pos[id].y, width: NODE_W, height: NODE_H,
        markup: [{ tagName: "rect", selector: "body" }, { tagName: "text", selector: "label" }, { tagName: "text", selector: "sub" }],
        attrs: {
          body: { refWidth: "100%", refHeight: "100%", rx: 10, ry: 10, strokeWidth: 2, cursor: "pointer" },
          label: { text: id, refX: 14, refY: 20, fontSize: 13, fontWeight: 600, fill: "#1b2130", textAnchor: "start", textVerticalAnchor: "middle", cursor: "pointer" },
          sub: { refX: 14, refY: 38, fontSize: 11, fill: "#667085", textAnchor: "start", textVerticalAnchor: "middle", fontFamily: "ui-monospace, Menlo, monospace", cursor: "pointer" },
        },
      });
      paintNode(id);
    });
    (definition.edges || []).forEach((e) => {
      if (!steps[e.from] || !steps[e.to]) return;
      graph.addEdge({
        source: e.from, target: e.to, zIndex: -1, connector: { name: "smooth" },
        attrs: { line: { stroke: "#98a2b3", strokeWidth: 1.6, targetMarker: { name: "block", width: 8, height: 6 } } },
        labels: e.port ? [{ attrs: { label: { text: e.port, fontSize: 11, fill: "#667085" } } }] : [],
      });
    });
    graph.on("node:click", ({ node }) => select(node.id));
    window.addEventListener("resize", () => graph.resize(container.clientWidth, container.clientHeight));
    requestAnimationFrame(() => graph.zoomToFit({ padding: 24, maxScale: 1 }));
  }
  function paintNode(id) {
    if (!graph) return;
    const node = graph.getCellById(id);
    if (!node) return;
    const s = steps[id], status = s.status || "pending", [fill, stroke] = COLORS[status] || COLORS.pending;
    const attempts = (s.attempts || []).length;
    node.setAttrs({
      body: { fill, stroke, "data-status": status, strokeDasharray: status === "skipped" ? "5 4" : null },
      sub: { text: `${s.type || ""} · ${status}${attempts > 1 ? " · try " + attempts : ""}` },
    });
  }

  // ---- step table, panel, approvals --------------------------------------------------------
  function duration(s) {
    if (!s.started_at) return "";
    const end = s.ended_at ? new Date(s.ended_at) : (["running", "waiting", "retrying"].includes(s.status) ? new Date() : null);
    if (!end) return "";
    const secs = (end - new Date(s.started_at)) / 1000;
    return secs < 1 ? `${Math.round(secs * 1000)} ms` : `${secs.toFixed(secs < 10 ? 2 : 1)} s`;
  }
  function renderTable() {
    const body = document.querySelector("#steps-table tbody");
    body.innerHTML = Object.values(steps).map((s) => `
      <tr data-step-id="${esc(s.step_id)}" data-status="${esc(s.status)}" class="${s.step_id === selected ? "selected" : ""}">
        <td><a href="#" data-select="${esc(s.step_id)}"><code>${esc(s.step_id)}</code></a></td>
        <td class="muted">${esc(s.type)}</td>
        <td><span class="pill ${esc(s.status)}">${esc(s.status)}</span></td>
        <td>${(s.attempts || []).length || ""}</td>
        <td class="muted small">${s.started_at ? esc(new Date(s.started_at).toLocaleTimeString()) : ""}</td>
        <td class="small">${esc(duration(s))}</td>
        <td class="error small truncate">${esc((s.error || "").split("\n").slice(-1)[0])}</td>
      </tr>`).join("");
  }
  function select(id) { selected = id; renderPanel(); renderTable(); }
  function renderPanel() {
    const el = document.getElementById("step-panel-body");
    const s = steps[selected];
    if (!s) return;
    const attempts = (s.attempts || []).map((a) => `
      <tr><td>#${esc(a.attempt)}</td><td class="small">${a.started_at ? esc(new Date(a.started_at).toLocaleTimeString()) : ""}</td>
      <td class="small">${a.ended_at ? esc(new Date(a.ended_at).toLocaleTimeString()) : ""}</td>
      <td class="small">${a.backoff_seconds != null ? esc(a.backoff_seconds) + " s" : ""}</td>
      <td class="error small">${esc(a.error || "")}</td></tr>`).join("");
    el.innerHTML = `
      <p class="row"><code class="strong">${esc(s.step_id)}</code><span class="muted">${esc(s.type)}</span><span class="spacer"></span><span class="pill ${esc(s.status)}">${esc(s.status)}</span></p>
      ${s.port && s.port !== "out" ? `<p class="small muted">took port <code>${esc(s.port)}</code></p>` : ""}
      <h3>Attempts</h3>
      ${attempts ? `<table class="table compact"><thead><tr><th>#</th><th>Start</th><th>End</th><th>Backoff</th><th>Error</th></tr></thead><tbody>${attempts}</tbody></table>` : '<p class="muted small">none yet</p>'}
      <h3>Input</h3><pre class="json">${esc(json(s.input))}</pre>
      <h3>Output</h3><pre class="json">${esc(json(s.output))}</pre>
      ${s.error ? `<h3>Error</h3><pre class="json error traceback">${esc(s.error)}</pre>` : ""}`;
  }
  function renderApprovals() {
    const box = document.getElementById("approvals");
    const template = document.getElementById("approval-template");
    const waiting = Object.values(steps).filter((s) => s.status === "waiting" && data.approvals[s.step_id]);
    box.hidden = !waiting.length;
    box.innerHTML = "";
    waiting.forEach((s) => {
      const node = template.content.cloneNode(true);
      node.querySelector('[data-field="step"]').textContent = s.step_id;
      node.querySelector('[data-field="signal"]').textContent = data.approvals[s.step_id];
      node.querySelectorAll('input[name="name"]').forEach((i) => { i.value = data.approvals[s.step_id]; });
      node.querySelectorAll("form[data-confirm]").forEach((f) => {
        f.addEventListener("submit", (e) => { if (!confirm(`${f.dataset.confirm === "approve" ? "Approve" : "Reject"} step ${s.step_id}?`)) e.preventDefault(); });
      });
      box.appendChild(node);
    });
  }
  function renderRun() {
    const pill = document.getElementById("run-status");
    pill.className = `pill ${run.status}`;
    pill.dataset.status = run.status;
    pill.textContent = run.status;
    document.querySelectorAll("[data-when]").forEach((b) => { b.disabled = !b.dataset.when.split(" ").includes(run.status); });
  }

  // ---- timeline (Gantt of attempts) -------------------------------------------------------
  let chart = null;
  function timelineData() {
    const rows = [], colors = [];
    let t0 = run.started_at ? new Date(run.started_at).getTime() : null;
    Object.values(steps).forEach((s) => (s.attempts || []).forEach((a) => {
      if (a.started_at) t0 = t0 == null ? new Date(a.started_at).getTime() : Math.min(t0, new Date(a.started_at).getTime());
    }));
    if (t0 == null) return { labels: [], rows, colors };
    const now = Date.now();
    Object.values(steps).forEach((s) => (s.attempts || []).forEach((a) => {
      if (!a.started_at) return;
      const start = (new Date(a.started_at).getTime() - t0) / 1000;
      const end = ((a.ended_at ? new Date(a.ended_at).getTime() : now) - t0) / 1000;
      const failed = a.error != null && a.error !== "";
      rows.push({ y: `${s.step_id} #${a.attempt}`, x: [start, Math.max(end, start + 0.005)] });
      colors.push(failed ? COLORS.failed[1] : !a.ended_at ? COLORS.running[1] : COLORS.succeeded[1]);
    }));
    return { labels: rows.map((r) => r.y), rows, colors };
  }
  function renderTimeline() {
    if (!window.Chart) return;
    const { labels, rows, colors } = timelineData();
    const canvas = document.getElementById("timeline");
    canvas.parentElement.style.height = `${Math.max(80, 26 * labels.length + 50)}px`;
    if (!chart) {
      chart = new Chart(canvas, {
        type: "bar",
        data: { labels, datasets: [{ data: rows, backgroundColor: colors, borderRadius: 4, barPercentage: 0.7 }] },
        options: {
          indexAxis: "y", animation: false, maintainAspectRatio: false, parsing: { xAxisKey: "x", yAxisKey: "y" },
          plugins: { legend: { display: false }, tooltip: { callbacks: { label: (c) => `${c.raw.x[0].toFixed(3)} s → ${c.raw.x[1].toFixed(3)} s` } } },
          scales: { x: { title: { display: true, text: "seconds since the run started" }, beginAtZero: true } },
        },
      });
    } else {
      chart.data.labels = labels;
      chart.data.datasets[0].data = rows;
      chart.data.datasets[0].backgroundColor = colors;
      chart.update();
    }
  }

  // ---- history log ------------------------------------------------------------------------
  function historyRow(ev) {
    const tr = document.createElement("tr");
    tr.dataset.seq = ev.seq;
    tr.innerHTML = `<td>${esc(ev.seq)}</td><td class="small muted">${esc(new Date(ev.ts * 1000).toLocaleTimeString())}</td>
      <td><code>${esc(ev.kind)}</code></td><td>${esc(ev.step_id || "")}</td><td>${ev.attempt || ""}</td>
      <td><code class="small truncate-data">${esc(JSON.stringify(ev.data))}</code></td>`;
    document.querySelector("#history-table tbody").appendChild(tr);
  }

  // ---- folding live events (the same rules as the projector) ------------------------------
  function attemptOf(s, n) {
    s.attempts = s.attempts || [];
    let a = s.attempts.find((x) => x.attempt === n);
    if (!a) { a = { attempt: n, started_at: null, ended_at: null, error: null, backoff_seconds: null }; s.attempts.push(a); s.attempts.sort((p, q) => p.attempt - q.attempt); }
    return a;
  }
  function apply(ev) {
    if (ev.seq <= lastSeq) return;
    lastSeq = ev.seq;
    historyRow(ev);
    const d = ev.data || {};
    if (RUN_KINDS[ev.kind]) {
      run.status = RUN_KINDS[ev.kind];
      if (ev.kind === "run_started") run.started_at = iso(ev.ts);
      if (ev.kind === "run_succeeded") document.getElementById("run-output").textContent = json(d.output);
      if (ev.kind === "run_failed") document.getElementById("run-error").textContent = d.error || "";
      if (ev.kind === "run_cancelled") document.getElementById("run-error").textContent = `cancelled${d.by ? " by " + d.by : ""}${d.reason ? ": " + d.reason : ""}`;
      renderRun();
    }
    if (ev.step_id && STEP_KINDS[ev.kind]) {
      const s = steps[ev.step_id] = steps[ev.step_id] || { step_id: ev.step_id, type: ev.step_type, status: "pending", attempts: [] };
      s.status = STEP_KINDS[ev.kind];
      if (ev.step_type) s.type = ev.step_type;
      const n = ev.attempt || d.attempt || 0;
      if (ev.kind === "step_started") { s.input = d.input; s.error = ""; s.ended_at = null; s.started_at = s.started_at || iso(ev.ts); attemptOf(s, n).started_at = iso(ev.ts); }
      if (ev.kind === "step_succeeded" || ev.kind === "step_failed") {
        const a = attemptOf(s, n);
        a.started_at = iso(d.started_at) || a.started_at; a.ended_at = iso(d.ended_at) || iso(ev.ts);
        s.ended_at = a.ended_at;
        s.started_at = s.started_at || a.started_at; // engine steps report start and end together
        if (ev.kind === "step_succeeded") { s.output = d.output; s.port = d.port || ""; s.error = ""; } else { s.error = d.error || ""; a.error = s.error; }
      }
      if (ev.kind === "step_retrying") { const a = attemptOf(s, n); a.ended_at = a.ended_at || iso(ev.ts); a.error = d.error; a.backoff_seconds = d.backoff_seconds; s.error = d.error || ""; }
      if (ev.kind === "step_waiting") s.started_at = s.started_at || iso(ev.ts);
      if (ev.kind === "step_cancelled") s.ended_at = s.ended_at || iso(ev.ts);
      if (!graph || !graph.getCellById(ev.step_id)) { if (graph) { /* a step outside the known definition */ } }
      paintNode(ev.step_id);
      if (selected === ev.step_id) renderPanel();
    }
    scheduleRender();
  }
  let pending = false;
  function scheduleRender() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; renderTable(); renderApprovals(); renderTimeline(); });
  }

  document.getElementById("steps-table").addEventListener("click", (e) => {
    const link = e.target.closest("[data-select]");
    if (link) { e.preventDefault(); select(link.dataset.select); }
  });

  buildGraph();
  data.history.forEach(apply);
  lastSeq = Math.max(lastSeq, run.last_seq || 0);
  renderRun(); renderTable(); renderApprovals(); renderTimeline();
  const firstStep = Object.keys(steps)[0];
  if (firstStep) select(firstStep);
  // Running attempts grow on the timeline even without events.
  setInterval(() => { if (["running", "pending"].includes(run.status)) renderTimeline(); }, 1000);
  SluiceLive.connect(data.ws_path, {
    sinceFn: () => lastSeq,
    onEvent: apply,
    onState: SluiceLive.indicator(document.getElementById("live-indicator")),
  });
})();
