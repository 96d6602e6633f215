"""The editor, driven like a user would in Debian's chromium against a real daphne.

One long story (the issue's "Must show"): drag four steps from the palette and connect them,
configure one in the side panel, enter a bad expression and see the node's badge, fix it,
undo and redo, auto-layout, save, publish, start a test run and see every node turn
succeeded, executed by a real runner (`manage.py runner`) and projected by a real bridge
(`manage.py bridge`) on the embedded broker. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.live import login, screenshot
from tests.runtime_support import ManageProcess

pytestmark = [pytest.mark.browser, pytest.mark.kafka]

# Playwright's sync API keeps an asyncio loop running in this thread; the ORM calls below are
# plain synchronous test code, not code inside that loop.

PASSWORD = "correct-horse-battery"


@pytest.fixture
def author(transactional_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("ada", "ada@example.com", PASSWORD)


# ---- page helpers ------------------------------------------------------------------------
def wait_editor(page):
    page.wait_for_selector("html[data-editor-ready='1']")


def step_ids(page) -> list[str]:
    return page.evaluate("() => window.sluiceEditor.currentDefinition().steps.map(s => s.id)")


def definition(page) -> dict:
    return page.evaluate("() => window.sluiceEditor.currentDefinition()")


def drag_from_palette(page, step_type: str, x: float, y: float) -> None:
    """Press on a palette entry and drag it to (x, y) inside the canvas, like a mouse user."""
    item = page.locator(f".palette-item[data-type='{step_type}']")
    item.scroll_into_view_if_needed()
    box = item.bounding_box()
    page.mouse.move(box["x"] + 30, box["y"] + box["height"] / 2)
    page.mouse.down()
    canvas = page.locator("#canvas").bounding_box()
    page.mouse.move(canvas["x"] + x, canvas["y"] + y, steps=12)
    page.mouse.up()


def port_centre(page, step_id: str, port: str) -> tuple[float, float]:
    box = page.evaluate(
        """([stepId, port]) => {
            const ed = window.sluiceEditor;
            const view = ed.graph.findViewByCell(ed.nodeForStep(stepId));
            const r = view.container.querySelector(`[port="${port}"]`).getBoundingClientRect();
            return {x: r.x + r.width / 2, y: r.y + r.height / 2};
        }""", [step_id, port])
    return box["x"], box["y"]


def connect(page, source: str, target: str, port: str = "out") -> None:
    sx, sy = port_centre(page, source, port)
    tx, ty = port_centre(page, target, "in")
    page.mouse.move(sx, sy)
    page.mouse.down()
    page.mouse.move((sx + tx) / 2, (sy + ty) / 2 + 20, steps=8)
    page.mouse.move(tx, ty, steps=8)
    page.mouse.up()


def edges(page) -> list[tuple]:
    return [(e["from"], e.get("port", "out"), e["to"]) for e in definition(page)["edges"]]


def press_node(page, step_id: str) -> None:
    """Click a node on its title, away from its ports, whatever the zoom."""
    box = page.locator(f"#canvas rect[data-step-id='{step_id}']").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.25)


def click_node(page, step_id: str) -> None:
    press_node(page, step_id)
    page.wait_for_selector(f".panel-form[data-step-id='{step_id}']")


def badge_errors(page, step_id: str) -> int:
    return page.evaluate(
        """(stepId) => {
            const ed = window.sluiceEditor;
            const badge = ed.graph.findViewByCell(ed.nodeForStep(stepId)).container.querySelector('[data-errors]');
            return badge && badge.getAttribute('visibility') !== 'hidden' ? Number(badge.getAttribute('data-errors')) : 0;
        }""", step_id)


def wait_for(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# ---- the story ---------------------------------------------------------------------------
def test_author_builds_saves_publishes_and_test_runs_a_workflow(kafka, live_server, author, page):
    console_errors = []
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    page.set_viewport_size({"width": 1280, "height": 720})
    login(page, live_server, "ada", PASSWORD)

    page.goto(f"{live_server.url}/workflows/new/")
    wait_editor(page)
    assert page.locator("#canvas-empty").is_visible()
    page.locator("#wf-name").type("Big orders")
    assert page.locator("#wf-slug").input_value() == "big-orders"  # the slug follows the name

    # Drag four steps from the palette.
    drag_from_palette(page, "transform", 140, 150)
    drag_from_palette(page, "branch", 420, 150)
    drag_from_palette(page, "transform", 140, 330)
    drag_from_palette(page, "delay", 420, 330)
    wait_for(lambda: len(step_ids(page)) == 4, what="four steps on the canvas")
    assert step_ids(page) == ["transform_1", "branch_1", "transform_2", "delay_1"]
    assert not page.locator("#canvas-empty").is_visible()

    # Connect them: transform_1 -> branch_1 -(true)-> transform_2 -> delay_1.
    connect(page, "transform_1", "branch_1")
    connect(page, "branch_1", "transform_2", port="true")
    connect(page, "transform_2", "delay_1")
    wait_for(lambda: len(edges(page)) == 3, what="three connections")
    assert set(edges(page)) == {("transform_1", "out", "branch_1"), ("branch_1", "true", "transform_2"),
                                ("transform_2", "out", "delay_1")}

    # A connection that would close a cycle is refused, with the reason shown.
    connect(page, "delay_1", "transform_1")
    toast = page.locator("#canvas-toast")
    toast.wait_for(state="visible")
    assert "cycle" in toast.inner_text()
    assert len(edges(page)) == 3

    # Configure the branch in the side panel: a bad condition first, then a good one.
    click_node(page, "branch_1")
    condition = page.locator("#fld-config\\.condition")
    condition.fill("trigger.total >")
    condition.press("Tab")
    page.wait_for_selector(".field[data-field='config.condition'] .field-errors")
    wait_for(lambda: badge_errors(page, "branch_1") > 0, what="an error badge on branch_1")
    screenshot(page, "designer-editor-bad-expression")
    condition = page.locator("#fld-config\\.condition")
    condition.fill("trigger.total > 100")
    condition.press("Tab")
    wait_for(lambda: badge_errors(page, "branch_1") == 0, what="the badge on branch_1 to clear")
    assert page.locator(".field[data-field='config.condition'] .field-errors").count() == 0
    steps = {s["id"]: s for s in definition(page)["steps"]}
    assert steps["branch_1"]["config"]["condition"] == "trigger.total > 100"
    # The delay needs a number of seconds: set it through its form too.
    click_node(page, "delay_1")
    seconds = page.locator("#fld-config\\.seconds")
    seconds.fill("0")
    seconds.press("Tab")
    wait_for(lambda: {s["id"]: s for s in definition(page)["steps"]}["delay_1"]["config"].get("seconds") in (0, "0"),
             what="the delay's seconds in the model")

    # Undo and redo: delete a step, undo brings it (and its connection) back, redo removes it again.
    page.locator("#canvas").click(position={"x": 20, "y": 400})  # clear the selection
    press_node(page, "delay_1")
    page.locator("#canvas").focus()
    page.keyboard.press("Delete")
    wait_for(lambda: "delay_1" not in step_ids(page), what="delay_1 deleted")
    assert len(edges(page)) == 2
    page.keyboard.press("Control+z")
    wait_for(lambda: "delay_1" in step_ids(page), what="undo to restore delay_1")
    assert len(edges(page)) == 3
    page.keyboard.press("Control+Shift+z")
    wait_for(lambda: "delay_1" not in step_ids(page), what="redo to delete delay_1 again")
    page.keyboard.press("Control+z")
    wait_for(lambda: "delay_1" in step_ids(page) and len(edges(page)) == 3, what="undo again")

    # Auto-layout: top to bottom in the order of the connections, one rank per step here.
    before = definition(page)["layout"]
    page.click("#btn-layout")
    layout = wait_for(lambda: definition(page)["layout"] != before and definition(page)["layout"], what="a new layout")
    assert layout["transform_1"]["y"] < layout["branch_1"]["y"] < layout["transform_2"]["y"] < layout["delay_1"]["y"]
    assert len({position["x"] for position in layout.values()}) == 1  # a chain stands in one column

    wait_for(lambda: page.locator("#problems-count").inner_text() in ("No problems",) or
             "error" not in page.locator("#problems-count").inner_text(), what="no errors left")
    page.evaluate("document.querySelector('#canvas-toast').hidden = true")
    screenshot(page, "designer-editor")

    # Save (creates the workflow), then publish.
    page.click("#btn-save")
    page.fill("#save-message", "First cut")
    page.click("#save-confirm")
    page.wait_for_url(f"{live_server.url}/designer/big-orders/")
    wait_editor(page)
    assert step_ids(page) == ["transform_1", "branch_1", "transform_2", "delay_1"]
    page.click("#btn-publish")
    assert "Publish version 1" in page.locator("#publish-text").inner_text()
    page.click("#publish-confirm")
    page.wait_for_selector("#live-status:has-text('v1 live')")

    from designer.models import Workflow

    workflow = Workflow.objects.get(slug="big-orders")
    assert workflow.live_version.number == 1
    assert workflow.live_version.message == "First cut"

    # Test run, executed by a real runner and projected by a real bridge.
    sockets = []  # the run's live history arrives over the monitor's websocket

    def on_websocket(ws):
        frames = []
        ws.on("framereceived", lambda payload: frames.append(payload))
        sockets.append((ws.url, frames))

    page.on("websocket", on_websocket)
    runner = ManageProcess("runner", "--instance-id", "designer-browser-test")
    bridge = ManageProcess("bridge")
    try:
        page.click("#btn-test")
        page.fill("#test-input", json.dumps({"total": 150, "id": "o-1"}))
        page.click("#test-start")
        page.wait_for_selector("#run-pane:not([hidden])")
        for step_id in ("transform_1", "branch_1", "transform_2", "delay_1"):
            page.wait_for_selector(f"#canvas rect[data-step-id='{step_id}'][data-status='succeeded']", timeout=60000)
        page.wait_for_selector("#run-status:has-text('succeeded')", timeout=30000)
        screenshot(page, "designer-editor-test-run")
    finally:
        runner_log = runner.stop()
        bridge_log = bridge.stop()
    run_sockets = [(url, frames) for url, frames in sockets if "/ws/runs/" in url]
    assert run_sockets, f"no run websocket opened: {sockets}"
    messages = [json.loads(frame) for _, frames in run_sockets for frame in frames]
    kinds = {m["event"]["kind"] for m in messages if m.get("type") == "history"}
    assert {"step_succeeded", "run_succeeded"} <= kinds, kinds
    assert "Traceback" not in runner_log, runner_log[-3000:]
    assert "Traceback" not in bridge_log, bridge_log[-3000:]
    assert not console_errors, console_errors
