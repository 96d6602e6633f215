/* Run detail: the workflow graph (X6, read-only) coloured by step status, a timeline of attempts
 * (Chart.js), step details, the run's output or error, and the raw history log.
 *
 * The page starts from the state the server folded (run, steps, last seq) and folds the events
 * that arrive after it over the run's websocket (run_state.js, the same rules as the server),
 * re-rendering what they change; it never needs a reload to be right.
 */

import { describeEvent, runLink } from "./history_text.js";
import { connect, indicator } from "./live.js";
import { RunState } from "./run_state.js";
import { RUN_FINISHED, STATUS_COLOURS, STEP_ACTIVE } from "./status.js";
import { errorHtml, errorLine, escapeHtml as esc, prettyJSON } from "./text.js";
import { computeLayout } from "../designer/layout.js";

const data = JSON.parse(document.getElementById("run-data").textContent);
const definition = data.definition || { steps: [], edges: [] };
const stepTypes = Object.fromEntries((definition.steps || []).map((s) => [s.id, s.type]));
const state = new RunState({ run: data.run, steps: data.steps, stepIds: (definition.steps || []).map((s) => s.id), stepTypes });
let selected = null;
const $ = (id) => document.getElementById(id);

// ---- graph ------------------------------------------------------------------------------------
const NODE_W = 216;
const NODE_H = 56;
const FIT = { width: -28, height: 18, ellipsis: true }; // one line inside the border, cut with …
let graph = null;

function buildGraph() {
  const container = $("run-graph");
  if (!window.X6) { container.textContent = "The graph library did not load."; return; }
  // Fixed size, resized by hand: X6's autoResize in a flex card grows the card without end.
  graph = new X6.Graph({
    container, width: container.clientWidth, height: container.clientHeight, background: { color: "#f8f9fb" },
    grid: { visible: true, size: 8, type: "dot", args: { color: "#e1e4ea", thickness: 1 } },
    panning: { enabled: true }, mousewheel: { enabled: true, modifiers: ["ctrl", "meta"], minScale: 0.3, maxScale: 1.5 },
    interacting: () => ({ nodeMovable: false, edgeMovable: false, edgeLabelMovable: false, magnetConnectable: false }),
  });
  const ids = Object.keys(state.steps);
  const layout = definition.layout || {};
  const edges = (definition.edges || []).filter((e) => state.steps[e.from] && state.steps[e.to]);
  let positions = {};
  if (ids.length && ids.every((id) => layout[id])) {
    positions = layout; // as the author arranged it in the designer
  } else if (window.dagre) {
    positions = computeLayout(ids.map((id) => ({ id, type: state.steps[id].type })), edges,
      { width: NODE_W, height: NODE_H, portsOf: () => ["out"], marginx: 24, marginy: 24 });
  } else {
    ids.forEach((id, i) => { positions[id] = { x: 24, y: 24 + i * (NODE_H + 40) }; });
  }
  ids.forEach((id) => {
    graph.addNode({
      id, shape: "rect", x: positions[id].x, y: positions[id].y, width: NODE_W, height: NODE_H,
      markup: [{ tagName: "rect", selector: "body" }, { tagName: "text", selector: "label" }, { tagName: "text", selector: "sub" }],
      attrs: {
        body: { refWidth: "100%", refHeight: "100%", rx: 10, ry: 10, strokeWidth: 2, cursor: "pointer" },
        label: { refX: 14, refY: 20, fontSize: 13, fontWeight: 600, fill: "#1b2130", textAnchor: "start",
          textVerticalAnchor: "middle", cursor: "pointer", textWrap: { text: id, ...FIT } },
        sub: { refX: 14, refY: 38, fontSize: 11, fill: "#667085", textAnchor: "start", textVerticalAnchor: "middle",
          fontFamily: "ui-monospace, Menlo, monospace", cursor: "pointer" },
      },
    });
    paintNode(id);
  });
  edges.forEach((e) => {
    graph.addEdge({
      source: { cell: e.from, anchor: "bottom" }, target: { cell: e.to, anchor: "top" }, zIndex: -1,
      connector: { name: "smooth", args: { direction: "V" } },
      attrs: { line: { stroke: "#98a2b3", strokeWidth: 1.6, targetMarker: { name: "block", width: 8, height: 6 } } },
      labels: e.port ? [{ attrs: { label: { text: e.port, fontSize: 11, fill: "#667085" } } }] : [],
    });
  });
  graph.on("node:click", ({ node }) => select(node.id));
  window.addEventListener("resize", () => graph.resize(container.clientWidth, container.clientHeight));
  requestAnimationFrame(() => graph.zoomToFit({ padding: 24, maxScale: 1 }));
}

