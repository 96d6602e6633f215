/* Canvas commands from the keyboard and the toolbar: undo/redo, copy/paste, delete, select
 * all, walking through the steps, nudging, zoom, fit and auto-layout. (Ctrl+S belongs to
 * saving: it works from anywhere on the page, see save.js.) */

import { config, $ } from "./page.js";

export function setupCommands({ canvas, model }) {
  const { graph, history, selection, clipboard, keyboard } = canvas;

  const undo = () => { if (history.canUndo()) history.undo(); };
  const redo = () => { if (history.canRedo()) history.redo(); };

  function removeSelected() {
    if (!config.canEdit) return;
    const cells = selection.getSelectedCells();
    if (cells.length) graph.removeCells(cells);
  }

  function copySelected() {
    const cells = selection.getSelectedCells();
    if (cells.length) clipboard.copy(cells, { deep: true });
  }

  function paste() {
    if (!config.canEdit || clipboard.isEmpty()) return;
    graph.batchUpdate("paste", () => {
      const cells = clipboard.paste({ offset: 32 }, graph);
      // Pasted steps are copies: each gets a step id of its own so the definition stays valid.
      model.renameCopies(cells.filter((cell) => cell.isNode()));
      selection.reset(cells);
    });
  }

  // Keyboard users walk through the steps with ] and [ (the panel follows) and nudge the
  // selection with the arrow keys (Shift for bigger steps).
  function selectNeighbour(delta) {
    const nodes = graph.getNodes().slice().sort((a, b) => (a.getZIndex() || 0) - (b.getZIndex() || 0));
    if (!nodes.length) return;
    const current = selection.getSelectedCells().find((c) => c.isNode());
    const index = current ? nodes.indexOf(current) : -1;
    const next = nodes[(index + delta + nodes.length) % nodes.length];
    selection.reset([next]);
    graph.centerCell(next);
  }
  const nudge = (dx, dy) => (e) => {
    const nodes = selection.getSelectedCells().filter((c) => c.isNode());
    if (!nodes.length || !config.canEdit) return;
    e.preventDefault();
    const step = e.shiftKey ? 40 : 8;
    graph.batchUpdate("nudge", () => nodes.forEach((n) => n.translate(dx * step, dy * step)));
  };

  keyboard.bindKey(["ctrl+z", "meta+z"], (e) => { e.preventDefault(); undo(); });
  keyboard.bindKey(["ctrl+shift+z", "meta+shift+z", "ctrl+y"], (e) => { e.preventDefault(); redo(); });
  keyboard.bindKey(["ctrl+c", "meta+c"], () => { copySelected(); return false; });
  keyboard.bindKey(["ctrl+v", "meta+v"], () => { paste(); return false; });
  keyboard.bindKey(["delete", "backspace"], (e) => { e.preventDefault(); removeSelected(); });
  keyboard.bindKey(["ctrl+a", "meta+a"], (e) => { e.preventDefault(); selection.reset(graph.getCells()); });
  keyboard.bindKey(["f"], () => canvas.fitToScreen());
  keyboard.bindKey(["l"], () => model.autoLayout());
  keyboard.bindKey(["=", "+"], () => graph.zoom(0.1));
  keyboard.bindKey(["-"], () => graph.zoom(-0.1));
  keyboard.bindKey(["escape"], () => selection.clean());
  keyboard.bindKey(["]"], () => selectNeighbour(1));
  keyboard.bindKey(["["], () => selectNeighbour(-1));
  [["left", -1, 0], ["right", 1, 0], ["up", 0, -1], ["down", 0, 1]].forEach(([key, dx, dy]) => {
    keyboard.bindKey([key, `shift+${key}`], nudge(dx, dy));
  });

  function updateHistoryButtons() {
    $("#btn-undo").disabled = !history.canUndo();
    $("#btn-redo").disabled = !history.canRedo();
  }
  history.on("change", updateHistoryButtons);
  $("#btn-undo").addEventListener("click", undo);
  $("#btn-redo").addEventListener("click", redo);
  $("#btn-zoom-in").addEventListener("click", () => graph.zoom(0.15));
  $("#btn-zoom-out").addEventListener("click", () => graph.zoom(-0.15));
  $("#btn-fit").addEventListener("click", () => canvas.fitToScreen());
  $("#btn-layout").addEventListener("click", () => model.autoLayout());
  updateHistoryButtons();
}
