"""Composition as an operator sees it in Chromium, from real runs of the examples (a runner
process, a Celery worker, the embedded broker, the history projected into the test database):

- a parent's subworkflow step links to its child, the child links back to that step;
- a foreach step shows done/total and failed, lists its children and links to all of them;
- a failed run links to the run its on_failure started, and that run back to it;
- a celery_task step shows its Celery task id;
- a window run shows its key, bounds and counts;
- the history log says in words what each event did.

Screenshots: composition-*.png in tests/artifacts/.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from django.core.management import call_command

from monitor.projector import Projector
from orchestrator.runtime import commands
from tests.live import login, screenshot
from tests.runtime_support import HistoryLog, create_topic, produce_in_one_window, runner_process, user_topic
from tests.test_celery_task import celery_worker  # noqa: F401  (fixture)
from tests.test_composition_examples import EXAMPLES, start

pytestmark = [pytest.mark.browser, pytest.mark.kafka]

PASSWORD = "pw-" + uuid.uuid4().hex


def words(locator) -> str:
    """The locator's text as a reader takes it in: one space between words."""
    return " ".join(locator.inner_text().split())


def project_history() -> None:
    projector = Projector(group_id=f"test-projector-{uuid.uuid4().hex[:6]}")
    try:
        projector.run_until_idle(idle_seconds=1.0, timeout=30)
    finally:
        projector.close()


@pytest.fixture
def runs(kafka, live_server, celery_worker):  # noqa: F811
    """Runs of the composition examples, finished and projected: {name: run id}."""
    from django.contrib.auth import get_user_model

    from tests.test_api_workflows import make_client

    get_user_model().objects.create_superuser("ada", "ada@example.com", PASSWORD)
    client, _ = make_client("root", superuser=True)
    call_command("load_examples", "--publish", stdout=open("/dev/null", "w"))
    clicks = user_topic(kafka, "clicks")
    windowed = json.loads((EXAMPLES / "buy-stats.json").read_text())
    windowed["trigger"]["topic"] = clicks
    windowed["trigger"]["window"].update(emit_topic=user_topic(kafka, "stats"))  # 10 s windows, 2 s grace
    create_topic(clicks, partitions=1)  # followed from the runner's start, not from the first record
    commands.publish_definition("buy-stats", 99, windowed, by="test")
    history = HistoryLog(kafka)
    runner = runner_process("composition-pages")
    try:
        started = {
            "ordered": start(client, "place-order", {"order_id": "o-1", "amount": 120}),
            "declined": start(client, "place-order", {"order_id": "o-2", "amount": 5000}),
            "shipped": start(client, "ship-all", {"orders": [{"id": "a"}, {"id": "b"}, {}, {"id": "d"}]}),
            "added": start(client, "add-with-celery", {"a": 40, "b": 2}),
        }
        history.wait_finished(started.values(), timeout=180)
        # The runner is reading by now: two buys land in a window that stays open for a while
        # (a record read after its window closed is late by design).
        window_end = produce_in_one_window(clicks, [{"user": "ada", "kind": "buy", "amount": amount}
                                                    for amount in (60, 70)], size_seconds=10, grace_seconds=2)
        history.wait_until(lambda log: any(e.kind == "run_succeeded" and e.workflow in ("buy-stats",)
                                           for e in log.events)
                           and any(e.kind == "run_succeeded" and e.workflow == "notify-ops" for e in log.events),
                           timeout=max(60, window_end + 30 - time.time()), what="the window run and notify-ops")
        started["window"] = next(e.run_id for e in history.events if e.kind == "run_started"
                                 and e.workflow == "buy-stats")
        started["handler"] = next(e.data["run_id"] for e in history.by_run[started["declined"]]
                                  if e.kind == "on_failure_started")
    finally:
        runner.stop()
        history.close()
    project_history()
    return started