function paintNode(id) {
  const node = graph && graph.getCellById(id);
  if (!node) return;
  const step = state.steps[id];
  const status = step.status || "pending";
  const { fill, stroke } = STATUS_COLOURS[status] || STATUS_COLOURS.pending;
  const attempts = (step.attempts || []).length;
  const progress = childProgress(step);
  node.setAttrs({
    body: { fill, stroke, "data-status": status, strokeDasharray: status === "skipped" ? "5 4" : null },
    // The colour says the status: a foreach says how far it got instead (the line fits one row).
    sub: { textWrap: { text: `${step.type || ""} · ${progress || status}${attempts > 1 ? " · try " + attempts : ""}`, ...FIT } },
  });
}

// ---- run, steps table, step panel, approvals ---------------------------------------------------
const urls = data.urls;

/** "7/10" for a foreach (done of total), "" for steps without children or a single child. */
function childProgress(step) {
  const kids = step.details && step.details.children;
  if (!kids || step.type !== "foreach") return "";
  return `${kids.succeeded + kids.failed}/${kids.total}${kids.failed ? ` · ${kids.failed} failed` : ""}`;
}

function duration(step) {
  if (!step.started_at) return "";
  const end = step.ended_at ? new Date(step.ended_at) : (STEP_ACTIVE.has(step.status) ? new Date() : null);
  if (!end) return "";
  const secs = (end - new Date(step.started_at)) / 1000;
  return secs < 1 ? `${Math.round(secs * 1000)} ms` : `${secs.toFixed(secs < 10 ? 2 : 1)} s`;
}
const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");

function renderRun() {
  const run = state.run;
  const pill = $("run-status");
  pill.className = `pill ${run.status}`;
  pill.dataset.status = run.status;
  pill.textContent = run.status;
  document.querySelectorAll("[data-when]").forEach((b) => { b.disabled = !b.dataset.when.split(" ").includes(run.status); });
  const output = $("run-output");
  output.textContent = run.output != null ? prettyJSON(run.output) : "";
  const error = $("run-error");
  error.innerHTML = errorHtml(run.error);
  error.hidden = !run.error;
  const none = $("run-none");
  none.hidden = run.output != null || Boolean(run.error);
  none.textContent = RUN_FINISHED.has(run.status) ? "no output" : "not finished yet";
  const handler = $("on-failure-link");
  if (run.on_failure && run.on_failure.run_id) {
    handler.innerHTML = `<span class="icon" style="--icon:url('${data.static}icons/alert-triangle.svg')"></span>
      on_failure started <strong>${esc(run.on_failure.workflow)}</strong> ${runLink(urls, run.on_failure.run_id)}`;
    handler.hidden = false;
  }
}

