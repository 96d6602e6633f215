"""The side panel for stream processing and composition, driven in Chromium against a real daphne:
an author gives a Kafka trigger a hopping window (sizes, grace, key, emit topic, a list of
aggregates edited row by row) and a rate limit, drops a foreach step onto the canvas and sets
it up (the workflow picked from the existing ones, a version, concurrency), sees the panel's
inline errors, and saves a definition the validator accepts.

Screenshots: designer-window-trigger.png, designer-foreach-step.png.
"""

from __future__ import annotations

import pytest

from designer import services
from designer.models import Workflow
from tests.browser.test_designer_editor import (
    PASSWORD, click_node, definition, drag_from_palette, step_ids, wait_editor, wait_for)
from tests.live import login, screenshot

pytestmark = [pytest.mark.browser]


@pytest.fixture
def author(transactional_db):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("ada", "ada@example.com", PASSWORD)
    child = {"slug": "ship-one", "name": "Ship one", "trigger": {"type": "manual"}, "edges": [],
             "steps": [{"id": "label", "type": "transform", "config": {"output": "{{ trigger }}"}}]}
    services.create_workflow(child, user)
    parent = {"slug": "clicks-stats", "name": "Click stats", "trigger": {"type": "kafka", "topic": "clicks"},
              "edges": [], "steps": [{"id": "keep", "type": "transform", "config": {"output": "{{ trigger }}"}}],
              "layout": {"keep": {"x": 40, "y": 72}}}
    services.create_workflow(parent, user)
    return user


def trigger_in_model(page) -> dict:
    return definition(page)["trigger"]


def settle(page):
    """Wait for the panel's round trip (htmx) to finish."""
    page.wait_for_function("() => !document.querySelector('#panel .htmx-request')")