def test_composition_pages(kafka, live_server, page, runs):
    login(page, live_server, "ada", PASSWORD)
    base = live_server.url

    # ---- the parent's subworkflow step links to its child; the child links back to the step
    page.goto(f"{base}/monitor/runs/{runs['ordered']}/#step=charge")
    panel = page.locator("#step-panel-body")
    panel.locator("[data-children]").wait_for()
    child_id = f"{runs['ordered']}.charge.1"
    assert panel.locator(f"a[title='{child_id}']").count() == 1
    assert "of charge-card@live" in panel.inner_text().lower()
    screenshot(page, "composition-subworkflow-parent")
    panel.locator(f"a[title='{child_id}']").click()
    page.wait_for_url(f"**/monitor/runs/{child_id}/")
    back = page.locator("#parent-link")
    assert words(back).startswith("child run of") and "step charge (place-order)" in words(back)
    screenshot(page, "composition-subworkflow-child")
    back.locator("a").click()
    page.wait_for_url(f"**/monitor/runs/{runs['ordered']}/#step=charge")
    page.locator("#step-panel-body [data-children]").wait_for()  # opened on the step the link named

    # ---- foreach: progress, children, all of them in the run list
    page.goto(f"{base}/monitor/runs/{runs['shipped']}/#step=ship")
    panel.locator("[data-progress-text]").wait_for()
    assert panel.locator("[data-progress-text]").inner_text() == "4/4 done · 0 running · 1 failed"
    assert panel.locator(".child-runs li").count() == 4
    assert panel.locator("li[data-child-index='2'] .pill").inner_text() == "failed"
    assert "4/4 · 1 failed" in page.locator("tr[data-step-id='ship'] [data-progress]").inner_text()
    assert page.locator("#history-table tr[data-kind='child_finished']").first.locator("td.what").inner_text() \
        .startswith("child #")
    screenshot(page, "composition-foreach")
    panel.locator("[data-all-children]").click()
    page.wait_for_url("**/monitor/runs/?parent=*")
    assert page.locator("#runs-table tbody tr[data-run-id]").count() == 4
    assert "Child runs of" in page.locator("#parent-filter").inner_text()
    assert page.locator("#runs-table [data-parent]").count() == 4
    screenshot(page, "composition-foreach-children-list")

    # ---- on_failure, both ways
    page.goto(f"{base}/monitor/runs/{runs['declined']}/")
    link = page.locator("#on-failure-link")
    link.wait_for()
    assert words(link).startswith("on_failure started notify-ops")
    what = page.locator("#history-table tr[data-kind='on_failure_started'] td.what").inner_text()
    assert what.startswith("on_failure started notify-ops")
    screenshot(page, "composition-on-failure-failed-run")
    link.locator("a").click()
    page.wait_for_url(f"**/monitor/runs/{runs['handler']}/")
    assert words(page.locator("#failed-run-link")).startswith("handles the failure of")
    screenshot(page, "composition-on-failure-handler")

    # ---- the Celery task id of a celery_task step
    page.goto(f"{base}/monitor/runs/{runs['added']}/#step=add")
    assert panel.locator("[data-celery-task-id]").inner_text() == f"sluice-{runs['added']}-add-1"
    what = page.locator("#history-table tr[data-kind='step_waiting'] td.what").inner_text()
    assert what.startswith("handed on to Celery: task demo.add")
    screenshot(page, "composition-celery-task")

    # ---- a window run: key, bounds, counts; the list says so too
    page.goto(f"{base}/monitor/runs/{runs['window']}/")
    card = page.locator("#window-card")
    assert "ada" in words(card) and card.locator("[data-field=records]").inner_text() == "2"
    assert card.locator("[data-field=late_records]").inner_text() == "0"
    screenshot(page, "composition-window-run")
    page.goto(f"{base}/monitor/runs/?workflow=buy-stats")
    assert "key ada, 2 records" in page.locator("#runs-table [data-window]").first.inner_text()
    page.goto(f"{base}/monitor/runs/")
    time.sleep(0.3)
    screenshot(page, "composition-run-list")
