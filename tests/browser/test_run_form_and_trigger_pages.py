"""Starting runs with a form made from the input_schema, and pausing a trigger, from the pages
where a Kestra user looks for them: the workflow list, the editor and the monitor's runs of a
workflow. Real daphne, real Chromium, the real broker (starts and pauses go to Kafka).

Screenshots: run-form-*.png, trigger-paused-*.png.
"""

from __future__ import annotations

import json
import uuid

import pytest

from designer import services
from designer.models import Workflow
from monitor.models import AuditEntry, Run
from tests.browser.test_designer_editor import wait_editor, wait_for
from tests.live import login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.kafka]

PASSWORD = "pw-" + uuid.uuid4().hex
SCHEMA = {
    "type": "object", "required": ["order_id", "amount"],
    "properties": {
        "order_id": {"type": "string", "title": "Order id", "minLength": 1},
        "amount": {"type": "number", "title": "Amount", "minimum": 0, "description": "In the order's currency"},
        "currency": {"title": "Currency", "enum": ["EUR", "USD"], "default": "EUR"},
        "express": {"type": "boolean", "title": "Express shipping"},
        "customer": {"type": "object", "title": "Customer", "required": ["id"],
                     "properties": {"id": {"type": "integer", "title": "Customer id"},
                                    "tier": {"enum": ["gold", "silver"]}}},
        "tags": {"type": "array", "title": "Tags", "items": {"type": "string"}},
        "lines": {"type": "array", "title": "Lines", "items": {"type": "object"}},
    },
}


@pytest.fixture
def world(kafka, live_server):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("ada", "ada@example.com", PASSWORD)
    order = {"slug": "take-order", "name": "Take an order", "trigger": {"type": "manual"}, "input_schema": SCHEMA,
             "edges": [], "steps": [{"id": "echo", "type": "transform", "config": {"output": "{{ trigger }}"}}]}
    services.publish(services.create_workflow(order, user).workflow, 1, user)
    feed = {"slug": "feed", "name": "Feed", "trigger": {"type": "kafka", "topic": f"feed-{uuid.uuid4().hex[:6]}"},
            "edges": [], "steps": [{"id": "echo", "type": "transform", "config": {"output": "{{ trigger }}"}}]}
    services.publish(services.create_workflow(feed, user).workflow, 1, user)
    return user


def field(page, path: str):
    return page.locator(f"#run-dialog [data-path='{path}']")


def test_the_run_button_builds_a_form_from_the_schema_and_shows_the_servers_paths(world, live_server, page):
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_viewport_size({"width": 1280, "height": 1000})
    login(page, live_server, "ada", PASSWORD)
    page.goto(f"{live_server.url}/")
    page.click("tr[data-slug='take-order'] [data-run-workflow]")
    dialog = page.locator("#run-dialog")
    dialog.wait_for(state="visible")
    # One widget per kind; the default is filled in; arrays of objects fall back to JSON.
    assert field(page, "input.order_id").locator("input[type=text]").count() == 1
    assert field(page, "input.amount").locator("input[type=number]").count() == 1
    assert field(page, "input.currency").locator("select").input_value() == '"EUR"'
    assert field(page, "input.express").locator("input[type=checkbox]").count() == 1
    assert field(page, "input.customer.id").locator("input[type=number]").count() == 1
    assert field(page, "input.customer.tier").locator("select").count() == 1
    assert field(page, "input.lines").locator("textarea").count() == 1
    field(page, "input.order_id").locator("input").fill("o-7")
    field(page, "input.amount").locator("input").fill("-3")  # the schema says minimum 0: the server says so
    field(page, "input.customer.id").locator("input").fill("42")
    field(page, "input.customer.tier").locator("select").select_option('"gold"')
    field(page, "input.tags").locator("[data-add-item]").click()
    field(page, "input.tags").locator("li input").nth(0).fill("vip")
    field(page, "input.tags").locator("[data-add-item]").click()
    field(page, "input.tags").locator("li input").nth(1).fill("b2b")
    field(page, "input.lines").locator("textarea").fill('[{"sku": "A"}]')
    page.click("#run-start")
    page.wait_for_selector("#run-dialog [data-path='input.amount'].has-error")
    assert "less than the minimum of 0" in field(page, "input.amount").locator(".field-errors").inner_text()
    assert Run.objects.count() == 0
    screenshot(page, "run-form-server-error")

    field(page, "input.amount").locator("input").fill("12.5")
    field(page, "input.express").locator("input").check()
    page.click("#run-start")
    page.wait_for_url("**/monitor/runs/*/")
    run = Run.objects.get()
    assert run.workflow == "take-order" and run.input == {
        "order_id": "o-7", "amount": 12.5, "currency": "EUR", "express": True, "customer": {"id": 42, "tier": "gold"},
        "tags": ["vip", "b2b"], "lines": [{"sku": "A"}]}

    # The same form in the editor, for the live version; JSON is one click away.
    page.goto(f"{live_server.url}/designer/take-order/")
    wait_editor(page)
    page.click("#btn-run")
    dialog.wait_for(state="visible")
    field(page, "input.order_id").locator("input").fill("o-8")
    page.click("#run-as-json")
    text = json.loads(page.locator("#run-dialog textarea").input_value())
    assert text == {"order_id": "o-8", "currency": "EUR"}
    screenshot(page, "run-form-as-json")
    page.click("#run-dialog button[value=cancel]")
    assert errors == []


