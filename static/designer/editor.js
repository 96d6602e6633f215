/* Sluice designer: the drag-and-drop workflow editor.
 *
 * The X6 graph is the single source of truth while editing: each node carries its step
 * (node data `step`), edges are connections, positions are the layout. The workflow
 * definition (DESIGN.md section 4) is derived from the graph whenever it is needed, so
 * undo/redo (X6 History) covers every edit to steps, config, edges and positions alike.
 * The trigger and the workflow name live outside the graph in `meta`.
 *
 * The server does the thinking: continuous validation (POST /designer/-/validate/), the side
 * panel form (rendered from the step type's JSON schema, swapped in with htmx), save,
 * publish, versions and test runs. This file only draws and keeps things in sync.
 * X6's UMD bundle lacks graph.undo() & co: the plugin instances are called directly.
 */
(function () {
  "use strict";

  const X6 = window.X6;
  const STATIC = window.SLUICE_STATIC || "/static/";
  const config = JSON.parse(document.getElementById("editor-config").textContent);
  const stepTypes = JSON.parse(document.getElementById("step-types").textContent);
  const initial = JSON.parse(document.getElementById("initial-definition").textContent);
  const typeByName = Object.fromEntries(stepTypes.map((t) => [t.type, t]));
  const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"];
  const $ = (sel) => document.querySelector(sel);

  const NODE_W = 216;
  const NODE_H = 60;
  const STATUS_COLOURS = {
    pending: "#98a2b3", running: "#2563eb", waiting: "#6d28d9", retrying: "#b54708",
    succeeded: "#15803d", failed: "#d92d20", skipped: "#98a2b3", cancelled: "#d92d20",
  };
  const GROUP_CLASS = (group) => "g-" + String(group || "").toLowerCase().replace(/[^a-z]+/g, "-");
  const GROUP_FILL = { "g-logic": "#fff3e6", "g-data": "#e9f8f1", "g-integrations": "#eef2ff", "g-waiting": "#f3edff", "g-control": "#fdeceb" };
  const NO_HISTORY = { ignoreHistory: true };

  // ---- state outside the graph ---------------------------------------------------------
  const meta = {};
  for (const [key, value] of Object.entries(initial)) {
    if (!["steps", "edges", "layout", "trigger"].includes(key)) meta[key] = value;
  }
  let trigger = initial.trigger || { type: "manual" };
  let version = config.version; // the saved version this editor started from
  let live = config.live;
  let dirty = false;
  let problems = [];
  let selectedStepId = null;
  let suppressDirty = 0;

  // ---- graph --------------------------------------------------------------------------
  X6.Graph.registerNode("sluice-step", {
    inherit: "rect",
    width: NODE_W,
    height: NODE_H,
    markup: [
      { tagName: "rect", selector: "body" },
      { tagName: "title", selector: "tip" },
      { tagName: "rect", selector: "iconBg" },
      { tagName: "image", selector: "icon" },
      { tagName: "text", selector: "label" },
      { tagName: "text", selector: "sub" },
      { tagName: "circle", selector: "status" },
      { tagName: "g", selector: "badge", children: [
        { tagName: "circle", selector: "badgeDot" },
        { tagName: "text", selector: "badgeText" },
      ] },
    ],
    attrs: {
      body: { refWidth: "100%", refHeight: "100%", rx: 10, ry: 10, fill: "#fff", stroke: "#d0d5dd", strokeWidth: 1.5 },
      iconBg: { x: 12, y: 14, width: 32, height: 32, rx: 8, ry: 8, fill: "#eef2ff" },
      icon: { x: 20, y: 22, width: 16, height: 16 },
      label: { refX: 0, refY: 0, x: 54, y: 24, fontSize: 13, fontWeight: 600, fill: "#1b2130", textAnchor: "start", textVerticalAnchor: "middle",
        fontFamily: "Inter, system-ui, sans-serif" },
      sub: { refX: 0, refY: 0, x: 54, y: 41, fontSize: 11, fill: "#667085", textAnchor: "start", textVerticalAnchor: "middle",
        fontFamily: "ui-monospace, Menlo, monospace" },
      status: { refX: "100%", x: -14, y: 30, r: 5, fill: "transparent" },
      badge: { visibility: "hidden", transform: `translate(${NODE_W - 34}, 0)`, cursor: "pointer" },
      badgeDot: { r: 10, fill: "#d92d20", stroke: "#fff", strokeWidth: 2 },
      badgeText: { fontSize: 11, fontWeight: 700, fill: "#fff", textAnchor: "middle", textVerticalAnchor: "middle",
        fontFamily: "Inter, system-ui, sans-serif" },
    },
    ports: {
      groups: {
        in: {
          position: "top",
          attrs: { circle: { r: 5, magnet: true, stroke: "#98a2b3", strokeWidth: 1.5, fill: "#fff", class: "x6-port-body port-in" } },
        },
        out: {
          position: "bottom",
          label: { position: { name: "right", args: { x: 4, y: 9 } } },
          attrs: {
            circle: { r: 5, magnet: true, stroke: "#3056d3", strokeWidth: 1.5, fill: "#fff", class: "x6-port-body port-out" },
            text: { fontSize: 10, fill: "#667085" },
          },
        },
      },
    },
  }, true);

  X6.Graph.registerEdge("sluice-edge", {
    inherit: "edge",
    attrs: { line: { stroke: "#98a2b3", strokeWidth: 1.6, targetMarker: { name: "block", width: 8, height: 6 } } },
    connector: { name: "smooth", args: { direction: "V" } },
  }, true);

  const container = $("#canvas");
  let refusal = null; // why the connection being drawn is refused, shown to the user

  const graph = new X6.Graph({
    container,
    autoResize: true,
    grid: { visible: true, size: 8, type: "dot", args: { color: "#d5d9e0", thickness: 1 } },
    background: { color: "#f8f9fb" },
    // Big workflows draw only the steps in view (plus a margin); small ones draw everything.
    virtual: { enabled: (initial.steps || []).length > 80, margin: 160 },
    panning: { enabled: true, eventTypes: ["rightMouseDown", "mouseWheel"] },
    mousewheel: { enabled: true, modifiers: ["ctrl", "meta"], zoomAtMousePosition: true, minScale: 0.2, maxScale: 2 },
    scaling: { min: 0.2, max: 2 },
    connecting: {
      snap: { radius: 24 },
      allowBlank: false,
      allowLoop: false,
      allowNode: false,
      allowEdge: false,
      allowMulti: true,
      highlight: true,
      router: "normal",
      connector: { name: "smooth", args: { direction: "V" } },
      connectionPoint: "anchor",
      anchor: "center",
      createEdge() { return this.createEdge({ shape: "sluice-edge", zIndex: -1 }); },
      validateMagnet({ magnet }) {
        if (!config.canEdit) return false;
        if (magnet.getAttribute("port-group") === "in") {
          toast("Start a connection at an output port (bottom of a step); input ports (top) receive connections.", true);
          return false;
        }
        return true;
      },
      validateConnection({ sourceCell, targetCell, sourcePort, targetPort, targetMagnet, edge }) {
        const reason = connectionRefusal(sourceCell, sourcePort, targetCell, targetPort, targetMagnet, edge);
        if (reason) refusal = reason;
        return !reason;
      },
    },
    highlighting: {
      magnetAvailable: { name: "stroke", args: { padding: 3, attrs: { stroke: "#3056d3", strokeWidth: 2 } } },
      magnetAdsorbed: { name: "stroke", args: { padding: 4, attrs: { stroke: "#15803d", strokeWidth: 3 } } },
    },
    interacting: () => ({ nodeMovable: config.canEdit, edgeMovable: false, edgeLabelMovable: false, magnetConnectable: config.canEdit }),
  });

  const history = new X6.History({
    enabled: true,
    stackSize: 500,
    // Status colours, problem badges and labels derived from data are views, not edits.
    beforeAddCommand(event, args) { return !(args && args.options && args.options.ignoreHistory); },
  });
  const selection = new X6.Selection({
    enabled: true, multiple: true, rubberband: true, movable: true, showNodeSelectionBox: true,
    pointerEvents: "none", filter: (cell) => cell.isNode() || cell.isEdge(),
  });
  const snapline = new X6.Snapline({ enabled: true, sharp: true });
  const clipboard = new X6.Clipboard({ enabled: true });
  const keyboard = new X6.Keyboard({
    enabled: true, global: true,
    // Keys typed into the name, the panel or the code pane are text, not canvas commands.
    guard: (e) => !(e.target && e.target.closest && e.target.closest("input, textarea, select, [contenteditable], dialog[open]")),
  });
  // The minimap draws every step as a plain rectangle and leaves edges out (X6's documented
  // way to keep it cheap): a full second rendering of 300 steps doubled load and drag costs.
  class MinimapNodeView extends X6.NodeView {
    renderMarkup() { return this.renderJSONMarkup({ tagName: "rect", selector: "body" }); }
    update() { super.update({ body: { refWidth: "100%", refHeight: "100%", rx: 8, ry: 8, fill: "#c7d2fe" } }); }
  }
  const minimap = new X6.MiniMap({
    container: $("#minimap"), width: 160, height: 104, padding: 8, scalable: false,
    graphOptions: { createCellView: (cell) => (cell.isNode() ? MinimapNodeView : null) },
  });
  [history, selection, snapline, clipboard, keyboard].forEach((plugin) => graph.use(plugin));
  // The minimap joins once the canvas is drawn: it must not delay the first paint.
  let minimapReady = false;
  const addMinimap = () => { graph.use(minimap); minimapReady = true; refreshMinimap(); };
  // Without X6's Scroller the minimap refits its content only on a model reset and never
  // moves its viewport frame after steps move: refit both once edits settle.
  function refreshMinimap() {
    if (!minimapReady || !minimap.targetGraph) return;
    minimap.targetGraph.zoomToFit();
    minimap.updateViewport();
  }
  const dnd = new X6.Dnd({
    target: graph, scaled: false,
    getDropNode: (dragging) => {
      const node = dragging.clone();
      const step = { ...node.getData().step, id: freshStepId(node.getData().step.type) };
      node.setData({ step }, { overwrite: true });
      return node;
    },
  });

  // ---- step ids, nodes, edges -----------------------------------------------------------
  const stepOf = (node) => (node && node.getData() ? node.getData().step : null);
  function nodeForStep(stepId) {
    return graph.getNodes().find((n) => stepOf(n) && stepOf(n).id === stepId) || null;
  }
  function stepIds() { return new Set(graph.getNodes().map((n) => stepOf(n).id)); }
  function freshStepId(type, taken) {
    const used = taken || stepIds();
    const base = String(type).replace(/[^a-z0-9_]/gi, "_").toLowerCase();
    let n = 1;
    while (used.has(`${base}_${n}`)) n += 1;
    return `${base}_${n}`;
  }

  function portsFor(type) {
    const info = typeByName[type];
    const outs = info ? info.ports : ["out"];
    const items = [{ id: "in", group: "in", attrs: { circle: { "port-group": "in" } } }];
    for (const port of outs) {
      items.push({ id: port, group: "out", attrs: { circle: { "port-group": "out" }, text: { text: outs.length > 1 ? port : "" } } });
    }
    return items;
  }

  function nodeAttrsFor(step) {
    const info = typeByName[step.type];
    const groupClass = GROUP_CLASS(info && info.group);
    const label = step.name || step.id;
    return {
      label: { text: label.length > 22 ? label.slice(0, 21) + "…" : label },
      sub: { text: `${info ? info.label : step.type + " (unknown)"} · ${step.id}`.slice(0, 32) },
      icon: { "xlink:href": `${STATIC}icons/${info ? info.icon : "box"}.svg` },
      iconBg: { fill: GROUP_FILL[groupClass] || "#eef2ff" },
      body: { "data-step-id": step.id },
    };
  }

  function nodeConfig(step, x, y) {
    return {
      shape: "sluice-step", x, y,
      data: { step },
      attrs: nodeAttrsFor(step),
      ports: { items: portsFor(step.type) },
    };
  }

  function refreshNodeLook(node) {
    node.setAttrs(nodeAttrsFor(stepOf(node)), NO_HISTORY);
  }

  function connectionRefusal(sourceCell, sourcePort, targetCell, targetPort, targetMagnet, edge) {
    if (!targetCell || !targetMagnet) return "Drop the connection on an input port (top of a step).";
    if (sourceCell === targetCell) return "A step cannot connect to itself.";
    const targetGroup = targetMagnet.getAttribute("port-group");
    if (targetGroup !== "in") return "Two outputs cannot be joined: connect an output to an input port (top of a step).";
    const duplicate = graph.getEdges().some((e) => e !== edge && e.getSourceCellId() === sourceCell.id
      && e.getTargetCellId() === targetCell.id && (e.getSourcePortId() || "out") === (sourcePort || "out"));
    if (duplicate) return `${stepOf(sourceCell).id} is already connected to ${stepOf(targetCell).id} from this port.`;
    if (reaches(targetCell.id, sourceCell.id, edge)) {
      return `Refused: connecting ${stepOf(sourceCell).id} → ${stepOf(targetCell).id} would make a cycle (workflows are DAGs).`;
    }
    return null;
  }

  function reaches(fromId, toId, ignoreEdge) {
    const out = {};
    for (const e of graph.getEdges()) {
      if (e === ignoreEdge || !e.getTargetCellId()) continue;
      (out[e.getSourceCellId()] = out[e.getSourceCellId()] || []).push(e.getTargetCellId());
    }
    const seen = new Set();
    const todo = [fromId];
    while (todo.length) {
      const id = todo.pop();
      if (id === toId) return true;
      if (seen.has(id)) continue;
      seen.add(id);
      (out[id] || []).forEach((next) => todo.push(next));
    }
    return false;
  }

  graph.on("edge:mouseup", ({ edge }) => {
    // X6 drops a refused connection silently; say why it was refused.
    if (refusal && (!edge || !edge.getTargetCellId())) toast(refusal, true);
    refusal = null;
  });
  graph.on("edge:connected", () => { refusal = null; });
  graph.on("blank:mouseup", () => { if (refusal) toast(refusal, true); refusal = null; });

  // ---- definition <-> graph -----------------------------------------------------------
  function currentDefinition() {
    // Creation order (z-index), so undo of a delete puts a step back where it was in the list.
    const nodes = graph.getNodes().slice().sort((a, b) => (a.getZIndex() || 0) - (b.getZIndex() || 0));
    const idOf = {};
    const steps = [];
    const layout = {};
    for (const node of nodes) {
      const step = stepOf(node);
      idOf[node.id] = step.id;
      steps.push(cleanStep(step));
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

  function cleanStep(step) {
    const copy = JSON.parse(JSON.stringify(step));
    if (copy.config && typeof copy.config === "object" && !Object.keys(copy.config).length) copy.config = {};
    return copy;
  }

  function loadDefinition(definition, { recordHistory = false } = {}) {
    performance.mark("sluice:load-start");
    for (const [key, value] of Object.entries(definition)) {
      if (!["steps", "edges", "layout", "trigger"].includes(key)) meta[key] = value;
    }
    for (const key of Object.keys(meta)) if (!(key in definition)) delete meta[key];
    trigger = definition.trigger || { type: "manual" };
    const layout = definition.layout || {};
    const steps = Array.isArray(definition.steps)
      ? definition.steps.filter((s) => s && typeof s === "object" && typeof s.id === "string") : [];
    const wantedEdges = (Array.isArray(definition.edges) ? definition.edges : [])
      .filter((e) => e && typeof e === "object");
    const missingLayout = steps.some((step) => !layout[step.id]);
    // Steps without a position: lay the whole workflow out with dagre before drawing it.
    const computed = missingLayout && steps.length ? computeLayout(steps, wantedEdges) : {};
    const place = (step, i) => layout[step.id] || computed[step.id] || { x: 80 + (i % 6) * 260, y: 80 + Math.floor(i / 6) * 120 };
    performance.mark("sluice:layout-done");
    suppressDirty += 1;
    if (recordHistory) {
      // An edit in the code pane or an import: apply only what changed, as one undoable step,
      // so positions, selection and the panel survive a one-word edit.
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
        cells.push(edgeConfig(source, edge.port, target));
      }
      history.disable();
      graph.resetCells(cells); // one reset event instead of one per cell: fast for big workflows
      history.enable();
    }
    performance.mark("sluice:cells-added");
    suppressDirty -= 1;
    if (!recordHistory) history.clean();
    $("#wf-name").value = meta.name || "";
    renderTriggerChip();
    onModelChanged({ fromLoad: !recordHistory });
  }

  function edgeConfig(source, port, target) {
    return graph.createEdge({ shape: "sluice-edge", zIndex: -1,
      source: { cell: source.id, port: port || "out" }, target: { cell: target.id, port: "in" } });
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
      graph.addCell(edgeConfig(nodeByStep[edge.from], edge.port, nodeByStep[edge.to]));
      present.add(k);
    }
  }

  // ---- auto-layout with dagre -----------------------------------------------------------
  // Works on plain data (steps and edges by id) so a workflow opened without a layout is
  // placed before any cell exists: no per-node move events, no second render.
  function computeLayout(steps, edges) {
    const g = new dagre.graphlib.Graph();
    // Top to bottom: the canvas beside palette and panel is about as tall as it is wide, and
    // chains (the common shape) stay readable at 1280x720 instead of shrinking to fit.
    g.setGraph({ rankdir: "TB", nodesep: 36, ranksep: 48, marginx: 40, marginy: 72 });
    g.setDefaultEdgeLabel(() => ({}));
    const typeOf = Object.fromEntries(steps.map((s) => [s.id, s.type]));
    const portRank = (edge) => ((typeByName[typeOf[edge.from]] || { ports: ["out"] }).ports).indexOf(edge.port || "out");
    const outgoing = {};
    const incomingCount = {};
    for (const e of edges) {
      if (!(e.from in typeOf) || !(e.to in typeOf)) continue;
      (outgoing[e.from] = outgoing[e.from] || []).push(e);
      incomingCount[e.to] = (incomingCount[e.to] || 0) + 1;
    }
    Object.values(outgoing).forEach((list) => list.sort((a, b) => portRank(a) - portRank(b)));
    // dagre keeps the first-seen order of siblings: feed it steps depth first, following each
    // step's output ports in their declared order, so a branch's "true" child lands left of
    // its "false" child and the edges do not cross.
    const ordered = [];
    const seen = new Set();
    const stack = [];
    const visit = (root) => {
      stack.push(root);
      while (stack.length) {
        const id = stack.pop();
        if (seen.has(id)) continue;
        seen.add(id);
        ordered.push(id);
        (outgoing[id] || []).slice().reverse().forEach((e) => stack.push(e.to));
      }
    };
    steps.filter((s) => !incomingCount[s.id]).forEach((s) => visit(s.id));
    steps.forEach((s) => visit(s.id)); // anything left (cycles are refused, but imports may have them)
    ordered.forEach((id) => g.setNode(id, { width: NODE_W, height: NODE_H }));
    ordered.forEach((id) => (outgoing[id] || []).forEach((e) => g.setEdge(e.from, e.to)));
    dagre.layout(g);
    // dagre may still flip siblings on ties: put the only-children of a multi-port step back
    // in port order (true left of false), keeping the x positions dagre chose for them.
    for (const id of ordered) {
      const children = (outgoing[id] || []).map((e) => e.to)
        .filter((child, i, all) => all.indexOf(child) === i && incomingCount[child] === 1);
      if (children.length < 2 || new Set(children.map((child) => g.node(child).y)).size !== 1) continue;
      const xs = children.map((child) => g.node(child).x).sort((a, b) => a - b);
      children.forEach((child, i) => { g.node(child).x = xs[i]; });
    }
    const positions = {};
    ordered.forEach((id) => {
      const p = g.node(id);
      positions[id] = { x: Math.round(p.x - NODE_W / 2), y: Math.round(p.y - NODE_H / 2) };
    });
    return positions;
  }

  function autoLayout({ recordHistory = true } = {}) {
    const definition = currentDefinition();
    const positions = computeLayout(definition.steps, definition.edges);
    const move = () => graph.getNodes().forEach((n) => {
      const p = positions[stepOf(n).id];
      if (p) n.position(p.x, p.y);
    });
    if (recordHistory) graph.batchUpdate("layout", move); else { history.disable(); move(); history.enable(); }
    fitToScreen();
  }

  const MIN_READABLE_SCALE = 0.5;
  function fitToScreen() {
    setTimeout(refreshMinimap, 0);
    // Leave room for the trigger chip (top), the problems list and the minimap (bottom).
    const padding = { top: 64, bottom: 72, left: 32, right: 32 };
    const box = graph.getContentBBox();
    const width = container.clientWidth - padding.left - padding.right;
    const height = container.clientHeight - padding.top - padding.bottom;
    if (!box.width || Math.min(width / box.width, height / box.height) >= MIN_READABLE_SCALE) {
      graph.zoomToFit({ padding, maxScale: 1 });
      return;
    }
    // Too big to fit legibly: keep the labels readable and show where the workflow starts;
    // the minimap shows the rest.
    graph.zoomTo(MIN_READABLE_SCALE);
    graph.positionContent("top", { padding });
  }

  // ---- change tracking, validation, code pane ----------------------------------------
  let validateTimer = null;
  let validateSeq = 0;
  let syncTimer = null;
  // Cheap bookkeeping at once; the O(steps) work (deriving the definition for the panel, the
  // code pane and validation) once things settle, so a drag or a load of hundreds of steps
  // does not rebuild the definition on every event.
  function onModelChanged({ fromLoad = false } = {}) {
    if (!fromLoad && !suppressDirty) setDirty(true);
    clearTimeout(syncTimer);
    syncTimer = setTimeout(syncViews, 120);
  }
  function updateEmptyHint() {
    $("#canvas-empty").hidden = graph.getNodes().length > 0;
  }
  function syncViews() {
    updateEmptyHint();
    refreshMinimap();
    const panelDefinition = document.querySelector("#panel input[name=definition]");
    if (panelDefinition) panelDefinition.value = JSON.stringify(currentDefinition());
    scheduleCodeRefresh();
    clearTimeout(validateTimer);
    validateTimer = setTimeout(validateNow, 150);
  }

  const MODEL_EVENTS = ["node:added", "node:removed", "edge:removed", "edge:connected", "node:change:data", "node:change:position"];
  MODEL_EVENTS.forEach((name) => graph.on(name, (args) => {
    if (args && args.options && args.options.ignoreHistory) return;
    if (name === "edge:removed" && args.edge && !args.edge.getTargetCellId()) return; // an abandoned drag
    if (name === "node:change:data") refreshNodeLook(args.node);
    onModelChanged();
  }));

  function setDirty(value) {
    dirty = value;
    $("#dirty-flag").hidden = !dirty;
  }
  $("#wf-name").addEventListener("input", (e) => { meta.name = e.target.value; onModelChanged(); });
  const slugInput = $("#wf-slug");
  if (slugInput) {
    // On a new workflow the slug follows the name until the author types one of their own.
    let slugTouched = false;
    const slugify = (text) => text.toLowerCase().normalize("NFKD").replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 100);
    slugInput.addEventListener("input", (e) => { slugTouched = true; meta.slug = e.target.value.trim(); onModelChanged(); });
    $("#wf-name").addEventListener("input", (e) => {
      if (slugTouched) return;
      slugInput.value = slugify(e.target.value);
      meta.slug = slugInput.value;
    });
  }

  async function validateNow() {
    const seq = ++validateSeq;
    const count = $("#problems-count");
    try {
      const answer = await postJSON(config.urls.validate, { definition: currentDefinition() });
      if (seq !== validateSeq) return; // a newer check is on its way
      if (!answer.ok) { count.textContent = "could not check"; return; }
      problems = answer.body.problems || [];
      showProblems();
    } catch (err) {
      count.textContent = "could not check (offline?)";
    }
  }

  function showProblems() {
    const byStep = {};
    for (const p of problems) if (p.step_id) (byStep[p.step_id] = byStep[p.step_id] || []).push(p);
    for (const node of graph.getNodes()) {
      const list = byStep[stepOf(node).id] || [];
      const errors = list.filter((p) => p.severity !== "warning");
      const colour = errors.length ? "#d92d20" : "#dc6803";
      node.setAttrs({
        badge: { visibility: list.length ? "visible" : "hidden", "data-problems": String(list.length),
          "data-errors": String(errors.length) },
        badgeDot: { fill: colour },
        badgeText: { text: errors.length ? String(errors.length) : "!" },
        tip: { text: list.map((p) => `${p.severity === "warning" ? "Warning" : "Error"}: ${p.message}`).join("\n") },
        body: { stroke: errors.length ? "#f04438" : statusStroke(node) },
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
      const msg = document.createElement("span");
      msg.className = "msg";
      msg.textContent = p.message;
      button.append(where, msg);
      button.addEventListener("click", () => focusProblem(p));
      li.append(button);
      list.append(li);
    }
    const triggerProblem = problems.some((p) => (p.path || "").startsWith("trigger"));
    const chip = $("#trigger-chip");
    if (chip) chip.classList.toggle("has-problem", triggerProblem);
  }

  function focusProblem(p) {
    const node = p.step_id ? nodeForStep(p.step_id) : null;
    if (node) {
      selection.reset([node]);
      graph.centerCell(node);
      openPanel(p.step_id);
    } else if ((p.path || "").startsWith("trigger")) {
      openPanel(null);
    }
  }
  $("#problems-toggle").addEventListener("click", () => {
    const box = $("#problems");
    const collapsed = box.dataset.collapsed === "true";
    box.dataset.collapsed = String(!collapsed);
    $("#problems-toggle").setAttribute("aria-expanded", String(collapsed));
  });

  // ---- toasts ----------------------------------------------------------------------------
  let toastTimer = null;
  function toast(message, bad = false) {
    const box = $("#canvas-toast");
    box.textContent = message;
    box.classList.toggle("bad", bad);
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 4000);
  }

  // ---- palette -------------------------------------------------------------------------
  function renderPalette(filter = "") {
    const groups = {};
    const q = filter.trim().toLowerCase();
    for (const t of stepTypes) {
      const hay = `${t.type} ${t.label} ${t.group} ${t.description}`.toLowerCase();
      if (q && !hay.includes(q)) continue;
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
        item.innerHTML = `<span class="type-icon ${GROUP_CLASS(t.group)}"><span class="icon" style="--icon:url('${STATIC}icons/${t.icon}.svg')"></span></span>
          <span><span class="label">${escapeHtml(t.label)}</span><span class="desc">${escapeHtml(t.description)}</span></span>`;
        item.addEventListener("mousedown", (e) => {
          if (e.button !== 0 || !config.canEdit) return;
          const node = graph.createNode(nodeConfig(newStep(t.type), 0, 0));
          dnd.start(node, e);
        });
        // Keyboard users add the step at the centre of the visible canvas.
        item.addEventListener("keydown", (e) => {
          if (e.key !== "Enter" && e.key !== " ") return;
          e.preventDefault();
          addStepAtCentre(t.type);
        });
        section.append(item);
      }
      root.append(section);
    }
  }
  function newStep(type) {
    const info = typeByName[type];
    const configValues = {};
    const schema = (info && info.config_schema) || {};
    for (const key of schema.required || []) {
      const prop = (schema.properties || {})[key] || {};
      if (prop.default !== undefined) configValues[key] = prop.default;
    }
    return { id: freshStepId(type), type, config: configValues };
  }
  function addStepAtCentre(type) {
    if (!config.canEdit) return;
    const area = graph.getGraphArea();
    const node = graph.addNode(nodeConfig(newStep(type), area.x + area.width / 2 - NODE_W / 2, area.y + area.height / 2 - NODE_H / 2));
    selection.reset([node]);
    openPanel(stepOf(node).id);
  }
  $("#palette-search").addEventListener("input", (e) => renderPalette(e.target.value));

  // ---- trigger chip --------------------------------------------------------------------
  function renderTriggerChip() {
    let chip = $("#trigger-chip");
    if (!chip) {
      chip = document.createElement("button");
      chip.type = "button";
      chip.id = "trigger-chip";
      chip.className = "trigger-chip";
      chip.addEventListener("click", () => openPanel(null));
      $(".canvas-wrap").append(chip);
    }
    const detail = trigger.type === "kafka" ? (trigger.topic || "no topic") : trigger.type === "schedule" ? (trigger.cron || "no schedule") : "";
    chip.innerHTML = `<span class="type-icon trigger"><span class="icon" style="--icon:url('${STATIC}icons/zap.svg')"></span></span>
      <span><strong>Trigger</strong> <span class="muted">${escapeHtml(trigger.type)}${detail ? " · " + escapeHtml(detail) : ""}</span></span>`;
  }
  $("#open-trigger").addEventListener("click", (e) => { e.preventDefault(); openPanel(null); });

  // ---- side panel (server-rendered form, htmx) ----------------------------------------
  function openPanel(stepId) {
    selectedStepId = stepId;
    const values = { definition: JSON.stringify(currentDefinition()) };
    if (stepId) values.step_id = stepId;
    return htmx.ajax("POST", config.urls.panel, { target: "#panel", swap: "innerHTML", values, headers: { "X-CSRFToken": csrf } });
  }
  function closePanel() {
    selectedStepId = null;
    $("#panel").innerHTML = `<div class="panel-empty"><span class="icon" style="--icon:url('${STATIC}icons/activity.svg')"></span>
      <p>Select a step to configure it, or open the <a href="#" data-open-trigger>trigger</a>.</p></div>`;
  }
  $("#panel").addEventListener("click", (e) => {
    if (e.target.matches("[data-open-trigger]")) { e.preventDefault(); openPanel(null); }
  });
  document.body.addEventListener("sluice:step-updated", (e) => {
    const { step_id: stepId, step } = e.detail;
    const node = nodeForStep(stepId);
    if (!node || !step) return;
    if (JSON.stringify(stepOf(node)) === JSON.stringify(step)) return;
    node.setData({ step }, { overwrite: true });
    if (step.id !== stepId && selectedStepId === stepId) selectedStepId = step.id; // renamed in the panel
  });
  document.body.addEventListener("sluice:trigger-updated", (e) => {
    if (JSON.stringify(trigger) === JSON.stringify(e.detail.trigger)) return;
    trigger = e.detail.trigger;
    renderTriggerChip();
    onModelChanged();
  });
  selection.on("selection:changed", ({ selected }) => {
    const nodes = selected.filter((c) => c.isNode());
    if (nodes.length === 1 && selected.length === 1) {
      const id = stepOf(nodes[0]).id;
      if (id !== selectedStepId) openPanel(id);
    } else if (!selected.length && selectedStepId) {
      closePanel();
    }
  });
  graph.on("node:change:data", ({ node, options }) => {
    // Undo/redo of a config change: show the panel again so it matches the step.
    if (options && (options.undo || options.redo) && stepOf(node).id === selectedStepId) openPanel(selectedStepId);
  });
  graph.on("node:removed", ({ node }) => { if (stepOf(node) && stepOf(node).id === selectedStepId) closePanel(); });

  // ---- keyboard and toolbar ------------------------------------------------------------
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
      const taken = stepIds();
      const cells = clipboard.paste({ offset: 32 }, graph);
      // Pasted steps are copies: give each a fresh step id so the definition stays valid.
      for (const cell of cells) {
        if (!cell.isNode()) continue;
        const step = JSON.parse(JSON.stringify(stepOf(cell)));
        taken.delete(step.id);
        step.id = freshStepId(step.type, new Set([...taken, ...stepIds()].filter((id) => id !== stepOf(cell).id)));
        taken.add(step.id);
        cell.setData({ step }, { overwrite: true });
      }
      selection.reset(cells);
    });
  }
  keyboard.bindKey(["ctrl+z", "meta+z"], (e) => { e.preventDefault(); undo(); });
  keyboard.bindKey(["ctrl+shift+z", "meta+shift+z", "ctrl+y"], (e) => { e.preventDefault(); redo(); });
  keyboard.bindKey(["ctrl+c", "meta+c"], () => { copySelected(); return false; });
  keyboard.bindKey(["ctrl+v", "meta+v"], () => { paste(); return false; });
  keyboard.bindKey(["delete", "backspace"], (e) => { e.preventDefault(); removeSelected(); });
  keyboard.bindKey(["ctrl+a", "meta+a"], (e) => { e.preventDefault(); selection.reset(graph.getCells()); });
  keyboard.bindKey(["ctrl+s", "meta+s"], (e) => { e.preventDefault(); openSave(); });
  keyboard.bindKey(["f"], () => fitToScreen());
  keyboard.bindKey(["l"], () => autoLayout());
  keyboard.bindKey(["=", "+"], () => graph.zoom(0.1));
  keyboard.bindKey(["-"], () => graph.zoom(-0.1));
  keyboard.bindKey(["escape"], () => selection.clean());
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
  keyboard.bindKey(["]"], () => selectNeighbour(1));
  keyboard.bindKey(["["], () => selectNeighbour(-1));
  const nudge = (dx, dy) => (e) => {
    const nodes = selection.getSelectedCells().filter((c) => c.isNode());
    if (!nodes.length || !config.canEdit) return;
    e.preventDefault();
    const step = e.shiftKey ? 40 : 8;
    graph.batchUpdate("nudge", () => nodes.forEach((n) => n.translate(dx * step, dy * step)));
  };
  [["left", -1, 0], ["right", 1, 0], ["up", 0, -1], ["down", 0, 1]].forEach(([key, dx, dy]) => {
    keyboard.bindKey([key, `shift+${key}`], nudge(dx, dy));
  });

  function updateHistoryButtons() {
    $("#btn-undo").disabled = !history.canUndo();
    $("#btn-redo").disabled = !history.canRedo();
  }
  history.on("change", updateHistoryButtons);
  history.on("undo", () => onModelChanged());
  history.on("redo", () => onModelChanged());
  $("#btn-undo").addEventListener("click", undo);
  $("#btn-redo").addEventListener("click", redo);
  $("#btn-zoom-in").addEventListener("click", () => graph.zoom(0.15));
  $("#btn-zoom-out").addEventListener("click", () => graph.zoom(-0.15));
  $("#btn-fit").addEventListener("click", () => fitToScreen());
  $("#btn-layout").addEventListener("click", () => autoLayout());

  // ---- JSON / YAML beside the canvas ---------------------------------------------------
  let codeFormat = "json";
  let codeTimer = null;
  let codeRefreshTimer = null;
  const codeText = $("#code-text");
  function codeOpen() { return !$("#code-pane").hidden; }
  function serialise(definition, format) {
    return format === "yaml" ? jsyaml.dump(definition, { noRefs: true, lineWidth: 100 }) : JSON.stringify(definition, null, 2);
  }
  function scheduleCodeRefresh() {
    if (!codeOpen() || document.activeElement === codeText) return;
    clearTimeout(codeRefreshTimer);
    codeRefreshTimer = setTimeout(refreshCode, 120);
  }
  function refreshCode() {
    if (document.activeElement === codeText) return;
    codeText.value = serialise(currentDefinition(), codeFormat);
    setCodeStatus("in sync", false);
  }
  function setCodeStatus(text, bad) {
    const status = $("#code-status");
    status.textContent = text;
    status.classList.toggle("bad", bad);
  }
  function parseText(text, format) {
    return format === "yaml" ? jsyaml.load(text) : JSON.parse(text);
  }
  codeText.addEventListener("input", () => {
    clearTimeout(codeTimer);
    codeTimer = setTimeout(() => {
      let parsed;
      try {
        parsed = parseText(codeText.value, codeFormat);
      } catch (err) {
        setCodeStatus(`not valid ${codeFormat.toUpperCase()}: ${err.message.split("\n")[0]}`, true);
        return;
      }
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
        setCodeStatus("the definition must be an object", true);
        return;
      }
      loadDefinition(parsed, { recordHistory: true });
      setDirty(true);
      setCodeStatus("applied to the canvas", false);
    }, 400);
  });
  codeText.addEventListener("blur", () => { if ($("#code-status").textContent !== "in sync") setTimeout(refreshCode, 500); });
  $("#btn-code").addEventListener("click", () => {
    const pane = $("#code-pane");
    pane.hidden = !pane.hidden;
    $(".side").classList.toggle("code-open", !pane.hidden);
    $("#btn-code").setAttribute("aria-pressed", String(!pane.hidden));
    if (!pane.hidden) refreshCode();
  });
  document.querySelectorAll(".code-tabs .tab").forEach((tab) => tab.addEventListener("click", () => {
    codeFormat = tab.dataset.format;
    document.querySelectorAll(".code-tabs .tab").forEach((t) => {
      t.classList.toggle("active", t === tab);
      t.setAttribute("aria-selected", String(t === tab));
    });
    refreshCode();
  }));

  // ---- import / export -------------------------------------------------------------------
  $("#btn-export").addEventListener("click", () => exportDefinition(codeFormat));
  function exportDefinition(format) {
    const definition = currentDefinition();
    const blob = new Blob([serialise(definition, format)], { type: format === "yaml" ? "application/yaml" : "application/json" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${definition.slug || "workflow"}.${format === "yaml" ? "yaml" : "json"}`;
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 0);
  }
  $("#btn-import").addEventListener("click", () => $("#import-file").click());
  $("#import-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (!file) return;
    const text = await file.text();
    let parsed;
    try {
      parsed = /\.ya?ml$/i.test(file.name) ? jsyaml.load(text) : JSON.parse(text);
    } catch (err) {
      toast(`Could not import ${file.name}: ${err.message.split("\n")[0]}`, true);
      return;
    }
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
      toast(`Could not import ${file.name}: it does not hold a workflow definition (an object)`, true);
      return;
    }
    if (config.slug && parsed.slug !== config.slug) {
      toast(`Imported ${file.name}; its slug '${parsed.slug}' was replaced by this workflow's '${config.slug}'.`);
      parsed.slug = config.slug;
    } else {
      toast(`Imported ${file.name}`);
    }
    if (slugInput && parsed.slug) slugInput.value = parsed.slug;
    loadDefinition(parsed, { recordHistory: true });
    setDirty(true);
  });

  // ---- save, conflicts, publish, versions ---------------------------------------------
  async function postJSON(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "application/json" },
      body: JSON.stringify(body),
    });
    if (response.redirected && new URL(response.url).pathname.startsWith("/accounts/login")) {
      // The session ended: say so instead of failing on the login page's HTML.
      return { ok: false, status: 401, body: { error: "You were signed out. Export your changes, sign in again in another tab, then retry." } };
    }
    let data = {};
    try { data = await response.json(); } catch (err) { data = { error: `The server answered ${response.status}` }; }
    return { ok: response.ok, status: response.status, body: data };
  }
  function problemText(body) {
    const list = (body.problems || []).slice(0, 6).map((p) => `${p.step_id || p.path || "workflow"}: ${p.message}`);
    return [body.error, ...list].filter(Boolean).join("\n");
  }

  const saveDialog = $("#dlg-save");
  function openSave() {
    if (!config.canEdit) return;
    $("#save-error").textContent = "";
    $("#save-message").value = "";
    saveDialog.showModal();
    $("#save-message").focus();
  }
  const saveButton = $("#btn-save");
  if (saveButton) saveButton.addEventListener("click", openSave);
  $("#form-save").addEventListener("submit", async (e) => {
    if (e.submitter && e.submitter.value === "cancel") return;
    e.preventDefault();
    const result = await save($("#save-message").value);
    if (result.ok) saveDialog.close();
    else if (result.status !== 409) $("#save-error").textContent = result.message;
    else saveDialog.close();
  });

  async function save(message) {
    const definition = currentDefinition();
    if (!config.slug) {
      const answer = await postJSON(config.urls.create, { definition, message });
      if (!answer.ok) return { ok: false, status: answer.status, message: problemText(answer.body) };
      setDirty(false);
      window.location.assign(answer.body.url);
      return { ok: true, created: true };
    }
    const answer = await postJSON(`${config.urls.base}save/`, { definition, message, base_version: version });
    if (answer.status === 409) {
      $("#conflict-text").textContent = answer.body.error;
      $("#dlg-conflict").showModal();
      return { ok: false, status: 409, message: answer.body.error };
    }
    if (!answer.ok) return { ok: false, status: answer.status, message: problemText(answer.body) };
    version = answer.body.version;
    setDirty(false);
    updateVersionPills();
    toast(`Saved version ${version}`);
    history.clean();
    return { ok: true, version };
  }
  function updateVersionPills() {
    const v = $("#version-status");
    v.textContent = version ? `v${version}${version === live ? "" : " draft"}` : "unsaved";
    v.className = "pill " + (version && version !== live ? "draft" : "none");
    const l = $("#live-status");
    l.textContent = live ? `v${live} live` : "not published";
    l.className = "pill " + (live ? "live" : "none");
  }
  $("#conflict-close").addEventListener("click", () => $("#dlg-conflict").close());
  $("#conflict-export").addEventListener("click", () => exportDefinition("json"));
  $("#conflict-reload").addEventListener("click", () => { setDirty(false); window.location.assign(config.urls.base); });

  const publishButton = $("#btn-publish");
  if (publishButton) publishButton.addEventListener("click", () => {
    const text = $("#publish-text");
    $("#publish-error").textContent = "";
    const confirm = $("#publish-confirm");
    if (dirty) {
      text.textContent = "You have unsaved changes. Save them as a new version first: only saved versions can be published.";
      confirm.disabled = true;
    } else {
      text.textContent = `Publish version ${version}? New runs will use it` + (live ? ` instead of version ${live}, which is live now.` : ". No version is live yet.");
      confirm.disabled = version === live;
      if (version === live) text.textContent = `Version ${version} is already live.`;
    }
    $("#dlg-publish").showModal();
  });
  $("#publish-cancel").addEventListener("click", () => $("#dlg-publish").close());
  $("#publish-confirm").addEventListener("click", async () => {
    const answer = await postJSON(`${config.urls.base}publish/`, { version });
    if (!answer.ok) { $("#publish-error").textContent = problemText(answer.body); return; }
    live = answer.body.live;
    updateVersionPills();
    $("#dlg-publish").close();
    toast(`Version ${live} is live`);
  });

  const versionsButton = $("#btn-versions");
  if (versionsButton) versionsButton.addEventListener("click", () => {
    $("#versions-body").innerHTML = '<span class="spinner"></span> Loading…';
    $("#dlg-versions").showModal();
    htmx.ajax("GET", `${config.urls.base}versions/`, { target: "#versions-body", swap: "innerHTML" });
  });
  $("#versions-close").addEventListener("click", () => $("#dlg-versions").close());
  $("#versions-body").addEventListener("click", async (e) => {
    const open = e.target.closest("[data-open-version]");
    const restore = e.target.closest("[data-restore-version]");
    if (open) {
      if (dirty && !window.confirm("Discard your unsaved changes and open this version?")) return;
      setDirty(false);
      window.location.assign(`${config.urls.base}?version=${open.dataset.openVersion}`);
    } else if (restore) {
      if (dirty && !window.confirm("Discard your unsaved changes and restore this version as a new draft?")) return;
      const answer = await postJSON(`${config.urls.base}versions/${restore.dataset.restoreVersion}/restore/`, {});
      if (!answer.ok) { toast(answer.body.error || "Could not restore", true); return; }
      setDirty(false);
      window.location.assign(config.urls.base);
    }
  });

  window.addEventListener("beforeunload", (e) => {
    if (!dirty) return;
    e.preventDefault();
    e.returnValue = "";
  });

  // ---- test runs -------------------------------------------------------------------------
  const testButton = $("#btn-test");
  if (testButton) testButton.addEventListener("click", () => {
    $("#test-error").textContent = "";
    $("#test-sample-status").textContent = trigger.type === "kafka" ? "" : "(the trigger is not a Kafka topic)";
    $("#test-sample").disabled = trigger.type !== "kafka" || !trigger.topic;
    $("#dlg-test").showModal();
  });
  $("#test-sample").addEventListener("click", async () => {
    const status = $("#test-sample-status");
    status.innerHTML = '<span class="spinner"></span> reading…';
    const response = await fetch(`${config.urls.base}sample-record/?topic=${encodeURIComponent(trigger.topic || "")}`,
      { credentials: "same-origin", headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({ error: `The server answered ${response.status}` }));
    if (!response.ok) { status.textContent = body.error; return; }
    $("#test-input").value = JSON.stringify(body.value, null, 2);
    $("#test-input").dataset.record = JSON.stringify(body.record);
    status.textContent = `offset ${body.record.offset} of ${body.record.topic}[${body.record.partition}]`;
  });
  $("#form-test").addEventListener("submit", async (e) => {
    if (e.submitter && e.submitter.value === "cancel") return;
    e.preventDefault();
    const errorBox = $("#test-error");
    let input;
    try { input = JSON.parse($("#test-input").value || "{}"); } catch (err) {
      errorBox.textContent = `The input is not valid JSON: ${err.message}`;
      return;
    }
    if (dirty || !version) {
      const saved = await save("Saved for a test run");
      if (!saved.ok) { errorBox.textContent = saved.status === 409 ? "" : saved.message; if (saved.status === 409) $("#dlg-test").close(); return; }
    }
    const record = $("#test-input").dataset.record ? JSON.parse($("#test-input").dataset.record) : null;
    const answer = await postJSON(`${config.urls.base}test-run/`, { version, input, record });
    if (!answer.ok) { errorBox.textContent = problemText(answer.body); return; }
    $("#dlg-test").close();
    watchRun(answer.body.run_id);
  });

  let runWatch = null;
  // History event kinds (wf.history, relayed by ws/runs/<id>/) and the step status they mean.
  const EVENT_STATUS = {
    step_started: "running", step_succeeded: "succeeded", step_failed: "failed", step_retrying: "retrying",
    step_waiting: "waiting", step_skipped: "skipped", step_cancelled: "cancelled",
  };
  const RUN_END = { run_succeeded: "succeeded", run_failed: "failed", run_cancelled: "cancelled" };
  function statusStroke(node) {
    const status = node.getData() && node.getData().runStatus;
    return status ? STATUS_COLOURS[status] : "#d0d5dd";
  }
  function paintStatus(node, status) {
    node.setData({ runStatus: status || null }, NO_HISTORY);
    node.setAttrs({
      status: { fill: status ? STATUS_COLOURS[status] : "transparent" },
      body: { stroke: status ? STATUS_COLOURS[status] : "#d0d5dd", strokeWidth: status ? 2.5 : 1.5, "data-status": status || "",
        strokeDasharray: status === "skipped" ? "5 4" : null },
    }, NO_HISTORY);
  }
  function watchRun(runId) {
    if (runWatch) runWatch.stop();
    graph.getNodes().forEach((n) => paintStatus(n, "pending"));
    const pane = $("#run-pane");
    pane.hidden = false;
    pane.innerHTML = `<h3>Test run <span class="pill pending" id="run-status">pending</span></h3>
      <div class="small muted mono">${escapeHtml(runId)} · <a href="${config.urls.runPage.replace("RUN_ID", encodeURIComponent(runId))}" target="_blank" rel="noopener">open in the monitor</a></div>
      <ul class="run-steps" id="run-steps"></ul>`;
    let timer = null;
    let pushTimer = null;
    let socket = null;
    let stopped = false;
    async function refresh() {
      const response = await fetch(config.urls.runStatus.replace("RUN_ID", runId), { credentials: "same-origin" });
      if (!response.ok) return;
      const run = await response.json();
      const badge = $("#run-status");
      badge.textContent = run.status;
      badge.className = "pill " + run.status;
      pane.dataset.status = run.status;
      const list = $("#run-steps");
      list.innerHTML = "";
      for (const node of graph.getNodes()) {
        const id = stepOf(node).id;
        const step = run.steps[id];
        paintStatus(node, step ? step.status : "pending");
        if (!step) continue;
        const li = document.createElement("li");
        li.dataset.stepId = id;
        li.innerHTML = `<span class="pill ${step.status}">${step.status}</span> <code>${escapeHtml(id)}</code>`;
        const detail = step.error || (step.output !== null && step.output !== undefined ? JSON.stringify(step.output, null, 2) : "");
        if (detail) {
          const pre = document.createElement("pre");
          pre.textContent = detail;
          li.append(pre);
        }
        list.append(li);
      }
      if (["succeeded", "failed", "cancelled"].includes(run.status)) stop();
    }
    function schedule(ms) {
      clearTimeout(timer);
      if (!stopped) timer = setTimeout(async () => { await refresh().catch(() => {}); schedule(ms); }, ms);
    }
    function stop() {
      stopped = true;
      clearTimeout(timer);
      if (socket) socket.close();
    }
    // Live history events push a refresh; polling stays on (slower) as a safety net.
    try {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      socket = new WebSocket(`${scheme}://${location.host}${config.urls.runWebsocket.replace("RUN_ID", runId)}`);
      socket.addEventListener("open", () => schedule(2000));
      socket.addEventListener("message", (message) => {
        // A history event paints its node at once; outputs follow from the run's projection.
        // The monitor's socket sends {"type": "history", "event": {kind, step_id, seq, ...}}.
        let event = null;
        try { event = JSON.parse(message.data); } catch (err) { return; }
        event = event && event.type === "history" ? event.event : null;
        const status = event && EVENT_STATUS[event.kind];
        const node = status && event.step_id ? nodeForStep(event.step_id) : null;
        if (node) paintStatus(node, status);
        if (event && RUN_END[event.kind]) {
          const badge = $("#run-status");
          badge.textContent = RUN_END[event.kind];
          badge.className = "pill " + RUN_END[event.kind];
        }
        clearTimeout(pushTimer);
        pushTimer = setTimeout(() => refresh().catch(() => {}), 150);
      });
      socket.addEventListener("close", () => { if (!stopped) schedule(500); });
    } catch (err) { socket = null; }
    schedule(500);
    runWatch = { stop, runId };
  }

  // ---- helpers and start ---------------------------------------------------------------
  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  renderPalette();
  loadDefinition(initial);
  updateEmptyHint(); // now, not after the views' debounce: "ready" means what is shown is right
  setDirty(false);
  updateVersionPills();
  updateHistoryButtons();
  if (graph.getNodes().length) fitToScreen();
  (window.requestIdleCallback || ((f) => setTimeout(f, 200)))(addMinimap, { timeout: 1500 });

  // For tests and the benchmark: a read-only window on the editor.
  window.sluiceEditor = {
    graph, history, selection, clipboard, currentDefinition, autoLayout, nodeForStep, openPanel,
    get problems() { return problems; }, get dirty() { return dirty; }, get version() { return version; },
    get live() { return live; },
    readyAt: performance.now(),
  };
  graph.once("render:done", () => { window.sluiceEditor.renderedAt = performance.now(); });
  document.documentElement.dataset.editorReady = "1";
})();
