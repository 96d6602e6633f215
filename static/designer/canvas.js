/* The canvas: the X6 graph (UMD global `X6`) with its step and edge shapes, its plugins
 * (history for undo/redo, selection, snaplines, clipboard, keyboard, minimap), the rules for
 * drawing connections, how a step looks, and fitting the view.
 *
 * Each node carries its step as node data `step`; changes that are views and not edits
 * (status colours, problem badges, labels derived from data) are flagged `ignoreHistory`
 * and kept out of undo. X6's UMD bundle lacks graph.undo() & co: the plugin instances are
 * called directly (FIELD-NOTES).
 */

import { config, typeByName, STATIC, $, toast } from "./page.js";
import { STATUS_COLOURS } from "../monitor/status.js";

const X6 = window.X6;

export const NODE_W = 216;
export const NODE_H = 60;
export const NO_HISTORY = { ignoreHistory: true };
export const groupClass = (group) => "g-" + String(group || "").toLowerCase().replace(/[^a-z]+/g, "-");
const GROUP_FILL = { "g-logic": "#fff3e6", "g-data": "#e9f8f1", "g-integrations": "#eef2ff", "g-waiting": "#f3edff", "g-control": "#fdeceb" };
const IDLE_STROKE = "#d0d5dd";
const LABEL_FONT = { size: 13, weight: 600, family: "Inter, system-ui, sans-serif" };
const SUB_FONT = { size: 11, weight: 400, family: "ui-monospace, Menlo, monospace" };
const TEXT_X = 54; // right of the icon
const TEXT_WIDTH = NODE_W - TEXT_X - 22; // left of the status dot

// ---- text that fits its step -------------------------------------------------------------
const measuring = document.createElement("canvas").getContext("2d");
const fitted = new Map();
let measuringFont = "";
/** `text`, cut with an ellipsis where it would be wider than `width` pixels in `font`. */
function fitText(text, font, width) {
  const key = `${font.size}|${text}`;
  if (fitted.has(key)) return fitted.get(key);
  const css = `${font.weight} ${font.size}px ${font.family}`;
  if (measuringFont !== css) { measuring.font = css; measuringFont = css; } // parsing a font is the costly part
  let result = text;
  if (measuring.measureText(text).width > width) {
    let low = 0;
    let high = text.length;
    while (low < high) { // the longest prefix that fits with the ellipsis
      const mid = Math.ceil((low + high) / 2);
      if (measuring.measureText(text.slice(0, mid) + "…").width <= width) low = mid; else high = mid - 1;
    }
    result = text.slice(0, low).trimEnd() + "…";
  }
  if (fitted.size > 5000) fitted.clear();
  fitted.set(key, result);
  return result;
}

// ---- shapes --------------------------------------------------------------------------------
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
    body: { refWidth: "100%", refHeight: "100%", rx: 10, ry: 10, fill: "#fff", stroke: IDLE_STROKE, strokeWidth: 1.5 },
    iconBg: { x: 12, y: 14, width: 32, height: 32, rx: 8, ry: 8, fill: "#eef2ff" },
    icon: { x: 20, y: 22, width: 16, height: 16 },
    label: { refX: 0, refY: 0, x: TEXT_X, y: 24, fontSize: LABEL_FONT.size, fontWeight: LABEL_FONT.weight, fill: "#1b2130",
      textAnchor: "start", textVerticalAnchor: "middle", fontFamily: LABEL_FONT.family },
    sub: { refX: 0, refY: 0, x: TEXT_X, y: 41, fontSize: SUB_FONT.size, fill: "#667085", textAnchor: "start",
      textVerticalAnchor: "middle", fontFamily: SUB_FONT.family },
    status: { refX: "100%", x: -14, y: 30, r: 5, fill: "transparent" },
    badge: { visibility: "hidden", transform: `translate(${NODE_W - 34}, 0)`, cursor: "pointer" },
    badgeDot: { r: 10, fill: "#d92d20", stroke: "#fff", strokeWidth: 2 },
    // refX/refY 0: the inherited rect shape centres every <text> on the node (refX 0.5),
    // which put the count 108 px right of its dot, white on the canvas.
    badgeText: { refX: 0, refY: 0, x: 0, y: 0, fontSize: 11, fontWeight: 700, fill: "#fff", textAnchor: "middle",
      textVerticalAnchor: "middle", fontFamily: LABEL_FONT.family },
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

// ---- steps on nodes ------------------------------------------------------------------------
export const stepOf = (node) => (node && node.getData() ? node.getData().step : null);

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
  const typeLabel = info ? info.label : `${step.type} (unknown)`;
  return {
    label: { text: fitText(step.name || step.id, LABEL_FONT, TEXT_WIDTH) },
    // A named step shows its id (what expressions use) below the name; an unnamed one shows
    // its id as the name. The icon says the type too, so the type label is cut first.
    sub: { text: fitText(step.name ? `${step.id} · ${typeLabel}` : typeLabel, SUB_FONT, TEXT_WIDTH) },
    icon: { "xlink:href": `${STATIC}icons/${info ? info.icon : "box"}.svg` },
    iconBg: { fill: GROUP_FILL[groupClass(info && info.group)] || "#eef2ff" },
    body: { "data-step-id": step.id },
  };
}

