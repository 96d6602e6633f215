/* Auto-layout with dagre (the UMD global `dagre`), top to bottom like the steps' ports.
 *
 * Works on plain data (steps and edges by id), so a workflow opened without a layout is placed
 * before any cell exists (no per-node move events, no second render), and the run page lays
 * out its read-only graph with the same rules.
 */

/**
 * {stepId: {x, y}} (top-left corners) for `steps` [{id, type}] and `edges` [{from, to, port}];
 * `portsOf(type)` lists a step type's output ports in order, so a branch's "true" child lands
 * left of its "false" child.
 */
export function computeLayout(steps, edges, { width, height, portsOf, nodesep = 36, ranksep = 48, marginx = 40, marginy = 72 }) {
  const g = new dagre.graphlib.Graph();
  // Top to bottom: the canvas beside palette and panel is about as tall as it is wide, and
  // chains (the common shape) stay readable at 1280x720 instead of shrinking to fit.
  g.setGraph({ rankdir: "TB", nodesep, ranksep, marginx, marginy });
  g.setDefaultEdgeLabel(() => ({}));
  const typeOf = Object.fromEntries(steps.map((s) => [s.id, s.type]));
  const portRank = (edge) => (portsOf(typeOf[edge.from]) || ["out"]).indexOf(edge.port || "out");
  const outgoing = {};
  const incomingCount = {};
  for (const e of edges) {
    if (!(e.from in typeOf) || !(e.to in typeOf)) continue;
    (outgoing[e.from] = outgoing[e.from] || []).push(e);
    incomingCount[e.to] = (incomingCount[e.to] || 0) + 1;
  }
  Object.values(outgoing).forEach((list) => list.sort((a, b) => portRank(a) - portRank(b)));
  // dagre keeps the first-seen order of siblings: feed it steps depth first, following each
  // step's output ports in their declared order, so a branch's children do not cross.
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
  ordered.forEach((id) => g.setNode(id, { width, height }));
  ordered.forEach((id) => (outgoing[id] || []).forEach((e) => g.setEdge(e.from, e.to)));
  dagre.layout(g);
  // dagre may still flip siblings on ties: put the only-children of a multi-port step back
  // in port order (true left of false), keeping the x positions dagre chose for them, and
  // move what hangs below each child only (its own subtree) along with it.
  const parentsOf = {};
  for (const id of ordered) (outgoing[id] || []).forEach((e) => { (parentsOf[e.to] = parentsOf[e.to] || []).push(id); });
  const subtreeOf = (root) => { // the steps reached only through `root`
    const inside = new Set([root]);
    const queue = [root];
    while (queue.length) {
      for (const e of outgoing[queue.shift()] || []) {
        if (inside.has(e.to) || !parentsOf[e.to].every((p) => inside.has(p))) continue;
        inside.add(e.to);
        queue.push(e.to);
      }
    }
    inside.delete(root);
    return inside;
  };
  for (const id of ordered) {
    const children = (outgoing[id] || []).map((e) => e.to)
      .filter((child, i, all) => all.indexOf(child) === i && incomingCount[child] === 1);
    if (children.length < 2 || new Set(children.map((child) => g.node(child).y)).size !== 1) continue;
    const xs = children.map((child) => g.node(child).x).sort((a, b) => a - b);
    const moves = children.map((child, i) => [child, xs[i] - g.node(child).x]).filter(([, dx]) => dx !== 0);
    for (const [child, dx] of moves) {
      g.node(child).x += dx;
      subtreeOf(child).forEach((below) => { g.node(below).x += dx; });
    }
  }
  const positions = {};
  ordered.forEach((id) => {
    const p = g.node(id);
    positions[id] = { x: Math.round(p.x - width / 2), y: Math.round(p.y - height / 2) };
  });
  return positions;
}
