"""The example workflows (examples/*.json, loaded by `manage.py up`) as a new user first sees them.

Ports sit at the top (in) and bottom (out) of a step, so a workflow must read top to bottom:
every connection leaves a step downwards and no connection runs behind another step. Every
title and subtitle stays inside its step's border. Screenshots: designer-example-<slug>.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from designer import services
from tests.browser.test_designer_editor import PASSWORD, wait_editor
from tests.live import login, screenshot

pytestmark = [pytest.mark.browser]

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.json"))

# Every edge's path, sampled along its length, against every node it does not connect; every
# text of a node against the node's border. All in screen pixels, as the user sees them.
GEOMETRY = """
() => {
  const ed = window.sluiceEditor;
  const rectOf = (el) => { const r = el.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; };
  const nodes = ed.graph.getNodes().map((node) => {
    const view = ed.graph.findViewByCell(node);
    const body = view.container.querySelector('rect[data-step-id]');
    return {id: node.id, step: node.getData().step.id, body: rectOf(body),
            texts: [...view.container.querySelectorAll('text')].filter((t) => t.textContent)
                   .map((t) => ({text: t.textContent, box: rectOf(t), port: !!t.closest('.x6-port')}))};
  });
  const edges = ed.graph.getEdges().map((edge) => {
    const path = ed.graph.findViewByCell(edge).container.querySelector('path[stroke]');
    const matrix = path.getScreenCTM();
    const length = path.getTotalLength();
    const points = [];
    for (let i = 1; i < 40; i += 1) {
      const p = path.getPointAtLength(length * i / 40);
      points.push({x: matrix.a * p.x + matrix.c * p.y + matrix.e, y: matrix.b * p.x + matrix.d * p.y + matrix.f});
    }
    return {source: edge.getSourceCellId(), target: edge.getTargetCellId(), points};
  });
  return {nodes, edges};
}
"""


@pytest.fixture
def ada(transactional_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("ada", "ada@example.com", PASSWORD)


def inside(point, box, margin=0.0) -> bool:
    return (box["x"] + margin < point["x"] < box["x"] + box["w"] - margin
            and box["y"] + margin < point["y"] < box["y"] + box["h"] - margin)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_reads_top_to_bottom_with_nothing_overflowing(live_server, ada, page, path):
    definition = json.loads(path.read_text())
    services.create_workflow(definition, ada, message="example")
    page.set_viewport_size({"width": 1280, "height": 720})
    login(page, live_server, "ada", PASSWORD)
    page.goto(f"{live_server.url}/designer/{definition['slug']}/")
    wait_editor(page)
    page.wait_for_selector("#problems-count:not(:has-text('checking'))")
    page.wait_for_timeout(200)  # the minimap joins after the first paint
    screenshot(page, f"designer-example-{definition['slug']}")
    geometry = page.evaluate(GEOMETRY)

    by_cell = {node["id"]: node for node in geometry["nodes"]}
    for edge in geometry["edges"]:
        source, target = by_cell[edge["source"]], by_cell[edge["target"]]
        # Out of the bottom of one step, into the top of the next one below it.
        assert target["body"]["y"] > source["body"]["y"] + source["body"]["h"], (source["step"], target["step"])
        for node in geometry["nodes"]:
            if node["id"] in (edge["source"], edge["target"]):
                continue
            behind = [p for p in edge["points"] if inside(p, node["body"])]
            assert not behind, f"{source['step']} -> {target['step']} runs behind {node['step']}"
    for node in geometry["nodes"]:
        body = node["body"]
        for text in node["texts"]:
            if text["port"]:
                continue  # port labels ("true", "approve") sit beside their port on purpose
            box = text["box"]
            assert box["x"] >= body["x"] and box["x"] + box["w"] <= body["x"] + body["w"], \
                f"{node['step']}: {text['text']!r} overflows its step"


def test_auto_layout_keeps_a_branch_in_port_order_with_what_hangs_below(static_page):
    """true left of false, and each side's own steps stay under it (not under the other side)."""
    from orchestrator.steps import describe_all

    definition = json.loads((EXAMPLES[0].parent / "order-fulfilment.json").read_text())
    ports = {t["type"]: t["ports"] for t in describe_all()}
    # Either order of the branch's edges in the file: the layout must not depend on it.
    for edges in (definition["edges"], definition["edges"][::-1]):
        layout = static_page.evaluate("""async ([steps, edges, ports]) => {
            const { computeLayout } = await import('/static/designer/layout.js');
            return computeLayout(steps, edges, { width: 216, height: 60, portsOf: (t) => ports[t] || ['out'] });
        }""", [definition["steps"], edges, ports])
        assert layout["reserve"]["x"] < layout["reject"]["x"]  # has_items: true left, false right
        assert layout["ship"]["x"] == layout["reserve"]["x"]  # reserve -> ship stays in its column
        assert layout["check"]["y"] < layout["has_items"]["y"] < layout["reserve"]["y"] < layout["ship"]["y"]