export function nodeConfig(step, x, y) {
  return { shape: "sluice-step", x, y, data: { step }, attrs: nodeAttrsFor(step), ports: { items: portsFor(step.type) } };
}

/** The border a node has when no problem marks it: its test-run status colour, if any. */
export function restingStroke(node) {
  const status = node.getData() && node.getData().runStatus;
  return status ? STATUS_COLOURS[status].stroke : IDLE_STROKE;
}

/** Colour a node by a test run's step status (null: back to normal). Not an edit: no undo. */
export function paintStatus(node, status) {
  const colour = status ? STATUS_COLOURS[status].stroke : null;
  node.setData({ runStatus: status || null }, NO_HISTORY);
  node.setAttrs({
    status: { fill: colour || "transparent" },
    body: { stroke: colour || IDLE_STROKE, strokeWidth: status ? 2.5 : 1.5, "data-status": status || "",
      strokeDasharray: status === "skipped" ? "5 4" : null },
  }, NO_HISTORY);
}

// ---- the graph -----------------------------------------------------------------------------
/**
 * The graph and its plugins on #canvas. `stepCount` decides virtual rendering: big workflows
 * draw only the steps in view (plus a margin), small ones draw everything.
 */
export function createCanvas({ stepCount }) {
  const container = $("#canvas");
  let refusal = null; // why the connection being drawn is refused, shown to the user

  const graph = new X6.Graph({
    container,
    autoResize: true,
    grid: { visible: true, size: 8, type: "dot", args: { color: "#d5d9e0", thickness: 1 } },
    background: { color: "#f8f9fb" },
    virtual: { enabled: stepCount > 80, margin: 160 },
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
      validateConnection({ sourceCell, targetCell, sourcePort, targetMagnet, edge }) {
        const reason = connectionRefusal(sourceCell, sourcePort, targetCell, targetMagnet, edge);
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
  [history, selection, snapline, clipboard, keyboard].forEach((plugin) => graph.use(plugin));

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
  let minimapReady = false;
  // Without X6's Scroller the minimap refits its content only on a model reset and never moves
  // its viewport frame after steps move: refit both once edits settle.
  function refreshMinimap() {
    if (!minimapReady || !minimap.targetGraph) return;
    minimap.targetGraph.zoomToFit();
    minimap.updateViewport();
  }
  /** The minimap joins once the canvas is drawn: it must not delay the first paint. */
  function addMinimap() {
    graph.use(minimap);
    minimapReady = true;
    refreshMinimap();
  }

  const nodeForStep = (stepId) => graph.getNodes().find((n) => stepOf(n) && stepOf(n).id === stepId) || null;

  function connectionRefusal(sourceCell, sourcePort, targetCell, targetMagnet, edge) {
    if (!targetCell || !targetMagnet) return "Drop the connection on an input port (top of a step).";
    if (sourceCell === targetCell) return "A step cannot connect to itself.";
    if (targetMagnet.getAttribute("port-group") !== "in") {
      return "Two outputs cannot be joined: connect an output to an input port (top of a step).";
    }
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
  // A step edited (in the panel, the code pane, by undo) gets its title and icon redrawn.
  graph.on("node:change:data", ({ node, options }) => {
    if (!(options && options.ignoreHistory)) node.setAttrs(nodeAttrsFor(stepOf(node)), NO_HISTORY);
  });

  const edgeConfig = (source, port, target) => graph.createEdge({ shape: "sluice-edge", zIndex: -1,
    source: { cell: source.id, port: port || "out" }, target: { cell: target.id, port: "in" } });

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

  /**
   * Where a step added without a mouse should go: the centre of the view, or the nearest free
   * spot around it, so steps added one after another do not stack on one spot.
   */
  function freeSpotNearCentre() {
    const area = graph.getGraphArea();
    const centre = { x: area.x + area.width / 2 - NODE_W / 2, y: area.y + area.height / 2 - NODE_H / 2 };
    const boxes = graph.getNodes().map((n) => n.getBBox());
    const free = (x, y) => !boxes.some((b) => x < b.x + b.width + 16 && x + NODE_W + 16 > b.x
      && y < b.y + b.height + 16 && y + NODE_H + 16 > b.y);
    const stepX = NODE_W + 24;
    const stepY = NODE_H + 32;
    const spots = [];
    for (let dy = -6; dy <= 6; dy += 1) {
      for (let dx = -6; dx <= 6; dx += 1) spots.push({ dx, dy, distance: Math.hypot(dx * stepX, dy * stepY) });
    }
    // Nearest first; on a tie below before above, right before left (reading order).
    spots.sort((a, b) => a.distance - b.distance || b.dy - a.dy || b.dx - a.dx);
    for (const { dx, dy } of spots) {
      const x = Math.round(centre.x + dx * stepX);
      const y = Math.round(centre.y + dy * stepY);
      if (free(x, y)) return { x, y };
    }
    return centre;
  }

  return {
    graph, history, selection, clipboard, keyboard, container,
    nodeForStep, edgeConfig, fitToScreen, refreshMinimap, addMinimap, freeSpotNearCentre,
  };
}