function renderTable() {
  $("steps-table").querySelector("tbody").innerHTML = Object.values(state.steps).map((s) => `
    <tr data-step-id="${esc(s.step_id)}" data-status="${esc(s.status)}" class="${s.step_id === selected ? "selected" : ""}">
      <td><a href="#" data-select="${esc(s.step_id)}"><code>${esc(s.step_id)}</code></a></td>
      <td class="muted">${esc(s.type)}</td>
      <td><span class="pill ${esc(s.status)}">${esc(s.status)}</span>${childProgress(s) ? ` <span class="small muted" data-progress>${esc(childProgress(s))}</span>` : ""}</td>
      <td>${(s.attempts || []).length || ""}</td>
      <td class="muted small">${esc(clock(s.started_at))}</td>
      <td class="small">${esc(duration(s))}</td>
      <td class="error small truncate" title="${esc(errorLine(s.error))}">${esc(errorLine(s.error))}</td>
    </tr>`).join("");
}

function select(id) {
  selected = id;
  renderPanel();
  renderTable();
}

/** A JSON value in a box, or a muted word when there is none. */
const shown = (value, nothing) => (value == null ? `<p class="muted small">${esc(nothing)}</p>`
  : `<pre class="json">${esc(prettyJSON(value))}</pre>`);

