/* The definition model: the workflow definition (DESIGN.md section 4) read from and written to
 * the canvas.
 *
 * The X6 graph is the single source of truth for steps, connections and positions while
 * editing, so undo/redo (X6 History) covers every edit alike; the definition is derived from
 * the graph whenever it is needed. The trigger and the other top-level fields (name, slug,
 * description) live beside the graph.
 *
 * Events (model.on(name, fn)): "settled" once edits pause (the O(steps) work: panel, code pane,
 * validation), "loaded" after a definition was (re)loaded, "trigger" when the trigger changed,
 * "dirty" when the unsaved-changes flag flips.
 */

import { typeByName } from "./page.js";
import { NODE_H, NODE_W, nodeConfig, stepOf } from "./canvas.js";
import { computeLayout } from "./layout.js";

const BESIDE_GRAPH = ["steps", "edges", "layout", "trigger"];
const MODEL_EVENTS = ["node:added", "node:removed", "edge:removed", "edge:connected", "node:change:data", "node:change:position"];
const SETTLE_MS = 120;

export const portsOf = (type) => (typeByName[type] || { ports: ["out"] }).ports;
const layoutOptions = { width: NODE_W, height: NODE_H, portsOf };

export function createModel(canvas) {
  const { graph, history, fitToScreen } = canvas;
  const events = new EventTarget();
  const emit = (name, detail) => events.dispatchEvent(new CustomEvent(name, { detail }));
  const meta = {};
  let trigger = { type: "manual" };
  let dirty = false;
  let suppressDirty = 0;
  let settleTimer = null;

  // ---- step ids ----------------------------------------------------------------------------
  const stepIds = () => new Set(graph.getNodes().map((n) => stepOf(n).id));

  /** The first unused `<type>_<n>` id, given the ids `taken` (default: every step's). */
  function freshStepId(type, taken = stepIds()) {
    const base = String(type).replace(/[^a-z0-9_]/gi, "_").toLowerCase();
    let n = 1;
    while (taken.has(`${base}_${n}`)) n += 1;
    return `${base}_${n}`;
  }

  /** A new step of `type`: a fresh id, and the defaults of its required config fields. */
  function newStep(type) {
    const info = typeByName[type];
    const values = {};
    const schema = (info && info.config_schema) || {};
    for (const key of schema.required || []) {
      const prop = (schema.properties || {})[key] || {};
      if (prop.default !== undefined) values[key] = prop.default;
    }
    return { id: freshStepId(type), type, config: values };
  }

  /**
   * Give pasted (or otherwise copied) nodes fresh step ids: unique against every other step
   * and against each other. A copy arrives with its original's id, so the copies' own ids must
   * not count as taken, and the original's id must.
   */
  function renameCopies(nodes) {
    const copies = new Set(nodes);
    const taken = new Set(graph.getNodes().filter((n) => !copies.has(n)).map((n) => stepOf(n).id));
    for (const node of nodes) {
      const step = JSON.parse(JSON.stringify(stepOf(node)));
      step.id = freshStepId(step.type, taken);
      taken.add(step.id);
      node.setData({ step }, { overwrite: true });
    }
  }

  // ---- graph -> definition ------------------------------------------------------------------
  function currentDefinition() {
    // Creation order (z-index), so undo of a delete puts a step back where it was in the list.
    const nodes = graph.getNodes().slice().sort((a, b) => (a.getZIndex() || 0) - (b.getZIndex() || 0));
    const idOf = {};
    const steps = [];
    const layout = {};
    for (const node of nodes) {
      const step = stepOf(node);
      idOf[node.id] = step.id;
      steps.push(JSON.parse(JSON.stringify(step)));
      const p = node.getPosition();
      layout[step.id] = { x: Math.round(p.x), y: Math.round(p.y) };
    }
    const edges = [];
    for (const e of graph.getEdges()) {
      const from = idOf[e.getSourceCellId()];
      const to = idOf[e.getTargetCellId()];
      if (!from || !to) continue;
      const edge = { from, to };
      const port = e.getSourcePortId();
      if (port && port !== "out") edge.port = port;
      edges.push(edge);
    }
    return { ...meta, trigger, steps, edges, layout };
  }

  // ---- definition -> graph ------------------------------------------------------------------
  /**
   * Show `definition`. recordHistory: an edit in the code pane or an import, applied as one
   * undoable change that touches only what differs (positions, selection and the panel
   * survive a one-word edit); otherwise the page's start: every cell at once, no history.
   */
  function loadDefinition(definition, { recordHistory = false } = {}) {
    performance.mark("sluice:load-start");
    for (const [key, value] of Object.entries(definition)) {
      if (!BESIDE_GRAPH.includes(key)) meta[key] = value;
    }
    for (const key of Object.keys(meta)) if (!(key in definition)) delete meta[key];
    trigger = definition.trigger || { type: "manual" };
    const layout = definition.layout || {};
    const steps = Array.isArray(definition.steps)
      ? definition.steps.filter((s) => s && typeof s === "object" && typeof s.id === "string") : [];
    const wantedEdges = (Array.isArray(definition.edges) ? definition.edges : []).filter((e) => e && typeof e === "object");
    // Steps without a position: lay the whole workflow out with dagre before drawing it.
    const computed = steps.length && steps.some((step) => !layout[step.id]) ? computeLayout(steps, wantedEdges, layoutOptions) : {};
    const place = (step, i) => layout[step.id] || computed[step.id] || { x: 80 + (i % 6) * 260, y: 80 + Math.floor(i / 6) * 120 };
    performance.mark("sluice:layout-done");
    suppressDirty += 1;
    if (recordHistory) {
      graph.batchUpdate("code", () => applyDifferences(steps, wantedEdges, layout, place));
    } else {
      const cells = [];
      const nodeByStep = {};
      steps.forEach((step, i) => {
        const pos = place(step, i);
        const node = graph.createNode(nodeConfig(step, pos.x, pos.y));
        nodeByStep[step.id] = node;
        cells.push(node);
      });
      for (const edge of wantedEdges) {
        const source = nodeByStep[edge.from];
        const target = nodeByStep[edge.to];
        if (!source || !target) continue; // dangling edges are reported by validation, not drawn
        cells.push(canvas.edgeConfig(source, edge.port, target));
      }
      history.disable();
      graph.resetCells(cells); // one reset event instead of one per cell: fast for big workflows
      history.enable();
    }
    performance.mark("sluice:cells-added");
    suppressDirty -= 1;
    if (!recordHistory) history.clean();
    emit("loaded");
    changed({ fromLoad: !recordHistory });
  }

  function applyDifferences(steps, wantedEdges, layout, place) {
    const existing = {};
    graph.getNodes().forEach((n) => { existing[stepOf(n).id] = n; });
    const keep = new Set(steps.map((s) => s.id));
    graph.removeCells(graph.getNodes().filter((n) => !keep.has(stepOf(n).id)));
    const nodeByStep = {};
    steps.forEach((step, i) => {
      let node = existing[step.id];
      if (node && stepOf(node).type !== step.type) { // other ports: draw it anew
        graph.removeCells([node]);
        node = null;
      }
      if (!node) {
        const pos = place(step, i);
        node = graph.addNode(nodeConfig(step, pos.x, pos.y));
      } else {
        if (JSON.stringify(stepOf(node)) !== JSON.stringify(step)) node.setData({ step }, { overwrite: true });
        const pos = layout[step.id];
        const now = node.getPosition();
        if (pos && (Math.round(now.x) !== pos.x || Math.round(now.y) !== pos.y)) node.position(pos.x, pos.y);
      }
      nodeByStep[step.id] = node;
    });
    const key = (from, port, to) => `${from}|${port || "out"}|${to}`;
    const wanted = new Set(wantedEdges.map((e) => key(e.from, e.port, e.to)));
    const present = new Set();
    for (const e of graph.getEdges()) {
      const k = key(stepOf(e.getSourceCell()).id, e.getSourcePortId(), stepOf(e.getTargetCell()).id);
      if (!wanted.has(k) || present.has(k)) graph.removeCells([e]); else present.add(k);
    }
    for (const edge of wantedEdges) {
      const k = key(edge.from, edge.port, edge.to);
      if (present.has(k) || !nodeByStep[edge.from] || !nodeByStep[edge.to]) continue;
      graph.addCell(canvas.edgeConfig(nodeByStep[edge.from], edge.port, nodeByStep[edge.to]));
      present.add(k);
    }
  }

  /** Lay every step out again with dagre (one undoable change unless recordHistory is false). */
  function autoLayout({ recordHistory = true } = {}) {
    const definition = currentDefinition();
    const positions = computeLayout(definition.steps, definition.edges, layoutOptions);
    const move = () => graph.getNodes().forEach((n) => {
      const p = positions[stepOf(n).id];
      if (p) n.position(p.x, p.y);
    });
    if (recordHistory) graph.batchUpdate("layout", move); else { history.disable(); move(); history.enable(); }
    fitToScreen();
  }

  // ---- change tracking -------------------------------------------------------------------------
  function setDirty(value) {
    if (dirty === value) return;
    dirty = value;
    emit("dirty", value);
  }

  /**
   * Something changed: flag it at once, and do the O(steps) work (deriving the definition for
   * the panel, the code pane and validation) once things settle, so a drag or a load of
   * hundreds of steps does not rebuild the definition on every event.
   */
  function changed({ fromLoad = false } = {}) {
    if (!fromLoad && !suppressDirty) setDirty(true);
    clearTimeout(settleTimer);
    settleTimer = setTimeout(() => emit("settled"), SETTLE_MS);
  }

  MODEL_EVENTS.forEach((name) => graph.on(name, (args) => {
    if (args && args.options && args.options.ignoreHistory) return;
    if (name === "edge:removed" && args.edge && !args.edge.getTargetCellId()) return; // an abandoned drag
    changed();
  }));
  history.on("undo", () => changed());
  history.on("redo", () => changed());

  return {
    on: (name, fn) => events.addEventListener(name, (e) => fn(e.detail)),
    currentDefinition, loadDefinition, autoLayout, newStep, freshStepId, renameCopies, changed, setDirty,
    get dirty() { return dirty; },
    get trigger() { return trigger; },
    setTrigger(value) {
      if (JSON.stringify(trigger) === JSON.stringify(value)) return;
      trigger = value;
      emit("trigger", value);
      changed();
    },
    /** Set a top-level field (name, slug): an edit like any other. */
    setMeta(key, value) { meta[key] = value; changed(); },
    get meta() { return meta; },
  };
}
