/* Continuous validation: the server checks the definition once edits settle (POST
 * /designer/-/validate/); every problem marks its step with a badge and is listed under the
 * canvas, where a click selects the step (or opens the trigger) it belongs to. */

import { config, $, postJSON } from "./page.js";
import { NO_HISTORY, restingStroke, stepOf } from "./canvas.js";

const CHECK_DELAY_MS = 150;

export function setupProblems({ canvas, model, panel }) {
  const { graph, selection } = canvas;
  let problems = [];
  let timer = null;
  let sequence = 0;

  async function validateNow() {
    const mine = ++sequence;
    const count = $("#problems-count");
    try {
      const answer = await postJSON(config.urls.validate, { definition: model.currentDefinition() });
      if (mine !== sequence) return; // a newer check is on its way
      if (!answer.ok) { count.textContent = "could not check"; return; }
      problems = answer.body.problems || [];
      show();
    } catch (err) {
      count.textContent = "could not check (offline?)";
    }
  }

  function show() {
    const byStep = {};
    for (const p of problems) if (p.step_id) (byStep[p.step_id] = byStep[p.step_id] || []).push(p);
    for (const node of graph.getNodes()) {
      const list = byStep[stepOf(node).id] || [];
      const errors = list.filter((p) => p.severity !== "warning");
      node.setAttrs({
        badge: { visibility: list.length ? "visible" : "hidden", "data-problems": String(list.length),
          "data-errors": String(errors.length) },
        badgeDot: { fill: errors.length ? "#d92d20" : "#dc6803" },
        badgeText: { text: errors.length ? String(errors.length) : "!" },
        tip: { text: list.map((p) => `${p.severity === "warning" ? "Warning" : "Error"}: ${p.message}`).join("\n") },
        body: { stroke: errors.length ? "#f04438" : restingStroke(node) },
      }, NO_HISTORY);
    }
    const count = $("#problems-count");
    const errorCount = problems.filter((p) => p.severity !== "warning").length;
    const warningCount = problems.length - errorCount;
    const parts = [];
    if (errorCount) parts.push(`${errorCount} error${errorCount > 1 ? "s" : ""}`);
    if (warningCount) parts.push(`${warningCount} warning${warningCount > 1 ? "s" : ""}`);
    count.textContent = parts.length ? parts.join(", ") : "No problems";
    count.className = "pill " + (errorCount ? "failed" : warningCount ? "draft" : "succeeded");
    const list = $("#problems-list");
    list.innerHTML = "";
    for (const p of problems) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.stepId = p.step_id || "";
      button.dataset.path = p.path || "";
      button.className = p.severity === "warning" ? "warning" : "error";
      const where = document.createElement("span");
      where.className = "where";
      where.textContent = p.step_id || p.path || "workflow";
      const message = document.createElement("span");
      message.className = "msg";
      message.textContent = p.message;
      button.append(where, message);
      button.addEventListener("click", () => focus(p));
      li.append(button);
      list.append(li);
    }
    const chip = $("#trigger-chip");
    if (chip) chip.classList.toggle("has-problem", problems.some((p) => (p.path || "").startsWith("trigger")));
  }

  function focus(p) {
    const node = p.step_id ? canvas.nodeForStep(p.step_id) : null;
    if (node) {
      selection.reset([node]);
      graph.centerCell(node);
      panel.open(p.step_id);
    } else if ((p.path || "").startsWith("trigger")) {
      panel.open(null);
    }
  }

  $("#problems-toggle").addEventListener("click", () => {
    const box = $("#problems");
    const collapsed = box.dataset.collapsed === "true";
    box.dataset.collapsed = String(!collapsed);
    $("#problems-toggle").setAttribute("aria-expanded", String(collapsed));
  });
  model.on("settled", () => {
    clearTimeout(timer);
    timer = setTimeout(validateNow, CHECK_DELAY_MS);
  });

  return { get list() { return problems; }, validateNow };
}
