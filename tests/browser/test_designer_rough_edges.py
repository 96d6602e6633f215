"""Rough edges of the editor, each driven in chromium as a user meets it: pasting a step just
added, adding steps from the keyboard, Ctrl+S from the code pane, the python step's handler
field, the trigger panel's fields, a webhook's token shown on publish and rotated, and panel
changes made right after a swap or while an answer is on its way.
"""

from __future__ import annotations

import json
import os

import pytest

from designer import services
from triggers import webhooks
from tests.browser.test_designer_editor import PASSWORD, definition, step_ids, wait_editor, wait_for
from tests.browser.test_designer_tools import open_editor, sample
from tests.live import login, screenshot

pytestmark = [pytest.mark.browser]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def ada(transactional_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("ada", "ada@example.com", PASSWORD)


@pytest.fixture
def orders(ada):
    return services.create_workflow(sample(), ada, message="first").workflow


def node_boxes(page) -> dict:
    return page.evaluate("""() => Object.fromEntries(window.sluiceEditor.graph.getNodes()
        .map((n) => [n.getData().step.id, n.getBBox()]).map(([id, b]) => [id, {x: b.x, y: b.y, w: b.width, h: b.height}]))""")


def overlap(a, b) -> bool:
    return a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]


def test_steps_added_from_the_keyboard_spread_out_and_pasted_copies_get_ids_of_their_own(live_server, ada, page):
    login(page, live_server, "ada", PASSWORD)
    page.goto(f"{live_server.url}/workflows/new/")
    wait_editor(page)
    for _ in range(3):
        page.focus(".palette-item[data-type='transform']")
        page.keyboard.press("Enter")
    wait_for(lambda: step_ids(page) == ["transform_1", "transform_2", "transform_3"], what="three steps")
    boxes = node_boxes(page)
    assert not any(overlap(boxes[a], boxes[b]) for a in boxes for b in boxes if a < b), boxes

    # Copy the step just added (selected, its panel open) and paste it twice.
    page.wait_for_selector(".panel-form[data-step-id='transform_3']")
    page.locator("#canvas").focus()
    page.keyboard.press("Control+c")
    page.keyboard.press("Control+v")
    wait_for(lambda: len(step_ids(page)) == 4, what="the first copy")
    page.keyboard.press("Control+v")
    wait_for(lambda: len(step_ids(page)) == 5, what="the second copy")
    ids = step_ids(page)
    assert len(set(ids)) == 5 and ids[:3] == ["transform_1", "transform_2", "transform_3"], ids
    page.wait_for_selector("#problems-count:not(:has-text('checking'))")
    wait_for(lambda: not any(p.get("code") == "duplicate-id" for p in page.evaluate("window.sluiceEditor.problems")),
             what="no duplicate ids")
    screenshot(page, "designer-keyboard-and-paste")


def test_ctrl_s_saves_from_the_code_pane_and_the_panel(live_server, ada, orders, page):
    login(page, live_server, "ada", PASSWORD)
    open_editor(page, live_server)
    page.click("#btn-code")
    text = page.locator("#code-text")
    shown = json.loads(text.input_value())
    shown["name"] = "Orders, typed in the code pane"
    text.fill(json.dumps(shown, indent=2))
    page.keyboard.press("Control+s")  # at once: the pane's pending edit goes first
    page.wait_for_selector("#dlg-save[open]")
    assert definition(page)["name"] == "Orders, typed in the code pane"
    page.fill("#save-message", "renamed")
    page.click("#save-confirm")
    page.wait_for_selector("#version-status:has-text('v2')")
    assert services.get_version(orders).definition["name"] == "Orders, typed in the code pane"

    # Text in the code pane that cannot be applied is not saved behind the author's back.
    text.fill("{ broken")
    page.keyboard.press("Control+s")
    page.wait_for_selector("#canvas-toast:has-text('Not saved')")
    assert page.locator("#dlg-save[open]").count() == 0
    page.click("#btn-code")  # closed: its text no longer stands for the canvas

    # From a field of the side panel too.
    page.locator("#canvas rect[data-step-id='charge']").click()
    page.wait_for_selector(".panel-form[data-step-id='charge']")
    page.focus("#fld-step\\.name")
    page.keyboard.type("Charge the card")
    page.keyboard.press("Control+s")
    page.wait_for_selector("#dlg-save[open]")
    wait_for(lambda: {s["id"]: s for s in definition(page)["steps"]}["charge"].get("name") == "Charge the card",
             what="the panel's edit in the model")
    page.click("#save-confirm")
    page.wait_for_selector("#version-status:has-text('v3')")
    saved = {s["id"]: s for s in services.get_version(orders).definition["steps"]}
    assert saved["charge"]["name"] == "Charge the card"