function renderPanel() {
  const step = state.steps[selected];
  if (!step) return;
  const attempts = (step.attempts || []).map((a) => `
    <tr data-attempt="${esc(a.attempt)}"><td>#${esc(a.attempt)}</td><td class="small">${esc(clock(a.started_at))}</td>
    <td class="small">${esc(clock(a.ended_at))}</td>
    <td class="small">${a.backoff_seconds != null ? esc(a.backoff_seconds) + " s" : ""}</td></tr>
    ${a.error ? `<tr class="attempt-error"><td></td><td colspan="3">${errorHtml(a.error)}</td></tr>` : ""}`).join("");
  $("step-panel-body").innerHTML = `
    <p class="row"><code class="strong">${esc(step.step_id)}</code><span class="muted">${esc(step.type)}</span><span class="spacer"></span><span class="pill ${esc(step.status)}">${esc(step.status)}</span></p>
    ${step.port && step.port !== "out" ? `<p class="small muted">took port <code>${esc(step.port)}</code></p>` : ""}
    ${step.error ? `<div class="step-error"><h3>Error</h3>${errorHtml(step.error)}</div>` : ""}
    ${compositionHtml(step)}
    <h3>Attempts</h3>
    ${attempts ? `<table class="table compact attempts"><thead><tr><th>#</th><th>Start</th><th>End</th><th>Backoff</th></tr></thead><tbody>${attempts}</tbody></table>` : '<p class="muted small">none yet</p>'}
    <h3>Input</h3>${shown(step.input, "none recorded")}
    <h3>Output</h3>${shown(step.output, STEP_ACTIVE.has(step.status) || step.status === "pending" ? "not yet" : "none")}`;
}

/** What a step started or handed on: child runs with progress, a Celery task, what it waits for. */
function compositionHtml(step) {
  const d = step.details || {};
  const parts = [];
  if (d.children) {
    const k = d.children;
    const done = k.succeeded + k.failed;
    const all = urls.children.replace("RUN_ID", encodeURIComponent(state.run.id)).replace("STEP_ID", encodeURIComponent(step.step_id));
    const rows = k.runs.map((c) => `<li data-child-index="${esc(c.index)}"><span class="pill ${esc(c.status)}">${esc(c.status)}</span>
      ${step.type === "foreach" ? `#${esc(c.index)} ` : ""}${runLink(urls, c.run_id)}</li>`).join("");
    parts.push(`<div class="children" data-children>
      <h3>${step.type === "foreach" ? "Child runs" : "Child run"} <span class="muted small">of <strong>${esc(k.workflow)}</strong>@${esc(k.version == null ? "live" : k.version)}${k.attempt > 1 ? `, attempt ${esc(k.attempt)}` : ""}</span></h3>
      ${step.type === "foreach" ? `<div class="progress" title="${esc(done)} of ${esc(k.total)} finished">
        <span class="ok" style="width:${k.total ? (100 * k.succeeded) / k.total : 0}%"></span><span class="bad" style="width:${k.total ? (100 * k.failed) / k.total : 0}%"></span></div>
      <p class="small" data-progress-text><strong>${esc(done)}/${esc(k.total)}</strong> done · ${esc(k.started - done)} running · ${esc(k.failed)} failed</p>` : ""}
      <ul class="child-runs">${rows}</ul>
      ${k.started > k.runs.length ? `<p class="small muted">the first ${esc(k.runs.length)} are listed</p>` : ""}
      ${k.started && step.type === "foreach" ? `<p class="small"><a href="${esc(all)}" data-all-children>All child runs in the run list</a></p>` : ""}
    </div>`);
  }
  if (d.celery) {
    parts.push(`<div class="celery" data-celery><h3>Celery task</h3><dl class="facts compact">
      <div><dt>Task</dt><dd><code>${esc(d.celery.task)}</code></dd></div>
      <div><dt>Task id</dt><dd><code data-celery-task-id>${esc(d.celery.task_id)}</code></dd></div></dl></div>`);
  }
  if (d.waiting && step.status === "waiting" && !d.children && !d.celery) {
    parts.push(`<p class="small waiting-note">${describeEvent({ kind: "step_waiting", data: d.waiting }, urls)}</p>`);
  }
  if (d.redispatches) {
    parts.push(`<p class="small muted">dispatched again ${esc(d.redispatches)} time${d.redispatches === 1 ? "" : "s"}: no worker had picked it up</p>`);
  }
  if (d.picked_up_by) parts.push(`<p class="small muted">picked up by <code>${esc(d.picked_up_by)}</code></p>`);
  return parts.join("");
}

function renderApprovals() {
  const box = $("approvals");
  const template = $("approval-template");
  const waiting = Object.values(state.steps).filter((s) => s.status === "waiting" && data.approvals[s.step_id]);
  box.hidden = !waiting.length;
  box.innerHTML = "";
  waiting.forEach((s) => {
    const node = template.content.cloneNode(true);
    node.querySelector('[data-field="step"]').textContent = s.step_id;
    node.querySelector('[data-field="signal"]').textContent = data.approvals[s.step_id];
    node.querySelectorAll('input[name="name"]').forEach((i) => { i.value = data.approvals[s.step_id]; });
    node.querySelectorAll("form[data-confirm]").forEach((f) => {
      f.addEventListener("submit", (e) => {
        if (!confirm(`${f.dataset.confirm === "approve" ? "Approve" : "Reject"} step ${s.step_id}?`)) e.preventDefault();
      });
    });
    box.appendChild(node);
  });
}

// ---- timeline (one bar per attempt) -------------------------------------------------------------
let chart = null;
const BAR_ROW = 26; // px per attempt
const AXIS_SPACE = 64; // px below the bars: tick labels and the axis title
// Chart.js gives an axis at most half the chart's height: below this, the axis title is drawn
// over the tick labels (a run with one or two attempts).
const MIN_TIMELINE_HEIGHT = 140;

function timelineData() {
  const rows = [];
  const colours = [];
  let t0 = state.run.started_at ? new Date(state.run.started_at).getTime() : null;
  const attempts = [];
  Object.values(state.steps).forEach((s) => (s.attempts || []).forEach((a) => {
    if (!a.started_at) return;
    attempts.push([s, a]);
    t0 = t0 == null ? new Date(a.started_at).getTime() : Math.min(t0, new Date(a.started_at).getTime());
  }));
  const now = Date.now();
  attempts.forEach(([s, a]) => {
    const start = (new Date(a.started_at).getTime() - t0) / 1000;
    const end = ((a.ended_at ? new Date(a.ended_at).getTime() : now) - t0) / 1000;
    rows.push({ y: `${s.step_id} #${a.attempt}`, x: [start, Math.max(end, start + 0.005)] });
    colours.push(a.error ? STATUS_COLOURS.failed.stroke : !a.ended_at ? STATUS_COLOURS.running.stroke : STATUS_COLOURS.succeeded.stroke);
  });
  return { labels: rows.map((r) => r.y), rows, colours };
}

