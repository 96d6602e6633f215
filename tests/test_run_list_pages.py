"""The run list's keyset pages (monitor/keyset.py): every run exactly once, in order, whatever the
filters and grants, with runs sharing one created_at; the bounded search; the indexed filters."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from designer.models import Workflow
from monitor import views
from monitor.models import Run, TriggerKey, WorkflowAccess
from tests.test_monitor_views import make_run, make_user

pytestmark = [pytest.mark.django_db]

ROW = re.compile(r'<tr data-run-id="([^"]+)"')
LINK = re.compile(r'<a [^>]*rel="(next|prev|first)"[^>]*href="([^"]+)"')


def links(html: str) -> dict[str, str]:
    return {rel: "/monitor/runs/" + href.replace("&amp;", "&") for rel, href in LINK.findall(html)}


def walk(client, url: str, rel: str = "next", htmx: bool = False) -> tuple[list[list[str]], str]:
    """The run ids of each page from `url` following `rel` links to the end, and the last page's url."""
    pages = []
    extra = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    for _ in range(100):
        response = client.get(url, **extra)
        assert response.status_code == 200, response.content[:500]
        html = response.content.decode()
        pages.append(ROW.findall(html))
        following = links(html).get(rel)
        if not following:
            return pages, url
        url = following
    raise AssertionError("more than 100 pages")


@pytest.fixture
def many(monkeypatch):
    """73 runs of two workflows at five instants (runs share a created_at), plus some of a third."""
    monkeypatch.setattr(views, "PAGE_SIZE", 10)
    now = timezone.now().replace(microsecond=0)
    runs = []
    for index in range(73):
        runs.append(make_run(workflow="orders" if index % 3 else "billing",
                             status="failed" if index % 4 == 0 else "succeeded",
                             id=f"r-{index:03d}-{uuid.uuid4().hex[:4]}",
                             created_at=now - timedelta(minutes=index % 5),
                             trigger={"type": "webhook" if index % 2 else "kafka"}))
    for index in range(7):
        make_run(workflow="secret", status="failed", id=f"s-{index}", created_at=now - timedelta(minutes=1))
    for slug in ("orders", "billing", "secret"):
        Workflow.objects.create(slug=slug, name=slug)
    return runs


def expected(runs) -> list[str]:
    return [r.id for r in sorted(runs, key=lambda r: (r.created_at, r.id), reverse=True)]


def test_older_links_walk_every_run_once_and_newer_links_walk_back(client, many):
    client.force_login(make_user("admin", is_superuser=True))
    everything = Run.objects.all()
    pages, last = walk(client, "/monitor/runs/")
    assert [run_id for page in pages for run_id in page] == expected(everything)
    assert all(len(page) == 10 for page in pages[:-1]) and len(pages) == 8
    # Back up from the oldest page: the same pages in reverse, ending on the full newest page.
    back, top = walk(client, last, rel="prev")
    assert back == pages[::-1]
    assert "after=" in top or top == "/monitor/runs/"
    first = client.get("/monitor/runs/").content.decode()
    assert "prev" not in links(first) and "first" not in links(first)
    # The partial (htmx) rows carry the same links.
    assert walk(client, "/monitor/runs/", htmx=True)[0] == pages


def test_pages_with_filters_for_a_user_granted_two_workflows(client, many):
    user = make_user("scoped")
    for slug in ("orders", "billing"):
        WorkflowAccess.objects.create(workflow=Workflow.objects.get(slug=slug), user=user, permission="view")
    client.force_login(user)
    visible = Run.objects.filter(workflow__in=["orders", "billing"])
    pages, _ = walk(client, "/monitor/runs/")
    assert [run_id for page in pages for run_id in page] == expected(visible)
    pages, _ = walk(client, "/monitor/runs/?status=failed")
    assert [run_id for page in pages for run_id in page] == expected(visible.filter(status="failed"))
    pages, last = walk(client, "/monitor/runs/?workflow=orders&trigger=webhook")
    assert "workflow=orders" in last and "trigger=webhook" in last
    assert [run_id for page in pages for run_id in page] == expected(
        visible.filter(workflow="orders").alias(t=TriggerKey("type")).filter(t="webhook"))
    # Old page-number links, read per workflow too, agree with the cursors.
    assert ROW.findall(client.get("/monitor/runs/?page=3").content.decode()) == expected(visible)[20:30]
    # A workflow they may not see: nothing, however asked.
    assert walk(client, "/monitor/runs/?workflow=secret")[0] == [[]]
    # The dropdown lists the workflows they see (from the designer's table).
    page = client.get("/monitor/runs/").content.decode()
    assert 'value="orders"' in page and 'value="billing"' in page and 'value="secret"' not in page


def test_page_numbers_still_work_and_bad_cursors_are_named(client, many):
    client.force_login(make_user("admin", is_superuser=True))
    order = expected(Run.objects.all())
    second = client.get("/monitor/runs/?page=2").content.decode()
    assert ROW.findall(second) == order[10:20]
    # Its Older link continues from there with a cursor, its Newer link goes back.
    assert walk(client, links(second)["next"])[0][0] == order[20:30]
    assert ROW.findall(client.get(links(second)["prev"]).content.decode()) == order[:10]
    # Past the end: the newest page rather than an empty one.
    assert ROW.findall(client.get("/monitor/runs/?page=999").content.decode()) == order[:10]
    response = client.get("/monitor/runs/?before=garbage")
    assert response.status_code == 400 and "before/after:" in response.content.decode()


