"""Operations pages in Debian's chromium: a workflow's alert settings, and runners that fell
silent turning red on the monitor dashboard. Screenshots land in tests/artifacts/."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from designer.models import Workflow
from monitor.models import RunnerProcess
from tests.live import login, screenshot
from tests.test_alert_settings import SECRET_URL, url
from tests.test_designer_views import PASSWORD, user_with

pytestmark = pytest.mark.browser


@pytest.mark.kafka
def test_a_runner_without_heartbeat_for_a_minute_is_red(kafka, live_server, page):
    get_user_model().objects.create_superuser("root", password=PASSWORD)
    now = timezone.now()
    for instance, age, stopping in (("alive-1", 2, False), ("quiet-1", 180, False), ("gone-1", 400, True),
                                    ("almost-1", 50, False)):
        RunnerProcess.objects.create(instance=instance, host="box", pid=42, roles=["engine"], stopping=stopping,
                                     started_at=now - timedelta(hours=1), last_heartbeat=now - timedelta(seconds=age))
    login(page, live_server, "root", PASSWORD)
    page.goto(f"{live_server.url}/monitor/")
    page.wait_for_selector("#runners tr[data-instance=quiet-1]")

    def row(instance):
        return page.locator(f"#runners tr[data-instance={instance}]")

    assert row("quiet-1").get_attribute("class") == "runner-silent"
    assert "no heartbeat for 3 min" in row("quiet-1").inner_text()
    red = row("quiet-1").locator("td").first.evaluate("cell => getComputedStyle(cell).backgroundColor")
    assert red == "rgb(253, 236, 235)"
    assert row("alive-1").get_attribute("class") == "runner-alive"
    assert row("alive-1").locator("td").first.evaluate("cell => getComputedStyle(cell).backgroundColor") != red
    assert row("gone-1").get_attribute("class") == "runner-stopped"  # stopped cleanly: not an alarm
    assert page.inner_text("#kpi-runners") == "4 (1 silent)"
    # 50 s old when the page was made: it turns red once the minute is up, without a reload.
    page.wait_for_selector("#runners tr.runner-silent[data-instance=almost-1]", timeout=30000)
    assert page.inner_text("#kpi-runners") == "4 (2 silent)"
    screenshot(page, "dashboard-silent-runner")


def test_the_alert_settings_page(live_server, page, db):
    Workflow.objects.create(slug="billing", name="Billing")
    user_with("pat", "view_workflow", "publish_workflow")
    login(page, live_server, "pat", PASSWORD)
    page.goto(f"{live_server.url}{url()}")
    page.check("input[name=on_failure]")
    page.fill("input[name=webhook_url]", SECRET_URL)
    page.fill("textarea[name=email_to]", "ops@example.com\nnot an address")
    page.click("button[value=save]")
    page.wait_for_selector(".field-errors")
    assert "Not an email address: not an address" in page.inner_text("#alert-settings-form")
    page.fill("input[name=webhook_url]", SECRET_URL)
    page.fill("textarea[name=email_to]", "ops@example.com")
    page.click("button[value=save]")
    page.wait_for_selector("text=Alert settings saved")
    placeholder = page.get_attribute("input[name=webhook_url]", "placeholder")
    assert placeholder.startswith("https://hooks.slack.com/… is set")
    assert "xoxSECRETxox" not in page.content()
    screenshot(page, "alert-settings")