function renderTimeline() {
  if (!window.Chart) return;
  const { labels, rows, colours } = timelineData();
  const canvas = $("timeline");
  // Room for every bar (Chart.js would skip labels) plus the axis under them.
  canvas.parentElement.style.height = `${Math.max(MIN_TIMELINE_HEIGHT, labels.length * BAR_ROW + AXIS_SPACE)}px`;
  if (!chart) {
    chart = new Chart(canvas, {
      type: "bar",
      data: { labels, datasets: [{ data: rows, backgroundColor: colours, borderRadius: 4, barPercentage: 0.7 }] },
      options: {
        indexAxis: "y", animation: false, maintainAspectRatio: false, parsing: { xAxisKey: "x", yAxisKey: "y" },
        plugins: { legend: { display: false }, tooltip: { callbacks: { label: (c) => `${c.raw.x[0].toFixed(3)} s → ${c.raw.x[1].toFixed(3)} s` } } },
        scales: {
          x: { beginAtZero: true, title: { display: true, text: "seconds since the run started", padding: { top: 6, bottom: 0 } } },
          y: { ticks: { autoSkip: false } },
        },
      },
    });
  } else {
    chart.data.labels = labels;
    chart.data.datasets[0].data = rows;
    chart.data.datasets[0].backgroundColor = colours;
    chart.update();
  }
}

// ---- history log --------------------------------------------------------------------------------
function historyRow(event) {
  const tr = document.createElement("tr");
  tr.dataset.seq = event.seq;
  tr.dataset.kind = event.kind;
  tr.innerHTML = `<td>${esc(event.seq)}</td><td class="small muted">${esc(new Date(event.ts * 1000).toLocaleTimeString())}</td>
    <td><code>${esc(event.kind)}</code></td><td><code>${esc(event.step_id || "")}</code></td><td>${event.attempt || ""}</td>
    <td class="small what">${describeEvent(event, urls)}</td>
    <td><code class="small truncate-data" title="${esc(JSON.stringify(event.data))}">${esc(JSON.stringify(event.data))}</code></td>`;
  $("history-table").querySelector("tbody").appendChild(tr);
}

// ---- live ----------------------------------------------------------------------------------------
let frame = null;
function renderSoon() {
  if (frame !== null) return;
  frame = requestAnimationFrame(() => {
    frame = null;
    renderRun();
    renderTable();
    renderApprovals();
    renderTimeline();
  });
}

function onEvent(event) {
  const change = state.apply(event);
  if (!change) return; // the server's state already holds it
  historyRow(event);
  if (change.stepId) {
    paintNode(change.stepId);
    if (selected === change.stepId) renderPanel();
  }
  renderSoon();
}

$("steps-table").addEventListener("click", (e) => {
  const link = e.target.closest("[data-select]");
  if (link) { e.preventDefault(); select(link.dataset.select); }
});

buildGraph();
data.history.forEach(historyRow);
renderRun();
renderTable();
renderApprovals();
renderTimeline();
// Open on the step that needs a look: a failed one, else one in progress, else the first.
// A link to a step (`#step=<id>`, from a child run) opens on it.
const steps = Object.values(state.steps);
const linked = new URLSearchParams(location.hash.slice(1)).get("step");
const first = (linked && state.steps[linked]) || steps.find((s) => s.status === "failed")
  || steps.find((s) => STEP_ACTIVE.has(s.status)) || steps[0];
if (first) select(first.step_id);
// Running attempts grow on the timeline even without events.
setInterval(() => { if (!RUN_FINISHED.has(state.run.status)) renderTimeline(); }, 1000);
connect(data.ws_path, { sinceFn: () => state.lastSeq, onEvent, onState: indicator($("live-indicator")) });
