/* The side panel and the trigger chip.
 *
 * The panel is a server-rendered form (from the step type's JSON schema, or the trigger's),
 * swapped in with htmx; each change posts the form plus the whole definition and the answer
 * carries the updated step or trigger in an HX-Trigger event, which this module applies to
 * the model (one undoable change).
 */

import { config, csrf, STATIC, $, escapeHtml } from "./page.js";
import { stepOf } from "./canvas.js";

export function setupPanel({ canvas, model }) {
  const { graph, selection } = canvas;
  let selectedStepId = null;

  /** Show the form of step `stepId`, or of the trigger when stepId is null. */
  function open(stepId) {
    selectedStepId = stepId;
    const values = { definition: JSON.stringify(model.currentDefinition()) };
    if (stepId) values.step_id = stepId;
    return htmx.ajax("POST", config.urls.panel, { target: "#panel", swap: "innerHTML", values, headers: { "X-CSRFToken": csrf } });
  }

  function close() {
    selectedStepId = null;
    $("#panel").innerHTML = `<div class="panel-empty"><span class="icon" style="--icon:url('${STATIC}icons/activity.svg')"></span>
      <p>Select a step to configure it, or open the <a href="#" data-open-trigger>trigger</a>.</p></div>`;
  }

  function renderTriggerChip() {
    let chip = $("#trigger-chip");
    if (!chip) {
      chip = document.createElement("button");
      chip.type = "button";
      chip.id = "trigger-chip";
      chip.className = "trigger-chip";
      chip.addEventListener("click", () => open(null));
      ($("#canvas-top") || $(".canvas-wrap")).prepend(chip);
    }
    const trigger = model.trigger;
    const detail = trigger.type === "kafka" ? (trigger.topic || "no topic")
      : trigger.type === "schedule" ? (trigger.cron || "no schedule") : "";
    chip.innerHTML = `<span class="type-icon trigger"><span class="icon" style="--icon:url('${STATIC}icons/zap.svg')"></span></span>
      <span><strong>Trigger</strong> <span class="muted">${escapeHtml(trigger.type)}${detail ? " · " + escapeHtml(detail) : ""}</span></span>`;
  }

  $("#open-trigger").addEventListener("click", (e) => { e.preventDefault(); open(null); });
  // The trigger's state beside the chip is swapped by htmx (pause, resume, every 10 s): the
  // header's "trigger paused" pill follows it.
  document.body.addEventListener("htmx:afterSettle", () => {
    const state = $("#canvas-top .trigger-state");
    const pill = $("#header-trigger-paused");
    if (state && pill) pill.hidden = state.dataset.paused !== "1";
  });
  $("#panel").addEventListener("click", (e) => {
    if (e.target.matches("[data-open-trigger]")) { e.preventDefault(); open(null); }
  });
  document.body.addEventListener("sluice:step-updated", (e) => {
    const { step_id: stepId, step } = e.detail;
    const node = canvas.nodeForStep(stepId);
    if (!node || !step) return;
    if (JSON.stringify(stepOf(node)) === JSON.stringify(step)) return;
    node.setData({ step }, { overwrite: true });
    if (step.id !== stepId && selectedStepId === stepId) selectedStepId = step.id; // renamed in the panel
  });
  document.body.addEventListener("sluice:trigger-updated", (e) => model.setTrigger(e.detail.trigger));
  selection.on("selection:changed", ({ selected }) => {
    const nodes = selected.filter((c) => c.isNode());
    if (nodes.length === 1 && selected.length === 1) {
      const id = stepOf(nodes[0]).id;
      if (id !== selectedStepId) open(id);
    } else if (!selected.length && selectedStepId) {
      close();
    }
  });
  graph.on("node:change:data", ({ node, options }) => {
    // Undo/redo of a config change: show the panel again so it matches the step.
    if (options && (options.undo || options.redo) && stepOf(node).id === selectedStepId) open(selectedStepId);
  });
  graph.on("node:removed", ({ node }) => { if (stepOf(node) && stepOf(node).id === selectedStepId) close(); });
  // An answer must not wipe out what the author typed or picked after its request left: the
  // swap would put back the values the request carried (and a change still waiting to be sent,
  // on the old form, would be dropped with it). Such an answer is not swapped in; the newer
  // edit's own request (hx-sync replace aborts the older one) brings the form up to date.
  let edits = 0;
  const panelEl = $("#panel");
  for (const kind of ["input", "change"]) panelEl.addEventListener(kind, () => { edits += 1; });
  // Only the form's own requests are marked (the beforeSwap event does not say which element
  // asked); opening another step's or the trigger's panel always swaps.
  panelEl.addEventListener("htmx:beforeRequest", (e) => {
    if (e.detail.xhr && e.detail.elt?.matches(".panel-form")) e.detail.xhr.sluiceEdits = edits;
  });
  panelEl.addEventListener("htmx:beforeSwap", (e) => {
    const sentAt = e.detail.xhr?.sluiceEdits;
    if (sentAt !== undefined && edits > sentAt) e.detail.shouldSwap = false;
  });
  // The open form posts the whole definition with each change: keep its copy current.
  model.on("settled", () => {
    const field = document.querySelector("#panel input[name=definition]");
    if (field) field.value = JSON.stringify(model.currentDefinition());
  });
  model.on("loaded", renderTriggerChip);
  model.on("trigger", renderTriggerChip);

  return { open, close };
}
