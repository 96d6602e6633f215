/* The palette: step types by group, searchable; drag one onto the canvas (X6 Dnd), or focus it
 * and press Enter to add it near the centre of the view. */

import { config, stepTypes, STATIC, $, escapeHtml } from "./page.js";
import { groupClass, nodeConfig, stepOf } from "./canvas.js";

export function setupPalette({ canvas, model, panel }) {
  const { graph, selection } = canvas;
  const dnd = new X6.Dnd({
    target: graph, scaled: false,
    getDropNode: (dragging) => {
      const node = dragging.clone();
      const step = { ...node.getData().step, id: model.freshStepId(node.getData().step.type) };
      node.setData({ step }, { overwrite: true });
      return node;
    },
  });

  /** Add a step of `type` where the view's centre (or the nearest free spot) is, and open it. */
  function addStep(type) {
    if (!config.canEdit) return;
    const spot = canvas.freeSpotNearCentre();
    const node = graph.addNode(nodeConfig(model.newStep(type), spot.x, spot.y));
    selection.reset([node]);
    panel.open(stepOf(node).id);
  }

  function render(filter = "") {
    const groups = {};
    const query = filter.trim().toLowerCase();
    for (const t of stepTypes) {
      const hay = `${t.type} ${t.label} ${t.group} ${t.description}`.toLowerCase();
      if (query && !hay.includes(query)) continue;
      (groups[t.group] = groups[t.group] || []).push(t);
    }
    const root = $("#palette-groups");
    root.innerHTML = "";
    if (!Object.keys(groups).length) {
      root.innerHTML = `<div class="empty-search">No step type matches “${escapeHtml(filter)}”.</div>`;
      return;
    }
    for (const [group, types] of Object.entries(groups)) {
      const section = document.createElement("section");
      section.className = "palette-group";
      section.innerHTML = `<h3>${escapeHtml(group)}</h3>`;
      for (const t of types) {
        const item = document.createElement("button");
        item.type = "button";
        item.className = "palette-item";
        item.dataset.type = t.type;
        item.title = t.description;
        item.innerHTML = `<span class="type-icon ${groupClass(t.group)}"><span class="icon" style="--icon:url('${STATIC}icons/${t.icon}.svg')"></span></span>
          <span><span class="label">${escapeHtml(t.label)}</span><span class="desc">${escapeHtml(t.description)}</span></span>`;
        item.addEventListener("mousedown", (e) => {
          if (e.button !== 0 || !config.canEdit) return;
          dnd.start(graph.createNode(nodeConfig(model.newStep(t.type), 0, 0)), e);
        });
        item.addEventListener("keydown", (e) => {
          if (e.key !== "Enter" && e.key !== " ") return;
          e.preventDefault();
          addStep(t.type);
        });
        section.append(item);
      }
      root.append(section);
    }
  }

  $("#palette-search").addEventListener("input", (e) => render(e.target.value));
  render();
  return { addStep };
}