def test_pause_and_resume_from_the_list_the_editor_and_the_monitor(world, live_server, page):
    page.set_viewport_size({"width": 1280, "height": 800})
    page.on("dialog", lambda d: d.accept())  # the confirmation of a pause
    login(page, live_server, "ada", PASSWORD)

    # The list: the Kafka workflow's lag loads by itself; pause it.
    page.goto(f"{live_server.url}/")
    state = page.locator("tr[data-slug='feed'] .trigger-state")
    wait_for(lambda: page.locator("tr[data-slug='feed'] .trigger-state [data-lag-value]").count() == 1
             or "lag unknown" in state.inner_text(), what="the lag to load")
    assert page.locator("tr[data-slug='take-order'] [data-trigger-action]").count() == 0  # manual: nothing to pause
    state.locator("[data-trigger-action=pause]").click()
    page.wait_for_selector("tr[data-slug='feed'] .trigger-state[data-paused='1']")
    assert Workflow.objects.get(slug="feed").trigger_paused
    assert "trigger paused" in page.locator("tr[data-slug='feed'] .trigger-state").inner_text()
    screenshot(page, "trigger-paused-list")

    # The editor says so in its header and beside the trigger on the canvas, where it resumes it
    # without leaving the page (unsaved changes stay).
    page.goto(f"{live_server.url}/designer/feed/")
    wait_editor(page)
    assert page.locator("#header-trigger-paused").is_visible()
    control = page.locator("#canvas-top .trigger-state")
    assert control.get_attribute("data-paused") == "1"
    screenshot(page, "trigger-paused-editor")
    page.locator("#wf-name").fill("Feed, renamed")
    control.locator("[data-trigger-action=resume]").click()
    page.wait_for_selector("#canvas-top .trigger-state[data-paused='0']")
    wait_for(lambda: not page.locator("#header-trigger-paused").is_visible(), what="the header pill to go")
    assert not Workflow.objects.get(slug="feed").trigger_paused
    assert page.locator("#wf-name").input_value() == "Feed, renamed" and page.locator("#dirty-flag").is_visible()

    # The monitor's runs of the workflow open on the workflow: trigger, lag, pause, Run.
    page.goto(f"{live_server.url}/monitor/runs/?workflow=feed")
    card = page.locator("#workflow-card")
    assert "feed" in card.inner_text().lower() and card.locator("[data-run-workflow]").count() == 1
    card.locator("[data-trigger-action=pause]").click()
    page.wait_for_selector("#workflow-card .trigger-state[data-paused='1']")
    screenshot(page, "trigger-paused-monitor")
    assert list(AuditEntry.objects.filter(target_id="feed", action__endswith="_trigger").order_by("at", "id").values_list("action", flat=True)) == [
        "pause_trigger", "resume_trigger", "pause_trigger"]
