/* Test runs: run the saved draft once with sample input (typed, or the newest record of the
 * trigger topic) and watch it on the canvas. The run's history arrives over the monitor's run
 * websocket through the monitor's live client and is folded by the monitor's run state, so a
 * test run shows exactly what the run page shows. */

import { config, $, errorBody, escapeHtml, postJSON, problemText } from "./page.js";
import { paintStatus, stepOf } from "./canvas.js";
import { connect, indicator } from "../monitor/live.js";
import { RunState } from "../monitor/run_state.js";
import { RUN_FINISHED } from "../monitor/status.js";
import { errorHtml, prettyJSON } from "../monitor/text.js";
import { renderSchemaForm } from "../monitor/schema_form.js";

export function setupTestRun({ canvas, model, save }) {
  const button = $("#btn-test");
  if (!button) return null;
  const dialog = $("#dlg-test");
  const input = $("#test-input");

  // With an input_schema, the input is typed into a form made from it (JSON stays one click away).
  let form = null;
  let schema = null;
  function showForm(value) {
    form = renderSchemaForm($("#test-form"), schema, value);
    $("#test-form").hidden = false;
    $("#test-input-field").hidden = true;
    $("#test-form-toggle").textContent = "Edit the input as JSON";
  }
  function showJSON(value) {
    form = null;
    if (value !== undefined) input.value = JSON.stringify(value, null, 2);
    $("#test-form").hidden = true;
    $("#test-input-field").hidden = false;
    $("#test-form-toggle").textContent = "Back to the form";
  }
  $("#test-form-toggle").addEventListener("click", (e) => {
    e.preventDefault();
    if (form) { showJSON(form.read().value || {}); return; }
    let value;
    try { value = JSON.parse(input.value || "{}"); } catch (err) { value = undefined; }
    showForm(value);
  });

  button.addEventListener("click", () => {
    const trigger = model.trigger;
    const declared = model.currentDefinition().input_schema;
    schema = declared && typeof declared === "object" ? declared : null;
    $("#test-form-toggle-line").hidden = !schema;
    if (schema) showForm(undefined);
    else showJSON();
    $("#test-error").textContent = "";
    $("#test-sample-status").textContent = trigger.type === "kafka" ? "" : "(the trigger is not a Kafka topic)";
    $("#test-sample").disabled = trigger.type !== "kafka" || !trigger.topic;
    dialog.showModal();
  });

  $("#test-sample").addEventListener("click", async () => {
    const status = $("#test-sample-status");
    status.innerHTML = '<span class="spinner"></span> reading…';
    const response = await fetch(`${config.urls.base}sample-record/?topic=${encodeURIComponent(model.trigger.topic || "")}`,
      { credentials: "same-origin", headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => errorBody(`The server answered ${response.status}`));
    if (!response.ok) { status.textContent = body.detail; return; }
    input.value = JSON.stringify(body.value, null, 2);
    if (form) showJSON(); // a record is shown as it is, not squeezed into the form
    input.dataset.record = JSON.stringify(body.record);
    status.textContent = `offset ${body.record.offset} of ${body.record.topic}[${body.record.partition}]`;
  });

  $("#form-test").addEventListener("submit", async (e) => {
    if (e.submitter && e.submitter.value === "cancel") return;
    e.preventDefault();
    const errorBox = $("#test-error");
    let value;
    if (form) {
      const read = form.read();
      if (read.errors.length) { form.showProblems(read.errors); return; }
      value = read.value === undefined ? {} : read.value;
    } else {
      try { value = JSON.parse(input.value || "{}"); } catch (err) {
        errorBox.textContent = `The input is not valid JSON: ${err.message}`;
        return;
      }
    }
    if (model.dirty || !save.version) {
      const saved = await save.save("Saved for a test run");
      if (!saved.ok) {
        errorBox.textContent = saved.conflict ? "" : saved.message;
        if (saved.conflict) dialog.close();
        return;
      }
    }
    const record = input.dataset.record ? JSON.parse(input.dataset.record) : null;
    const answer = await postJSON(`${config.urls.base}test-run/`, { version: save.version, input: value, record });
    if (!answer.ok) {
      // Input that does not match the input_schema: each mismatch next to its field.
      const left = form ? form.showProblems(answer.body.errors || []) : answer.body.errors || [];
      errorBox.textContent = problemText({ ...answer.body, errors: left });
      return;
    }
    dialog.close();
    watch(answer.body.run_id);
  });

  let watching = null;
  function watch(runId) {
    if (watching) watching.close();
    const nodes = canvas.graph.getNodes();
    nodes.forEach((node) => paintStatus(node, "pending"));
    const state = new RunState({ run: { id: runId, status: "pending", last_seq: 0 }, stepIds: nodes.map((n) => stepOf(n).id) });
    const pane = $("#run-pane");
    pane.hidden = false;
    pane.innerHTML = `<h3>Test run <span class="pill pending" id="run-status">pending</span>
        <span class="live-indicator small" id="run-live" data-state="connecting">connecting…</span></h3>
      <div class="small muted mono">${escapeHtml(runId)} · <a href="${config.urls.runPage.replace("RUN_ID", encodeURIComponent(runId))}" target="_blank" rel="noopener">open in the monitor</a></div>
      <ul class="run-steps" id="run-steps"></ul>`;
    let frame = null;
    function render() {
      frame = null;
      const status = state.run.status;
      const badge = $("#run-status");
      badge.textContent = status;
      badge.className = "pill " + status;
      pane.dataset.status = status;
      const list = $("#run-steps");
      list.innerHTML = "";
      for (const node of canvas.graph.getNodes()) {
        const step = state.steps[stepOf(node).id];
        if (!step || step.status === "pending") continue;
        const li = document.createElement("li");
        li.dataset.stepId = step.step_id;
        li.innerHTML = `<span class="pill ${escapeHtml(step.status)}">${escapeHtml(step.status)}</span> <code>${escapeHtml(step.step_id)}</code>`
          + (step.error ? errorHtml(step.error)
            : step.output != null ? `<pre class="json">${escapeHtml(prettyJSON(step.output))}</pre>` : "");
        list.append(li);
      }
    }
    const socket = connect(config.urls.runWebsocket.replace("RUN_ID", encodeURIComponent(runId)), {
      sinceFn: () => state.lastSeq,
      onEvent(event) {
        const change = state.apply(event);
        if (!change) return;
        if (change.stepId) {
          const node = canvas.nodeForStep(change.stepId);
          if (node) paintStatus(node, state.steps[change.stepId].status);
        }
        if (frame === null) frame = requestAnimationFrame(render);
        if (change.run && RUN_FINISHED.has(state.run.status)) {
          socket.close(); // the run is over: nothing more will come
          $("#run-live").hidden = true;
        }
      },
      onState: indicator($("#run-live")),
    });
    watching = socket;
  }

  return { watch };
}
