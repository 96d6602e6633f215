/* The Run button: start a run of a workflow's live version with input typed into a form made
 * from its `input_schema` (schema_form.js), or into a JSON box when it has none.
 *
 * Buttons carry `data-run-workflow` (the slug), `data-run-name` and `data-run-schema` (the live
 * version's input_schema as JSON, or empty). The start goes through the REST API
 * (POST /api/workflows/<slug>/runs/), the door every client uses, so the server checks the input
 * the same way; its 400 names each path, shown next to the field. On success the run's page opens.
 */

import { renderSchemaForm } from "./schema_form.js";
import { escapeHtml as esc } from "./text.js";

const csrf = () => JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"];

function dialog() {
  let box = document.getElementById("run-dialog");
  if (box) return box;
  box = document.createElement("dialog");
  box.id = "run-dialog";
  box.className = "wide";
  box.setAttribute("aria-labelledby", "run-dialog-title");
  box.innerHTML = `<form method="dialog" id="run-form" novalidate>
      <div class="dialog-head"><h2 id="run-dialog-title">Run</h2></div>
      <div class="dialog-body stack">
        <p class="muted small" id="run-dialog-note"></p>
        <div id="run-fields"></div>
        <p class="small"><a href="#" id="run-as-json">Edit the input as JSON</a></p>
        <div id="run-error" class="error" role="alert"></div>
      </div>
      <div class="dialog-foot"><button class="btn" value="cancel" formnovalidate>Cancel</button>
        <button class="btn primary" id="run-start" value="run">Start run</button></div>
    </form>`;
  document.body.append(box);
  return box;
}

/** Open the dialog for a workflow; resolves when it closes. */
export function openRunDialog({ slug, name, schema }) {
  const box = dialog();
  const fields = box.querySelector("#run-fields");
  const error = box.querySelector("#run-error");
  const toggle = box.querySelector("#run-as-json");
  box.querySelector("#run-dialog-title").textContent = `Run ${name || slug}`;
  box.querySelector("#run-dialog-note").textContent = schema
    ? "Starts a run of the live version. The fields come from the workflow's input_schema; the server checks the input against it."
    : "Starts a run of the live version. This workflow has no input_schema: any JSON is its input (trigger in expressions).";
  error.textContent = "";
  let form = renderSchemaForm(fields, schema || {}, schema ? undefined : {});
  let asJson = !schema;
  toggle.hidden = !schema;
  toggle.textContent = "Edit the input as JSON";
  toggle.onclick = (e) => {
    e.preventDefault();
    const { value } = form.read();
    asJson = !asJson;
    form = renderSchemaForm(fields, asJson ? {} : schema, value === undefined ? {} : value);
    toggle.textContent = asJson ? "Back to the form" : "Edit the input as JSON";
  };

  const submit = async (e) => {
    if (e.submitter && e.submitter.value === "cancel") return;
    e.preventDefault();
    const { value, errors } = form.read();
    if (errors.length) {
      const left = form.showProblems(errors);
      error.textContent = left.map((p) => `${p.path}: ${p.message}`).join("\n");
      return;
    }
    const start = box.querySelector("#run-start");
    start.disabled = true;
    try {
      const response = await fetch(`/api/workflows/${encodeURIComponent(slug)}/runs/`, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf() },
        body: JSON.stringify({ input: value === undefined ? {} : value }),
      });
      const body = await response.json().catch(() => ({ detail: `The server answered ${response.status}` }));
      if (response.status === 202) {
        location.assign(`/monitor/runs/${encodeURIComponent(body.id)}/`);
        return;
      }
      // Each problem next to its field; the rest (and the summary) under the form.
      const left = form.showProblems(body.errors || []);
      const marked = fields.querySelector(".has-error");
      if (marked) marked.scrollIntoView({ block: "center" });
      error.innerHTML = esc(body.detail || `The run was not started (${response.status})`)
        + (left.length > 1 ? `<ul>${left.map((p) => `<li>${esc(p.path)}: ${esc(p.message)}</li>`).join("")}</ul>` : "");
    } finally {
      start.disabled = false;
    }
  };
  const formEl = box.querySelector("#run-form");
  formEl.onsubmit = submit;
  box.showModal();
  const first = fields.querySelector("input, select, textarea");
  if (first) first.focus();
}

/** Wire every `[data-run-workflow]` button under `root` (also ones added later by htmx). */
export function setupRunButtons(root = document) {
  root.addEventListener("click", (e) => {
    const button = e.target.closest("[data-run-workflow]");
    if (!button) return;
    e.preventDefault();
    const raw = button.dataset.runSchema;
    openRunDialog({ slug: button.dataset.runWorkflow, name: button.dataset.runName, schema: raw ? JSON.parse(raw) : null });
  });
}
