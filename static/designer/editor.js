/* Sluice designer: the drag-and-drop workflow editor (an ES module; X6, dagre and js-yaml are
 * the UMD globals the page loads before it).
 *
 * The server does the thinking: validation, the side panel's forms (from each step type's JSON
 * schema), save, publish, versions and test runs. The editor draws and keeps things in sync,
 * one module per job:
 *   canvas.js     the X6 graph, its plugins, shapes and connection rules
 *   layout.js     auto-layout with dagre
 *   model.js      the definition <-> the graph, change tracking
 *   problems.js   continuous validation, badges, the problems list
 *   panel.js      the side panel (server-rendered forms) and the trigger chip
 *   palette.js    step types to drag or add from the keyboard
 *   commands.js   keyboard shortcuts and the toolbar
 *   code.js       JSON/YAML beside the canvas, import and export
 *   save.js       title bar, save, conflicts, Ctrl+S, publish
 *   versions.js   version history, diff, restore
 *   webhook.js    webhook tokens: shown once, rotated
 *   test_run.js   test runs, watched live with the monitor's client
 * and the monitor's run_dialog.js for the Run button (the live version, its input_schema's form).
 */

import { initialDefinition, $ } from "./page.js";
import { createCanvas } from "./canvas.js";
import { createModel } from "./model.js";
import { setupProblems } from "./problems.js";
import { setupPanel } from "./panel.js";
import { setupPalette } from "./palette.js";
import { setupCommands } from "./commands.js";
import { setupCode } from "./code.js";
import { setupSave } from "./save.js";
import { setupVersions } from "./versions.js";
import { setupWebhook } from "./webhook.js";
import { setupTestRun } from "./test_run.js";
import { setupRunButtons } from "../monitor/run_dialog.js";

const canvas = createCanvas({ stepCount: (initialDefinition.steps || []).length });
const model = createModel(canvas);
const panel = setupPanel({ canvas, model });
const problems = setupProblems({ canvas, model, panel });
setupPalette({ canvas, model, panel });
setupCommands({ canvas, model });
const code = setupCode({ model });
const webhook = setupWebhook({ panel });
const save = setupSave({ canvas, model, code, webhook });
setupVersions({ model, save });
setupTestRun({ canvas, model, save });
setupRunButtons(document.querySelector(".editor-toolbar"));

const updateEmptyHint = () => { $("#canvas-empty").hidden = canvas.graph.getNodes().length > 0; };
model.on("settled", () => {
  updateEmptyHint();
  canvas.refreshMinimap();
});

model.loadDefinition(initialDefinition);
updateEmptyHint(); // now, not after the views settle: "ready" means what is shown is right
if (canvas.graph.getNodes().length) canvas.fitToScreen();
(window.requestIdleCallback || ((f) => setTimeout(f, 200)))(canvas.addMinimap, { timeout: 1500 });

// For tests and the benchmark: a read-only window on the editor.
window.sluiceEditor = {
  graph: canvas.graph, history: canvas.history, selection: canvas.selection, clipboard: canvas.clipboard,
  currentDefinition: model.currentDefinition, autoLayout: model.autoLayout, nodeForStep: canvas.nodeForStep,
  openPanel: panel.open,
  get problems() { return problems.list; }, get dirty() { return model.dirty; }, get version() { return save.version; },
  get live() { return save.live; },
  readyAt: performance.now(),
};
canvas.graph.once("render:done", () => { window.sluiceEditor.renderedAt = performance.now(); });
document.documentElement.dataset.editorReady = "1";