def test_python_handler_is_a_name_and_the_trigger_panel_has_every_field(live_server, ada, page):
    python = sample(steps=[{"id": "call", "type": "python", "config": {"handler": "demo.echo"}}], edges=[])
    services.create_workflow(python, ada)
    login(page, live_server, "ada", PASSWORD)
    open_editor(page, live_server)
    page.locator("#canvas rect[data-step-id='call']").click()
    page.wait_for_selector(".panel-form[data-step-id='call'] #fld-config\\.handler")
    assert page.locator(".field[data-field='config.handler'] .kind-tag").count() == 0
    assert page.locator(".field[data-field='config.input'] .kind-tag").inner_text().strip() == "JSON"

    page.click("#trigger-chip")
    page.wait_for_selector(".panel-form[data-kind=trigger] #fld-trigger\\.start_from")
    page.select_option("#fld-trigger\\.start_from", "earliest")
    wait_for(lambda: definition(page)["trigger"].get("start_from") == "earliest", what="start_from in the model")
    page.select_option("#fld-trigger\\.type", "schedule")
    page.wait_for_selector("#fld-trigger\\.timezone")
    page.fill("#fld-trigger\\.cron", "0 8 * * 1-5")
    page.fill("#fld-trigger\\.timezone", "Europe/Paris")
    page.fill("#fld-trigger\\.input", '{"report": "daily"}')
    page.locator("#fld-trigger\\.input").blur()
    wait_for(lambda: definition(page)["trigger"] == {"type": "schedule", "cron": "0 8 * * 1-5",
                                                     "timezone": "Europe/Paris", "input": {"report": "daily"}},
             what="the schedule trigger in the model")
    page.select_option("#fld-trigger\\.type", "webhook")
    page.wait_for_selector("#fld-trigger\\.filter")
    page.fill("#fld-trigger\\.filter", "trigger.action == 'opened'")
    page.locator("#fld-trigger\\.filter").blur()
    wait_for(lambda: definition(page)["trigger"] == {"type": "webhook", "filter": "trigger.action == 'opened'"},
             what="the webhook trigger in the model")
    page.wait_for_selector(".webhook-call")
    assert f"{live_server.url}/hooks/orders/" in page.locator(".webhook-call").inner_text()
    screenshot(page, "designer-trigger-panel-webhook")

    # A token now, from the panel: shown once, in a dialog with the URL and a curl line.
    page.click("[data-rotate-webhook]")
    dialog = page.locator("#dlg-webhook")
    dialog.wait_for(state="visible")
    token = page.locator("#webhook-token").input_value()
    assert webhooks.token_matches("orders", token)
    assert token in page.locator("#webhook-curl").input_value()
    screenshot(page, "designer-webhook-token")
    page.click("#webhook-close")
    page.wait_for_selector(".webhook-call [data-rotate-webhook='replace']")  # the panel knows one exists now
    page.on("dialog", lambda d: d.accept())  # "the current token stops working": yes
    page.click("[data-rotate-webhook]")
    dialog.wait_for(state="visible")
    newer = page.locator("#webhook-token").input_value()
    assert newer != token and webhooks.token_matches("orders", newer) and not webhooks.token_matches("orders", token)


@pytest.mark.kafka
def test_publishing_a_webhook_workflow_shows_its_token_once(kafka, live_server, ada, page):
    services.create_workflow(sample(slug="hooked", trigger={"type": "webhook"}), ada)
    login(page, live_server, "ada", PASSWORD)
    open_editor(page, live_server, "hooked")
    page.click("#btn-publish")
    page.click("#publish-confirm")
    page.wait_for_selector("#dlg-webhook[open]")
    token = page.locator("#webhook-token").input_value()
    assert webhooks.token_matches("hooked", token)
    assert page.locator("#webhook-url").input_value() == f"{live_server.url}/hooks/hooked/"
    assert page.locator("#webhook-curl").input_value().startswith(f"curl -X POST '{live_server.url}/hooks/hooked/'")
    page.click("#webhook-close")
    page.wait_for_selector("#live-status:has-text('v1 live')")


def test_the_trigger_panel_keeps_a_change_made_right_after_a_swap_or_while_an_answer_is_on_its_way(
        live_server, orders, page):
    """Two moments a quick author meets: a change a few milliseconds after the panel's form was
    swapped in (htmx used to wire the new form only when it settled, 20 ms later, and dropped
    it), and text typed into one field while the answer for another is on its way (the answer
    used to put back the values its request carried)."""
    login(page, live_server, "ada", PASSWORD)
    open_editor(page, live_server)
    page.click("#trigger-chip")
    page.wait_for_selector(".panel-form[data-kind=trigger] #fld-trigger\\.start_from")

    # 1. Right after the next swap (5 ms, as a script can and a quick hand nearly can), pick "earliest".
    page.evaluate("""() => document.getElementById('panel').addEventListener('htmx:afterSwap', () => setTimeout(() => {
        const select = document.getElementById('fld-trigger.start_from');
        select.value = 'earliest';
        select.dispatchEvent(new Event('change', { bubbles: true }));
    }, 5), { once: true })""")
    topic = page.locator("#fld-trigger\\.topic")
    topic.fill("orders-eu")
    topic.press("Tab")
    wait_for(lambda: definition(page)["trigger"].get("start_from") == "earliest",
             what="the change made right after the swap in the model")
    assert definition(page)["trigger"]["topic"] == "orders-eu"

    # 2. While the topic's answer is on its way, the author types a filter (no change event yet).
    page.wait_for_function("() => !document.querySelector('#panel .htmx-request')")
    page.evaluate("""() => {
        window.panelAnswers = 0;
        const panel = document.getElementById('panel');
        panel.addEventListener('htmx:beforeRequest', () => setTimeout(() => {
            const filter = document.getElementById('fld-trigger.filter');
            filter.value = 'trigger.total > 10';
            filter.dispatchEvent(new Event('input', { bubbles: true }));
        }, 0), { once: true });
        panel.addEventListener('htmx:afterRequest', () => { window.panelAnswers += 1; });
    }""")
    topic = page.locator("#fld-trigger\\.topic")
    topic.fill("orders-us")
    topic.press("Tab")
    wait_for(lambda: page.evaluate("window.panelAnswers") >= 1, what="the topic's answer")
    wait_for(lambda: definition(page)["trigger"].get("topic") == "orders-us", what="the new topic in the model")
    assert page.locator("#fld-trigger\\.filter").input_value() == "trigger.total > 10"
    page.locator("#fld-trigger\\.filter").dispatch_event("change")  # as leaving the field does
    wait_for(lambda: definition(page)["trigger"].get("filter") == "trigger.total > 10", what="the filter in the model")
    assert definition(page)["trigger"]["topic"] == "orders-us"
