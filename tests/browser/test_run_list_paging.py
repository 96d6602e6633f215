"""The run list's Older / Newer / Newest links in Chromium: htmx swaps the rows and pushes the
cursor into the address, a reload shows the same page, a filter change starts from the newest."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from monitor.models import Run
from tests.live import login

pytestmark = [pytest.mark.browser]
PASSWORD = "pw-run-paging-4"


def rows(page) -> list[str]:
    return page.eval_on_selector_all("#runs-table tr[data-run-id]", "trs => trs.map(tr => tr.dataset.runId)")


def test_older_newer_and_newest_links(live_server, page):
    User.objects.create_superuser("admin", password=PASSWORD)
    now = timezone.now().replace(microsecond=0)
    for index in range(60):  # pairs of runs share a created_at
        Run.objects.create(id=f"run-{index:02d}", workflow="orders", version=1,
                           status="failed" if index % 2 else "succeeded", created_at=now - timedelta(seconds=index // 2))
    # Newest first; the two runs of one instant by id, descending.
    order = sorted((f"run-{index:02d}" for index in range(60)), key=lambda run_id: (-(int(run_id[4:]) // 2), run_id),
                   reverse=True)
    login(page, live_server, "admin", PASSWORD)
    page.goto(f"{live_server.url}/monitor/runs/")
    assert rows(page) == order[:25]
    page.click("#run-pager a[rel=next]")
    page.wait_for_url("**before=*")
    page.wait_for_function(f"document.querySelector('#runs-table tr[data-run-id]').dataset.runId === '{order[25]}'")
    assert rows(page) == order[25:50]
    page.click("#run-pager a[rel=next]")
    page.wait_for_function(f"document.querySelector('#runs-table tr[data-run-id]').dataset.runId === '{order[50]}'")
    assert rows(page) == order[50:] and page.locator("#run-pager a[rel=next]").count() == 0
    page.reload()
    assert rows(page) == order[50:]
    page.click("#run-pager a[rel=prev]")
    page.wait_for_url("**after=*")
    page.wait_for_function(f"document.querySelector('#runs-table tr[data-run-id]').dataset.runId === '{order[25]}'")
    assert rows(page) == order[25:50]
    page.click("#run-pager a[rel=first]")
    page.wait_for_function(f"document.querySelector('#runs-table tr[data-run-id]').dataset.runId === '{order[0]}'")
    assert rows(page) == order[:25] and page.locator("#run-pager a[rel=prev]").count() == 0
    # Filtering from an older page starts at the newest matching runs.
    page.click("#run-pager a[rel=next]")
    page.wait_for_url("**before=*")
    page.select_option("select[name=status]", "failed")
    page.wait_for_url("**status=failed*")
    page.wait_for_function("!location.search.includes('before=')")
    failed = [run_id for run_id in order if int(run_id[4:]) % 2]
    page.wait_for_function(f"document.querySelector('#runs-table tr[data-run-id]').dataset.runId === '{failed[0]}'")
    assert rows(page) == failed[:25]