def test_runs_arriving_between_pages_move_nothing(client, many):
    client.force_login(make_user("admin", is_superuser=True))
    before = expected(Run.objects.all())
    first = client.get("/monitor/runs/").content.decode()
    make_run(id="newcomer", created_at=timezone.now() + timedelta(seconds=5))
    pages, _ = walk(client, links(first)["next"])
    assert [run_id for page in pages for run_id in page] == before[10:]


def test_search_looks_at_the_most_recent_runs_and_says_so(client, monkeypatch):
    monkeypatch.setattr(views, "SEARCH_WINDOW", 5)
    client.force_login(make_user("admin", is_superuser=True))
    now = timezone.now()
    old = make_run(id="old-one", created_at=now - timedelta(days=3), input={"customer": "acme-7"})
    for index in range(6):
        make_run(id=f"new-{index}", created_at=now - timedelta(minutes=index), input={"customer": f"zeta-{index}"})
    page = client.get("/monitor/runs/?q=acme-7").content.decode()
    assert ROW.findall(page) == [] and 'id="search-window"' in page and "5 most recent runs" in page
    # A complete run id is found however old; "To" moves the window back.
    assert ROW.findall(client.get("/monitor/runs/?q=old-one").content.decode()) == [old.id]
    until = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert ROW.findall(client.get(f"/monitor/runs/?q=acme-7&until={until}").content.decode()) == [old.id]
    assert ROW.findall(client.get("/monitor/runs/?q=zeta-2").content.decode()) == ["new-2"]


def test_trigger_and_parent_filters_use_their_indexes(client):
    client.force_login(make_user("admin", is_superuser=True))
    make_run(id="child", trigger={"type": "parent", "run_id": "p-1", "step_id": "each"})
    make_run(id="other-child", trigger={"type": "parent", "run_id": "p-2", "step_id": "each"})
    make_run(id="hooked", trigger={"type": "webhook"})
    assert ROW.findall(client.get("/monitor/runs/?trigger=webhook").content.decode()) == ["hooked"]
    assert ROW.findall(client.get("/monitor/runs/?parent=p-1&step=each").content.decode()) == ["child"]
    if connection.vendor == "sqlite":  # PostgreSQL prefers a scan of a table this small
        for params, index in (({"trigger": "webhook"}, "run_trigger_type_created"),
                              ({"parent": "p-1"}, "run_trigger_parent")):
            plan = views.filter_runs(make_user(f"su-{index}", is_superuser=True), params)[:26].explain()
            assert index in plan, plan


def test_dashboard_counts_per_status_and_samples_recent_durations(client, monkeypatch):
    from monitor import stats

    monkeypatch.setattr(stats, "DURATION_SAMPLE", 3)
    client.force_login(make_user("admin", is_superuser=True))
    now = timezone.now()
    for index in range(5):  # durations 1..5 s, the newest run the shortest
        start = now - timedelta(minutes=index)
        make_run(status="succeeded", created_at=start, started_at=start, ended_at=start + timedelta(seconds=index + 1))
    make_run(status="failed", id="failed-early-ended-late", created_at=now - timedelta(minutes=9),
             ended_at=now, error="late")
    make_run(status="failed", id="failed-late-ended-early", created_at=now - timedelta(minutes=1),
             ended_at=now - timedelta(minutes=1), error="early")
    make_run(status="running")
    make_run(status="succeeded", created_at=now - timedelta(days=2))  # outside the 24 h window
    data = client.get("/monitor/dashboard/data/").json()
    assert data["totals"]["total"] == 8 and data["totals"]["succeeded"] == 5 and data["totals"]["failed"] == 2
    assert data["in_flight"] == 1
    [durations] = data["durations"]
    assert durations["runs"] == 3 and durations["p95"] == pytest.approx(3)  # the 3 most recent
    assert [f["id"] for f in data["recent_failures"]] == ["failed-early-ended-late", "failed-late-ended-early"]
    assert "last 3 succeeded runs" in client.get("/monitor/").content.decode()


def test_api_pages_for_a_user_granted_two_workflows(client, many):
    user = make_user("scoped-api")
    for slug in ("orders", "billing"):
        WorkflowAccess.objects.create(workflow=Workflow.objects.get(slug=slug), user=user, permission="view")
    client.force_login(user)
    visible = expected(Run.objects.filter(workflow__in=["orders", "billing"]))
    seen, url = [], "/api/runs/?page_size=20"
    while url:
        page = client.get(url).json()
        assert page["count"] == 73
        seen += [run["id"] for run in page["results"]]
        url = page["next"]
    assert seen == visible
    failed = client.get("/api/runs/?status=failed&page=2&page_size=5").json()
    assert failed["count"] == 19 and [r["id"] for r in failed["results"]] == [
        r for r in visible if Run.objects.get(id=r).status == "failed"][5:10]


def test_deep_api_pages_merged_per_workflow_agree(client, many, monkeypatch):
    from monitor import keyset

    user = make_user("scoped-deep")
    for slug in ("orders", "billing"):
        WorkflowAccess.objects.create(workflow=Workflow.objects.get(slug=slug), user=user, permission="view")
    client.force_login(user)
    visible = expected(Run.objects.filter(workflow__in=["orders", "billing"]))
    for threshold in (5000, 0):  # candidates ordered by the database, then keys merged here
        monkeypatch.setattr(keyset, "MERGE_KEYS_ABOVE", threshold)
        pages = [client.get(f"/api/runs/?page={n}&page_size=7").json() for n in range(1, 12)]
        assert [r["id"] for page in pages for r in page["results"]] == visible
