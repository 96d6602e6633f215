"""What users with different rights see in Chromium: the refusal page, a list scoped by grants,
and a dead letter replayed through its trigger with the outcome on its page."""

from __future__ import annotations

import json
import uuid

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from designer import services
from monitor.models import DeadLetter, WorkflowAccess
from tests.live import login, screenshot

pytestmark = [pytest.mark.browser]
PASSWORD = "pw-access-pages-9"


def flow(slug: str, trigger=None) -> dict:
    return {"slug": slug, "name": slug.replace("-", " ").title(), "trigger": trigger or {"type": "manual"},
            "steps": [{"id": "note", "type": "transform", "config": {"output": {"total": "{{ trigger.total }}"}}}],
            "edges": []}


def nav_links(page) -> list[str]:
    return [text.strip() for text in page.locator("nav.mainnav a").all_inner_texts()]


def test_a_user_without_rights_gets_a_page_with_navigation_and_sign_out(live_server, page, roles):
    User.objects.create_user("nobody", password=PASSWORD)
    login(page, live_server, "nobody", PASSWORD)
    page.goto(f"{live_server.url}/")
    assert page.locator("h1").inner_text() == "You cannot open this page"
    assert "no access to any workflow yet" in page.locator("main").inner_text()
    assert nav_links(page) == ["API"]
    assert page.locator(".userbox .username").inner_text() == "nobody"
    screenshot(page, "access-refused")
    page.click("text=Sign in as someone else")
    page.wait_for_url("**/accounts/login/")


def test_grants_scope_the_list_and_the_navigation(live_server, page, roles):
    admin = User.objects.create_superuser("admin", password=PASSWORD)
    services.create_workflow(flow("payroll"), admin)
    mine = services.create_workflow(flow("expenses"), admin).workflow
    user = User.objects.create_user("sam", password=PASSWORD)
    for right in ("view", "edit"):
        WorkflowAccess.objects.create(workflow=mine, user=user, permission=right)
    login(page, live_server, "sam", PASSWORD)
    page.goto(f"{live_server.url}/")
    rows = page.locator("#workflow-rows tr[data-slug]")
    assert [rows.nth(i).get_attribute("data-slug") for i in range(rows.count())] == ["expenses"]
    assert page.locator("tr[data-slug=expenses] a.btn", has_text="Edit").count() == 1
    assert page.locator("tr[data-slug=expenses] button", has_text="Archive").count() == 1  # a draft
    assert nav_links(page) == ["Workflows", "Monitor", "Runs", "API"]
    screenshot(page, "access-scoped-list")
    page.goto(f"{live_server.url}/designer/payroll/")
    assert page.locator("h1").inner_text() == "You cannot open this page"
    assert "no access to workflow 'payroll'" in page.locator("main").inner_text().lower()


@pytest.mark.kafka
def test_replaying_a_trigger_dead_letter_shows_the_run_it_started(kafka, live_server, page, roles):
    admin = User.objects.create_superuser("admin", password=PASSWORD)
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    workflow = services.create_workflow(flow("big-orders", {"type": "kafka", "topic": topic,
                                                            "filter": "trigger.total > 100"}), admin).workflow
    services.publish(workflow, 1, admin)
    letter = DeadLetter.objects.create(
        topic=kafka.dlq, partition=0, offset=0, key="", value=json.dumps({"total": "lots"}), stage="trigger",
        error="filter of big-orders failed: 'trigger.total > 100' failed: '>' not supported between instances "
              "of 'str' and 'int'", source_topic=topic, source_partition=0, source_offset=7, workflow="big-orders",
        headers={"sluice-stage": "trigger"}, failed_at=timezone.now())
    operator = User.objects.create_user("olga", password=PASSWORD)
    operator.groups.add(Group.objects.get(name="Operator"))
    login(page, live_server, "olga", PASSWORD)
    page.goto(f"{live_server.url}/monitor/dead-letters/{letter.pk}/")
    page.fill("textarea[name=value]", '{"total": 150}')
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Replay through the trigger')")
    page.wait_for_selector("#replay-outcome")
    outcome = page.locator("#replay-outcome").inner_text()
    assert "Went back through the trigger of big-orders, edited" in outcome
    assert "big-orders-" in page.locator("#replay-outcome a").inner_text()
    screenshot(page, "dead-letter-replayed")
