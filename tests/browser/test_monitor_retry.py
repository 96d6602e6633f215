"""A failed run on its page, retried from the failed step, in Debian's chromium.

Real parts: daphne serving page and websocket, a runner executing the steps (`demo.flaky` fails
its first attempt, with a Python traceback), a bridge projecting history, the embedded broker.
The bridge is stopped before the retry, so the page is reloaded with the failed run from the
database and everything after that (the retry and the success) reaches it only live: the page
must then look like a succeeded run (no leftover red error) without another reload.
"""

from __future__ import annotations

import pytest

from tests.live import login, screenshot
from tests.runtime_support import ManageProcess

pytestmark = [pytest.mark.browser, pytest.mark.kafka]

PASSWORD = "retry-horse-battery"

FLAKY_ONCE = {
    "slug": "flaky-once",
    "name": "Flaky once",
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "prepare", "type": "transform", "config": {"output": {"n": "{{ trigger.n }}"}}},
        {"id": "call", "type": "python", "config": {"handler": "demo.flaky", "input": {"fail_times": 1}}},
        {"id": "report", "type": "transform", "config": {"output": {"done": "{{ steps.call.output }}"}}},
    ],
    "edges": [{"from": "prepare", "to": "call"}, {"from": "call", "to": "report"}],
}

# Whether anything inside an element sticks out of it (horizontally): the user would see it
# cut off or spilling over the card's border.
OVERFLOWS = "(el) => el.scrollWidth > el.clientWidth + 1"

# Chart.js's x axis: its title must sit below its tick labels, not on them.
AXIS = """
() => {
  const chart = Chart.getChart(document.getElementById('timeline'));
  const x = chart.scales.x;
  const ticks = x.getLabelItems().map((item) => item.options.translation[1]);
  const font = Chart.helpers.toFont(x.options.ticks.font);
  const title = Chart.helpers.toFont(x.options.title.font);
  return {ticksBottom: Math.max(...ticks) + font.lineHeight, titleTop: x.bottom - title.lineHeight
          - Chart.helpers.toPadding(x.options.title.padding).height, canvas: chart.height};
}
"""


def test_retry_from_the_failed_step_clears_the_error_live(kafka, live_server, page):
    from django.contrib.auth import get_user_model

    from designer import services

    user = get_user_model().objects.create_superuser("grace", "grace@example.com", PASSWORD)
    version = services.create_workflow(FLAKY_ONCE, user)
    services.publish(version.workflow, None, user)
    page.set_viewport_size({"width": 1280, "height": 900})

    bridge = ManageProcess("bridge")
    runner = ManageProcess("runner", "--instance-id", "monitor-retry-test")
    try:
        run_id = services.start_run(version.workflow, {"n": 1}, user)
        login(page, live_server, "grace", PASSWORD)
        page.goto(f"{live_server.url}/monitor/runs/{run_id}/")
        page.wait_for_selector('#run-status[data-status="failed"]', timeout=60000)
        page.click('#steps-table a[data-select="call"]')
        page.wait_for_selector("#step-panel-body .error")
        page.wait_for_timeout(300)
        screenshot(page, "monitor-run-failed")

        # The attempts' errors stay inside the step card; a traceback is folded away.
        assert not page.locator("#step-panel-body").evaluate(OVERFLOWS)
        assert page.locator("#step-panel-body details.traceback").count() >= 1
        assert not page.locator("#step-panel-body details.traceback").first.evaluate("(d) => d.open")
        assert "flaky failure on attempt 1" in page.locator("#step-panel-body .step-error").inner_text()
        # The timeline's axis title does not sit on its tick labels, even for a run this short.
        axis = page.evaluate(AXIS)
        assert axis["titleTop"] >= axis["ticksBottom"], axis

        # Everything after this point reaches the page only through its websocket.
        bridge.stop()
        page.on("dialog", lambda dialog: dialog.accept())
        with page.expect_navigation():
            page.click("#retry-run")
        page.wait_for_selector("#live-indicator[data-state=live]", timeout=15000)
        page.wait_for_selector('#run-status[data-status="succeeded"]', timeout=60000)
        page.wait_for_selector('#run-graph [data-cell-id="report"] rect[data-status="succeeded"]')
        page.wait_for_timeout(300)
        screenshot(page, "monitor-run-retried")

        assert page.locator("#run-error").inner_text().strip() == ""
        assert not page.locator("#run-error").is_visible()
        assert '"done"' in page.locator("#run-output").inner_text()
        row = page.locator('#steps-table tr[data-step-id="call"]')
        assert row.get_attribute("data-status") == "succeeded"
        assert row.locator("td.error").inner_text().strip() == ""
        page.click('#steps-table a[data-select="call"]')
        panel = page.locator("#step-panel-body")
        # The history of the step is kept: attempt 1 failed, attempt 2 succeeded.
        assert panel.locator("tr[data-attempt]").count() == 2
        assert "flaky failure on attempt 1" in panel.locator("tr[data-attempt='1'] + tr.attempt-error").inner_text()
        assert panel.locator("tr[data-attempt='2'] + tr.attempt-error").count() == 0
        assert panel.locator(".step-error").count() == 0  # no step-level error any more
    finally:
        runner_log = runner.stop()
        bridge_log = bridge.stop()
    assert "Traceback" not in bridge_log, bridge_log[-3000:]
    assert "Traceback" not in runner_log.replace("flaky failure", ""), runner_log[-3000:]
