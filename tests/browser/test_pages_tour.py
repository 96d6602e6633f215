"""Every page of Sluice in chromium, with real data in it, as a user tours them.

The examples loaded and published as `manage.py up` does, runs executed by a real runner and
projected by a real bridge (one succeeds, one retries then succeeds, one fails with a Python
traceback, one waits for an approval), a dead letter with a long error. Each page must load
without a script error, fit the window's width, and keep every card's content inside it.
Screenshots: tests/artifacts/tour-<page>.png (the whole page).
"""

from __future__ import annotations

import time

import pytest

from tests.browser.test_monitor_retry import AXIS
from tests.live import ARTIFACTS, login
from tests.runtime_support import ManageProcess

pytestmark = [pytest.mark.browser, pytest.mark.kafka]

PASSWORD = "tour-horse-battery"

FAILING = {
    "slug": "always-fails", "name": "Always fails", "trigger": {"type": "manual"},
    "steps": [{"id": "prepare", "type": "transform", "config": {"output": {"n": "{{ trigger.n }}"}}},
              {"id": "call", "type": "python", "name": "Call a broken service",
               "config": {"handler": "demo.fail", "input": {"message": "the service said no " * 6}}}],
    "edges": [{"from": "prepare", "to": "call"}],
}

# What sticks out: the page wider than the window, or a card's content wider than the card.
OVERFLOWS = """
() => {
  const out = [];
  if (document.documentElement.scrollWidth > window.innerWidth + 1) out.push('page: ' + document.documentElement.scrollWidth);
  document.querySelectorAll('.card, .kpi, .step-panel .panel-body').forEach((el) => {
    if (el.scrollWidth > el.clientWidth + 1) out.push((el.id || el.className) + ': ' + el.scrollWidth + ' > ' + el.clientWidth);
  });
  return out;
}
"""


def wait_until(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_every_page_loads_cleanly_and_fits(kafka, live_server, page):
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from designer import services
    from monitor.models import DeadLetter, Run
    from designer.management.commands.load_examples import load_examples

    user = get_user_model().objects.create_superuser("tourist", "tourist@example.com", PASSWORD)
    load_examples(publish=True, user=user)
    failing = services.create_workflow(FAILING, user)
    services.publish(failing.workflow, None, user)
    DeadLetter.objects.create(
        topic=kafka.dlq, partition=0, offset=7, key="r-123", value='{"run_id": "r-123", "broken": true}',
        headers={"sluice-error": "bad"}, error="undecodable StartRun: " + "missing field 'workflow'; " * 8,
        stage="engine", source_topic=kafka.runs, source_partition=1, source_offset=42, failed_at=timezone.now())

    errors = []
    page.on("console", lambda msg: errors.append(f"{page.url}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
    page.set_viewport_size({"width": 1280, "height": 800})
    bridge = ManageProcess("bridge")
    runner = ManageProcess("runner", "--instance-id", "tour-runner")
    try:
        workflows = {w: services.Workflow.objects.get(slug=w) for w in
                     ("hello", "flaky-with-retries", "always-fails", "expense-approval")}
        runs = {
            "hello": services.start_run(workflows["hello"], {"name": "Ada"}, user),
            "flaky": services.start_run(workflows["flaky-with-retries"], {"fail_times": 1}, user),
            "failed": services.start_run(workflows["always-fails"], {"n": 1}, user),
            "approval": services.start_run(workflows["expense-approval"], {"employee": "ada", "amount": 420}, user),
        }
        wanted = {"hello": "succeeded", "flaky": "succeeded", "failed": "failed", "approval": "running"}
        wait_until(lambda: all(Run.objects.get(id=runs[k]).status == v for k, v in wanted.items()),
                   what=f"runs to reach {wanted}")
        wait_until(lambda: Run.objects.get(id=runs["approval"]).steps.filter(status="waiting").exists(),
                   what="the approval to wait")

        login(page, live_server, "tourist", PASSWORD)
        letter = DeadLetter.objects.get()
        tour = [
            ("workflows", "/", "#workflow-rows"),
            ("editor", "/designer/order-fulfilment/", "html[data-editor-ready='1']"),
            ("runs", "/monitor/runs/", "#runs-table"),
            ("run-failed", f"/monitor/runs/{runs['failed']}/", "#live-indicator[data-state=live]"),
            ("run-retried", f"/monitor/runs/{runs['flaky']}/", "#live-indicator[data-state=live]"),
            ("run-approval", f"/monitor/runs/{runs['approval']}/", ".approval"),
            ("dashboard", "/monitor/", "#live-indicator[data-state=live]"),
            ("dead-letters", "/monitor/dead-letters/", "#dead-letters"),
            ("dead-letter", f"/monitor/dead-letters/{letter.pk}/", "main"),
            ("audit", "/monitor/audit/", "main"),
        ]
        problems = {}
        for name, path, ready in tour:
            page.goto(f"{live_server.url}{path}")
            page.wait_for_selector(ready, timeout=20000)
            page.wait_for_timeout(600)  # charts, graphs and fonts settle
            page.screenshot(path=f"{ARTIFACTS}/tour-{name}.png", full_page=True)
            overflowing = page.evaluate(OVERFLOWS)
            if name.startswith("run-"):
                axis = page.evaluate(AXIS)  # the timeline's title below its ticks, however short the run
                if axis["titleTop"] < axis["ticksBottom"]:
                    overflowing.append(f"timeline axis title over its ticks: {axis}")
            if overflowing:
                problems[name] = overflowing
        assert not problems, problems
        assert not errors, errors
    finally:
        runner.stop()
        bridge_log = bridge.stop()
    assert "Traceback" not in bridge_log, bridge_log[-3000:]
