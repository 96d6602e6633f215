"""The editor's tools in chromium: the list, conflicts, versions and diff, the JSON/YAML pane,
import/export, copy/paste, keyboard-only adding, problems that select their node, and the
guard against leaving with unsaved changes.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
import yaml

from designer import services
from tests.browser.test_designer_editor import (
    PASSWORD,
    click_node,
    definition,
    edges,
    press_node,
    step_ids,
    wait_editor,
    wait_for,
)
from tests.live import login, screenshot

pytestmark = [pytest.mark.browser]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def sample(slug="orders", **overrides) -> dict:
    data = {
        "slug": slug, "name": "Order fulfilment", "trigger": {"type": "kafka", "topic": "orders"},
        "steps": [
            {"id": "check", "type": "transform", "config": {"output": {"ok": "{{ trigger.total > 0 }}"}}},
            {"id": "charge", "type": "http", "config": {"method": "POST", "url": "https://pay.example/charge"}},
            {"id": "route", "type": "branch", "config": {"condition": "steps.charge.output.status == 200"}},
            {"id": "ship", "type": "kafka_produce", "config": {"topic": "shipments", "value": "{{ trigger }}"}},
            {"id": "refund", "type": "fail", "config": {"message": "payment refused"}},
        ],
        "edges": [
            {"from": "check", "to": "charge"}, {"from": "charge", "to": "route"},
            {"from": "route", "port": "true", "to": "ship"}, {"from": "route", "port": "false", "to": "refund"},
        ],
    }
    data.update(overrides)
    return data


@pytest.fixture
def ada(transactional_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("ada", "ada@example.com", PASSWORD)


@pytest.fixture
def orders(ada):
    return services.create_workflow(sample(), ada, message="first").workflow


def open_editor(page, live_server, slug="orders"):
    page.goto(f"{live_server.url}/designer/{slug}/")
    wait_editor(page)
    page.wait_for_selector("#problems-count:not(:has-text('checking'))")


def test_workflow_list(live_server, ada, page):
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(f"{live_server.url}/")  # not signed in: the login page
    assert "/accounts/login/" in page.url
    screenshot(page, "designer-login")
    login(page, live_server, "ada", PASSWORD)
    page.goto(f"{live_server.url}/")
    assert page.locator(".empty h2").inner_text() == "No workflows yet"
    screenshot(page, "designer-list-empty")
    services.create_workflow(sample(), ada, message="first")
    services.create_workflow(sample("refunds", name="Refunds", trigger={"type": "manual"}), ada)
    page.goto(f"{live_server.url}/")
    assert page.locator("#workflow-rows tr").count() == 2
    screenshot(page, "designer-list")
    page.fill("input[name=q]", "refu")
    page.wait_for_function("document.querySelectorAll('#workflow-rows tr').length === 1")
    assert page.locator("#workflow-rows tr").get_attribute("data-slug") == "refunds"
    page.click("#workflow-rows tr[data-slug=refunds] a.wf-name")
    wait_editor(page)
    assert step_ids(page) == ["check", "charge", "route", "ship", "refund"]


def test_second_save_is_refused_with_a_way_to_reload(live_server, ada, orders, browser):
    first = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    second = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    for page in (first, second):
        login(page, live_server, "ada", PASSWORD)
        open_editor(page, live_server)
    first.fill("#wf-name", "Orders by Ada")
    first.click("#btn-save")
    first.click("#save-confirm")
    first.wait_for_selector("#version-status:has-text('v2')")
    second.fill("#wf-name", "Orders by Bob")
    second.click("#btn-save")
    second.click("#save-confirm")
    dialog = second.locator("#dlg-conflict")
    dialog.wait_for(state="visible")
    assert "saved as version 2" in dialog.inner_text() and "nothing was saved" in dialog.inner_text()
    screenshot(second, "designer-conflict")
    # Nothing lost: the second editor still holds its own change until the user chooses.
    assert second.locator("#wf-name").input_value() == "Orders by Bob"
    with second.expect_navigation():
        second.click("#conflict-reload")
    wait_editor(second)
    assert second.locator("#wf-name").input_value() == "Orders by Ada"
    assert second.locator("#version-status").inner_text().startswith("v2")
    first.context.close()
    second.context.close()


def test_versions_diff_and_restore(live_server, ada, orders, page):
    changed = sample()
    changed["steps"][1]["config"]["url"] = "https://pay.example/v2/charge"
    services.save_version(orders, changed, ada, message="new payment URL", base_version=1)
    login(page, live_server, "ada", PASSWORD)
    open_editor(page, live_server)
    page.click("#btn-versions")
    page.wait_for_selector(".versions-table tr[data-version='2']")
    page.click("#diff-go")
    page.wait_for_selector(".diff-list")
    assert "step charge changed: config.url" in page.locator(".diff-list").inner_text()
    screenshot(page, "designer-versions")
    with page.expect_navigation():
        page.click("[data-restore-version='1']")
    wait_editor(page)
    assert page.locator("#version-status").inner_text().startswith("v3")
    steps = {s["id"]: s for s in definition(page)["steps"]}
    assert steps["charge"]["config"]["url"] == "https://pay.example/charge"


def test_code_pane_stays_in_sync_both_ways(live_server, ada, orders, page):
    page.set_viewport_size({"width": 1280, "height": 720})
    login(page, live_server, "ada", PASSWORD)
    open_editor(page, live_server)
    page.click("#btn-code")
    text = page.locator("#code-text")
    shown = json.loads(text.input_value())
    assert [s["id"] for s in shown["steps"]] == ["check", "charge", "route", "ship", "refund"]
    # Text -> canvas: remove a step and its edge in the JSON.
    shown["steps"] = [s for s in shown["steps"] if s["id"] != "refund"]
    shown["edges"] = [e for e in shown["edges"] if e["to"] != "refund"]
    text.fill(json.dumps(shown, indent=2))
    wait_for(lambda: "refund" not in step_ids(page), what="the canvas to follow the JSON")
    assert page.locator("#code-status").inner_text() == "applied to the canvas"
    # Broken text is reported, not applied.
    text.fill("{ not json")
    page.wait_for_selector("#code-status.bad")
    assert len(step_ids(page)) == 4
    # Canvas -> text, in YAML: undo brings the step back and the YAML shows it.
    page.locator("#canvas").click(position={"x": 30, "y": 500})
    page.click(".code-tabs .tab[data-format=yaml]")
    page.keyboard.press("Control+z")
    wait_for(lambda: "refund" in step_ids(page), what="undo of the JSON edit")
    wait_for(lambda: "refund" in [s["id"] for s in (yaml.safe_load(text.input_value()) or {}).get("steps", [])],
             what="the YAML to follow the canvas")
    screenshot(page, "designer-code-pane")


def test_export_and_import_files(live_server, ada, orders, page, tmp_path):
    login(page, live_server, "ada", PASSWORD)
    open_editor(page, live_server)
    with page.expect_download() as download_info:
        page.click("#btn-export")
    exported = json.loads(open(download_info.value.path()).read())
    assert download_info.value.suggested_filename == "orders.json"
    assert [s["id"] for s in exported["steps"]] == ["check", "charge", "route", "ship", "refund"]
    imported = sample(slug="something-else")
    imported["steps"] = imported["steps"][:2]
    imported["edges"] = imported["edges"][:1]
    path = tmp_path / "two-steps.yaml"
    path.write_text(yaml.safe_dump(imported))
    page.set_input_files("#import-file", str(path))
    wait_for(lambda: step_ids(page) == ["check", "charge"], what="the imported steps")
    assert definition(page)["slug"] == "orders"  # an import cannot rename the workflow
    assert "replaced by this workflow's 'orders'" in page.locator("#canvas-toast").inner_text()
    assert page.locator("#dirty-flag").is_visible()


def test_keyboard_copy_paste_and_palette(live_server, ada, orders, page):
    login(page, live_server, "ada", PASSWORD)
    open_editor(page, live_server)
    press_node(page, "charge")
    page.wait_for_selector(".panel-form[data-step-id='charge'] #fld-config\\.headers")
    screenshot(page, "designer-http-panel")
    page.keyboard.press("Control+c")
    page.keyboard.press("Control+v")
    wait_for(lambda: len(step_ids(page)) == 6, what="the pasted step")
    pasted = step_ids(page)[-1]
    assert pasted == "http_1"
    assert {s["id"]: s for s in definition(page)["steps"]}[pasted]["config"]["url"] == "https://pay.example/charge"
    # Keyboard only: focus a palette entry and press Enter.
    page.focus(".palette-item[data-type='delay']")
    page.keyboard.press("Enter")
    wait_for(lambda: "delay_1" in step_ids(page), what="a delay added from the keyboard")
    page.wait_for_selector(".panel-form[data-step-id='delay_1']")
    # Rubberband over empty canvas then Delete removes what it caught; undo restores it.
    before = len(edges(page))
    page.locator("#canvas").focus()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    wait_for(lambda: step_ids(page) == [], what="everything deleted")
    page.wait_for_selector("#canvas-empty:not([hidden])")
    page.keyboard.press("Control+z")
    wait_for(lambda: len(step_ids(page)) == 7 and len(edges(page)) == before, what="undo of the delete")


def test_clicking_a_problem_selects_its_node(live_server, ada, orders, page):
    login(page, live_server, "ada", PASSWORD)
    open_editor(page, live_server)
    click_node(page, "route")
    field = page.locator("#fld-config\\.condition")
    field.fill("steps.charge.output.status ==")
    field.press("Tab")
    problem = page.locator("#problems-list button[data-step-id='route']")
    problem.wait_for()
    page.locator("#canvas").click(position={"x": 30, "y": 500})
    page.wait_for_selector(".panel-empty")
    problem.click()
    page.wait_for_selector(".panel-form[data-step-id='route'] .field-errors")
    selected = page.evaluate("() => window.sluiceEditor.selection.getSelectedCells().map(c => c.getData().step.id)")
    assert selected == ["route"]


def test_leaving_with_unsaved_changes_asks_first(live_server, ada, orders, page):
    login(page, live_server, "ada", PASSWORD)
    open_editor(page, live_server)
    page.click("#wf-name")
    page.keyboard.type(" changed")  # a real gesture: chromium only asks after one
    seen = []

    def on_dialog(dialog):
        seen.append(dialog.type)
        dialog.accept()

    page.on("dialog", on_dialog)
    page.goto(f"{live_server.url}/")  # leaving: chromium asks, the handler says "leave"
    assert seen == ["beforeunload"]
    assert page.url == f"{live_server.url}/"


def test_refused_connections_say_why(live_server, ada, orders, page):
    from tests.browser.test_designer_editor import connect, port_centre

    login(page, live_server, "ada", PASSWORD)
    open_editor(page, live_server)
    toast = page.locator("#canvas-toast")
    connect(page, "check", "charge")  # exists already
    toast.wait_for(state="visible")
    assert "already connected" in toast.inner_text()
    # Output onto output: "join two outputs" is refused.
    sx, sy = port_centre(page, "check", "out")
    tx, ty = port_centre(page, "ship", "out")
    page.mouse.move(sx, sy)
    page.mouse.down()
    page.mouse.move(tx, ty, steps=10)
    page.mouse.up()
    page.wait_for_function("document.querySelector('#canvas-toast').textContent.includes('outputs cannot be joined')")
    # Starting at an input port is refused too.
    x, y = port_centre(page, "ship", "in")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 40, y + 60, steps=5)
    page.mouse.up()
    page.wait_for_function("document.querySelector('#canvas-toast').textContent.includes('Start a connection at an output')")
    assert len(edges(page)) == 4


def test_rubberband_palette_search_and_keyboard_walk(live_server, ada, orders, page):
    login(page, live_server, "ada", PASSWORD)
    open_editor(page, live_server)
    boxes = [page.locator(f"#canvas rect[data-step-id='{sid}']").bounding_box() for sid in ("check", "charge")]
    left = min(b["x"] for b in boxes) - 24
    top = min(b["y"] for b in boxes) - 12
    right = max(b["x"] + b["width"] for b in boxes) + 24
    bottom = max(b["y"] + b["height"] for b in boxes) + 12
    page.mouse.move(left, top)
    page.mouse.down()
    page.mouse.move(right, bottom, steps=10)
    page.mouse.up()
    selected = page.evaluate(
        "() => window.sluiceEditor.selection.getSelectedCells().filter(c => c.isNode()).map(c => c.getData().step.id)")
    assert sorted(selected) == ["charge", "check"]
    # The palette filters as you type and says so when nothing matches.
    page.fill("#palette-search", "kafka")
    from orchestrator import steps

    expected = [t["type"] for t in steps.describe_all()
                if "kafka" in f"{t['type']} {t['label']} {t['group']} {t['description']}".lower()]
    shown = page.locator(".palette-item").evaluate_all("items => items.map(i => i.dataset.type)")
    assert shown == expected and "kafka_produce" in shown and "transform" not in shown
    page.fill("#palette-search", "zzzz")
    assert "No step type matches" in page.locator(".palette-groups").inner_text()
    # ] walks to the next step and opens its panel; arrows move it.
    page.locator("#canvas").click(position={"x": 30, "y": 500})
    page.keyboard.press("Escape")
    page.keyboard.press("]")
    page.wait_for_selector(".panel-form[data-step-id='check']")
    page.keyboard.press("]")
    page.wait_for_selector(".panel-form[data-step-id='charge']")
    before = definition(page)["layout"]["charge"]
    page.keyboard.press("Shift+ArrowRight")
    wait_for(lambda: definition(page)["layout"]["charge"]["x"] == before["x"] + 40, what="the nudge")


@pytest.mark.kafka
def test_test_run_input_from_the_newest_trigger_record(kafka, live_server, ada, page, settings):
    from confluent_kafka import Producer

    topic = f"orders-in-{uuid.uuid4().hex[:8]}"  # a workflow's own topic: never under Sluice's prefix
    services.create_workflow(sample(trigger={"type": "kafka", "topic": topic}), ada)
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS})
    for total in (10, 250):
        producer.produce(topic, key="o-1", value=json.dumps({"id": "o-1", "total": total}))
    assert producer.flush(10) == 0
    login(page, live_server, "ada", PASSWORD)
    open_editor(page, live_server)
    page.click("#btn-test")
    page.click("#test-sample")
    page.wait_for_function("document.querySelector('#test-sample-status').textContent.includes('offset 1')")
    assert json.loads(page.locator("#test-input").input_value()) == {"id": "o-1", "total": 250}
    screenshot(page, "designer-test-run-dialog")
    page.click("#dlg-test button[value=cancel]")
    page.click("#trigger-chip")
    page.wait_for_selector(".panel-form[data-kind=trigger] #fld-trigger\\.filter")
    assert "record" in page.locator(".context-names").inner_text()
    screenshot(page, "designer-trigger-panel")


def test_renaming_a_step_in_the_panel_keeps_its_connections(live_server, ada, orders, page):
    login(page, live_server, "ada", PASSWORD)
    open_editor(page, live_server)
    click_node(page, "refund")
    field = page.locator("#fld-step\\.id")
    field.fill("refund_order")
    field.press("Tab")
    page.wait_for_selector(".panel-form[data-step-id='refund_order']")
    wait_for(lambda: "refund_order" in step_ids(page), what="the renamed step")
    assert ("route", "false", "refund_order") in edges(page)
    assert page.locator("#canvas rect[data-step-id='refund_order']").count() == 1
    page.locator("#canvas").click(position={"x": 30, "y": 500})  # Ctrl+Z in a text field undoes typing
    page.keyboard.press("Control+z")
    wait_for(lambda: "refund" in step_ids(page), what="undo of the rename")
