"""The run page in Debian's chromium: nodes go pending -> running -> succeeded without a reload.

Real parts only: daphne (live_server) serving the page and the websocket, a real runner
(`manage.py runner`) executing the workflow, a real bridge (`manage.py bridge`) projecting
history, the embedded broker between them, and the run started through the REST API.
Screenshots of the dashboard, the run list and the run detail land in tests/artifacts/.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.live import login, screenshot
from tests.runtime_support import ManageProcess

pytestmark = [pytest.mark.browser, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "monitor-horse-battery"

SLOW_HELLO = {
    "slug": "slow-hello",
    "name": "Slow hello",
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "warmup", "type": "python", "config": {"handler": "demo.sleep", "input": {"seconds": 2}}},
        {"id": "greet", "type": "transform", "config": {"output": {"greeting": "Hello, {{ trigger.name }}!"}}},
        {"id": "nap", "type": "python", "config": {"handler": "demo.sleep", "input": {"seconds": 2}}},
        {"id": "summary", "type": "transform", "config": {"output": {"said": "{{ steps.greet.output.greeting }}"}}},
    ],
    "edges": [{"from": "warmup", "to": "greet"}, {"from": "greet", "to": "nap"}, {"from": "nap", "to": "summary"}],
}


WATCH_STATUSES = """
() => {
  window.__statusLog = {};
  window.__loadedAt = performance.timeOrigin;
  const note = (rect, status) => {
    const id = rect.closest('[data-cell-id]').getAttribute('data-cell-id');
    const log = window.__statusLog[id] = window.__statusLog[id] || [];
    if (status && log[log.length - 1] !== status) log.push(status);
  };
  document.querySelectorAll('#run-graph [data-cell-id] rect[data-status]').forEach((r) => note(r, r.getAttribute('data-status')));
  // Each record's oldValue is the status before that change, so even changes batched into one
  // callback are all seen; the current value closes the sequence.
  new MutationObserver((changes) => {
    changes.forEach((c) => note(c.target, c.oldValue));
    changes.forEach((c) => note(c.target, c.target.getAttribute('data-status')));
  }).observe(document.getElementById('run-graph'), {attributes: true, attributeOldValue: true, subtree: true,
                                                   attributeFilter: ['data-status']});
}
"""


def test_run_page_shows_nodes_going_pending_running_succeeded_live(kafka, live_server, page):
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from designer import services
    from monitor.models import Run

    user = get_user_model().objects.create_superuser("grace", "grace@example.com", PASSWORD)
    token = Token.objects.create(user=user).key
    version = services.create_workflow(SLOW_HELLO, user)
    services.publish(version.workflow, None, user)

    bridge = ManageProcess("bridge")
    runner = ManageProcess("runner", "--instance-id", "monitor-browser-test")
    try:
        login(page, live_server, "grace", PASSWORD)
        # Through the REST API, as a client would.
        response = httpx.post(f"{live_server.url}/api/workflows/slow-hello/runs/", json={"input": {"name": "Ada"}},
                              headers={"Authorization": f"Token {token}"}, timeout=30)
        assert response.status_code == 202, response.text
        run_id = response.json()["id"]

        page.goto(f"{live_server.url}/monitor/runs/{run_id}/")
        page.wait_for_selector('#run-graph [data-cell-id="nap"] rect[data-status]')
        page.evaluate(WATCH_STATUSES)
        page.wait_for_selector("#live-indicator[data-state=live]", timeout=15000)
        # The page must not reload: the marker set on this document has to survive to the end.
        page.evaluate("window.__sameDocument = 'yes'")

        page.wait_for_selector('#run-status[data-status="succeeded"]', timeout=90000)
        page.wait_for_selector('#run-graph [data-cell-id="summary"] rect[data-status="succeeded"]', timeout=10000)
        log = page.evaluate("window.__statusLog")
        assert page.evaluate("window.__sameDocument") == "yes"

        # A slow worker step visibly passes through every state, in order.
        assert log["nap"] == ["pending", "running", "succeeded"], log
        for step in ("warmup", "greet", "nap", "summary"):
            assert log[step][-1] == "succeeded", log
        # The rest of the page followed along too: step table, history log, timeline bars.
        assert page.locator('#steps-table tr[data-status="succeeded"]').count() == 4
        page.click('#steps-table a[data-select="greet"]')
        assert "Hello, Ada!" in page.locator("#step-panel-body").inner_text()
        page.evaluate("window.scrollTo(0, 0)")
        time.sleep(0.3)
        screenshot(page, "monitor-run-detail")
        page.screenshot(path=str(ROOT / "tests" / "artifacts" / "monitor-run-detail-full.png"), full_page=True)

        # The bridge projected the same outcome into the database.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and Run.objects.get(id=run_id).status != "succeeded":
            time.sleep(0.2)
        assert Run.objects.get(id=run_id).status == "succeeded"
        # The live history log on the page has exactly the events the database has, each once.
        seqs = [int(s) for s in page.eval_on_selector_all("#history-table tbody tr", "rows => rows.map(r => r.dataset.seq)")]
        assert seqs == list(Run.objects.get(id=run_id).history.values_list("seq", flat=True)), seqs
        assert len(seqs) >= 8

        page.goto(f"{live_server.url}/monitor/runs/")
        page.wait_for_selector(f'#runs-table tr[data-run-id="{run_id}"][data-status="succeeded"]')
        screenshot(page, "monitor-run-list")

        page.goto(f"{live_server.url}/monitor/")
        page.wait_for_selector("#live-indicator[data-state=live]", timeout=15000)
        page.wait_for_function("document.getElementById('kpi-total').textContent.trim() === '1'")
        time.sleep(0.5)
        screenshot(page, "monitor-dashboard")
    finally:
        runner_log = runner.stop()
        bridge_log = bridge.stop()
    assert "Traceback" not in bridge_log, bridge_log[-3000:]
    assert "Traceback" not in runner_log, runner_log[-3000:]