def test_a_window_trigger_and_a_foreach_step_configured_in_the_side_panel(live_server, author, page):
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_viewport_size({"width": 1400, "height": 900})
    login(page, live_server, "ada", PASSWORD)
    page.goto(f"{live_server.url}/designer/clicks-stats/")
    wait_editor(page)

    # ---- the trigger: a rate limit, then a window
    page.click("#trigger-chip")
    page.wait_for_selector(".panel-form[data-kind='trigger']")
    rate = page.locator("#fld-trigger\\.max_runs_per_second")
    rate.fill("50")
    rate.press("Tab")
    wait_for(lambda: trigger_in_model(page).get("max_runs_per_second") == 50, what="the rate limit in the model")

    page.locator("[data-window-block] input[name='window.enabled']").check()
    page.wait_for_selector("#fld-window\\.size_seconds")
    # Ticking the box starts a valid window: one minute, one count.
    wait_for(lambda: trigger_in_model(page).get("window") == {"type": "tumbling", "size_seconds": 60,
                                                              "aggregates": {"records": {"op": "count"}}},
             what="a new window in the model")
    page.select_option("#fld-window\\.type", "hopping")
    page.wait_for_selector("#fld-window\\.advance_seconds")
    for name, value in (("size_seconds", "10"), ("advance_seconds", "20"), ("grace_seconds", "2"),
                        ("key", "{{ trigger.user }}"), ("emit_topic", "buy-stats")):
        field = page.locator(f"#fld-window\\.{name}")
        field.fill(value)
        field.press("Tab")
        settle(page)
    # An advance longer than the size is refused, on its field.
    page.wait_for_selector(".field[data-field='window.advance_seconds'] .field-errors")
    assert "must not be longer than size_seconds" in page.locator(
        ".field[data-field='window.advance_seconds'] .field-errors").inner_text()
    field = page.locator("#fld-window\\.advance_seconds")
    field.fill("5")
    field.press("Tab")
    wait_for(lambda: page.locator(".field[data-field='window.advance_seconds'] .field-errors").count() == 0,
             what="the advance error to go")

    # Aggregates: add "spent" (sum of the amount), then one with a name already taken, then fix it.
    page.click("[data-add-aggregate]")
    page.wait_for_selector("[data-aggregate-row='1']")
    page.locator("input[name='window.aggregates-1.name']").fill("spent")
    page.select_option("select[name='window.aggregates-1.op']", "sum")
    page.wait_for_selector("input[name='window.aggregates-1.of']")
    of = page.locator("input[name='window.aggregates-1.of']")
    of.fill("trigger.amount")
    of.press("Tab")
    settle(page)
    page.click("[data-add-aggregate]")
    page.wait_for_selector("[data-aggregate-row='2']")
    name = page.locator("input[name='window.aggregates-2.name']")
    name.fill("spent")
    name.press("Tab")
    page.wait_for_selector("[data-aggregate-row='2'].has-error")
    assert "Another aggregate is called 'spent' already" in page.locator(
        "[data-aggregate-row='2'] .field-errors").inner_text()
    name = page.locator("input[name='window.aggregates-2.name']")
    name.fill("users")
    page.select_option("select[name='window.aggregates-2.op']", "count_distinct")
    page.wait_for_selector("input[name='window.aggregates-2.of']")
    of = page.locator("input[name='window.aggregates-2.of']")
    of.fill("trigger.user")
    of.press("Tab")
    settle(page)
    # The starting count goes: its remove button.
    page.click("[data-aggregate-row='0'] button[name='window.remove_aggregate']")
    wait_for(lambda: list(trigger_in_model(page).get("window", {}).get("aggregates", {})) == ["spent", "users"],
             what="two aggregates in the model")
    assert page.locator(".panel-form .panel-errors").count() == 0
    assert page.locator(".panel-form .field-errors").count() == 0
    page.locator("[data-window-block]").scroll_into_view_if_needed()
    screenshot(page, "designer-window-trigger")

    # ---- a foreach step from the palette
    drag_from_palette(page, "foreach", 260, 300)
    wait_for(lambda: "foreach_1" in step_ids(page), what="a foreach step")
    click_node(page, "foreach_1")
    items = page.locator("#fld-config\\.items")
    items.fill("{{ trigger.orders }}")
    items.press("Tab")
    settle(page)
    workflow = page.locator("#fld-config\\.workflow")
    assert page.locator("#workflow-slugs option[value='ship-one']").count() == 1  # offered
    workflow.fill("ship-two")
    workflow.press("Tab")
    page.wait_for_selector(".field[data-field='config.workflow'] .field-help.warn")  # no such workflow yet
    workflow = page.locator("#fld-config\\.workflow")
    workflow.fill("ship-one")
    workflow.press("Tab")
    settle(page)
    version = page.locator("#fld-config\\.version")
    version.fill("latest")
    version.press("Tab")
    page.wait_for_selector(".field[data-field='config.version'] .field-errors")
    assert 'must be "live" or a version number' in page.locator(
        ".field[data-field='config.version'] .field-errors").inner_text()
    version = page.locator("#fld-config\\.version")
    version.fill("1")
    version.press("Tab")
    settle(page)
    concurrency = page.locator("#fld-config\\.concurrency")
    concurrency.fill("3")
    concurrency.press("Tab")
    settle(page)
    page.select_option("#fld-config\\.on_item_failure", "collect")
    settle(page)
    wait_for(lambda: {s["id"]: s for s in definition(page)["steps"]}["foreach_1"]["config"].get("on_item_failure")
             == "collect", what="the foreach config in the model")
    assert page.locator(".panel-form .field-errors").count() == 0
    page.evaluate("document.getElementById('panel').scrollTop = 0")
    screenshot(page, "designer-foreach-step")

    # ---- save: the stored definition is what the panel built, and valid
    page.click("#btn-save")
    page.click("#save-confirm")
    page.wait_for_selector("#version-status:has-text('v2')")
    saved = services.get_version(Workflow.objects.get(slug="clicks-stats"), 2).definition
    assert services.check_definition(saved) is not None  # raises on any error
    assert saved["trigger"] == {
        "type": "kafka", "topic": "clicks", "max_runs_per_second": 50,
        "window": {"type": "hopping", "size_seconds": 10, "advance_seconds": 5, "grace_seconds": 2,
                   "key": "{{ trigger.user }}", "emit_topic": "buy-stats",
                   "aggregates": {"spent": {"op": "sum", "of": "trigger.amount"},
                                  "users": {"op": "count_distinct", "of": "trigger.user"}}}}
    foreach = next(s for s in saved["steps"] if s["id"] == "foreach_1")
    assert foreach["config"] == {"items": "{{ trigger.orders }}", "workflow": "ship-one", "version": 1,
                                 "concurrency": 3, "on_item_failure": "collect"}
    assert errors == []
