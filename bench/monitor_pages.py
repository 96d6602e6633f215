"""`python -m bench monitor`: monitor pages with 1,000,000 run rows in the database.

Fills a fresh database (SQLite in a temporary SLUICE_DATA_DIR; PostgreSQL when DATABASE_URL is
set, e.g. `scripts/with-postgres .venv/bin/python -m bench monitor`) with runs of 20 workflows
over 30 days, steps and history for a sample of them, then times the monitor pages and the REST
API server-side with Django's test client (no network, no browser): the median and the worst
of several requests per page, for a superuser and for a user granted three workflows.

    python -m bench.monitor_pages [--runs 1000000] [--repeat 5] [--keep DIR] [--explain]

--keep DIR fills DIR once and reuses it next time (SQLite only; the migrations still run, so
a new index is built on the existing rows). Consumer lag (a Kafka admin call, cached) is left
out of the dashboard timings: it is the broker's time, not the database's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import table  # noqa: E402

WORKFLOWS = [f"wf-{index:02d}" for index in range(20)]
# Some workflows run far more often than others (a Zipf-like spread).
WEIGHTS = [1 / (index + 1) for index in range(20)]
TRIGGERS = ["kafka"] * 60 + ["schedule"] * 15 + ["webhook"] * 10 + ["manual"] * 10 + ["parent"] * 5
SCOPED_WORKFLOWS = ["wf-03", "wf-07", "wf-15"]
DAYS = 30


def setup(data_dir: Path | None) -> None:
    if data_dir is not None and "DATABASE_URL" not in os.environ:
        os.environ["SLUICE_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()


def _rows(count: int, now: datetime, seed: int = 7):
    """Run rows as tuples, oldest first; times to the millisecond, so bursts share created_at."""
    rng = random.Random(seed)
    span = DAYS * 86400.0
    offsets = sorted((rng.random() * span for _ in range(count)), reverse=True)
    workflows = rng.choices(WORKFLOWS, WEIGHTS, k=count)
    for index, back in enumerate(offsets):
        created = (now - timedelta(seconds=back)).replace(microsecond=0) + timedelta(
            milliseconds=int((back * 1000) % 1000) // 10 * 10)
        workflow = workflows[index]
        kind = rng.choice(TRIGGERS)
        if kind == "kafka":
            trigger = {"type": "kafka", "topic": f"{workflow}-in", "partition": index % 6, "offset": index,
                       "key": f"k{index % 997}"}
        elif kind == "parent":
            trigger = {"type": "parent", "run_id": f"parent-{index // 50}", "step_id": "each"}
        else:
            trigger = {"type": kind}
        if back < 3600 and rng.random() < 0.3:
            status = rng.choice(["pending", "running", "running"])
        else:
            roll = rng.random()
            status = "succeeded" if roll < 0.90 else "failed" if roll < 0.97 else "cancelled"
        started = created + timedelta(milliseconds=40)
        ended = None if status in ("pending", "running") else started + timedelta(
            seconds=rng.expovariate(1 / (1 + WORKFLOWS.index(workflow) % 5)))
        run_input = {"customer": f"customer-{rng.randrange(50000)}", "order_id": index,
                     "amount": round(rng.random() * 500, 2), "items": [{"sku": f"sku-{index % 311}", "qty": 1}]}
        yield (f"{rng.getrandbits(128):032x}", workflow, 1 + index % 3, status, json.dumps(run_input),
               json.dumps({"ok": True}) if status == "succeeded" else None,
               "charge failed: card declined" if status == "failed" else "", json.dumps(trigger),
               "alice" if kind == "manual" else "", created, started if status != "pending" else None, ended,
               6 if ended else 2)


COLUMNS = ["id", "workflow", "version", "status", "input", "output", "error", "trigger", "started_by",
           "created_at", "started_at", "ended_at", "last_seq"]


def _insert(cursor, batch: list[tuple], sqlite: bool) -> None:
    if sqlite:
        cursor.executemany(f"INSERT INTO monitor_run ({', '.join(COLUMNS)}) VALUES "
                           f"({', '.join(['%s'] * len(COLUMNS))})", batch)
    else:
        with cursor.cursor.copy(f"COPY monitor_run ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in batch:
                copy.write_row(row)


def fill(count: int) -> dict:
    """Insert `count` runs in batches (SQLite: executemany; PostgreSQL: COPY), users and grants."""
    from django.contrib.auth.models import User
    from django.db import connection, transaction

    from designer.models import Workflow
    from monitor.models import HistoryEntry, Run, StepRun, WorkflowAccess

    now = datetime.now(UTC)
    started = time.perf_counter()
    sqlite = connection.vendor == "sqlite"
    batch: list[tuple] = []
    sample: list[str] = []
    with connection.cursor() as cursor:
        def flush():
            if not batch:
                return
            with transaction.atomic():
                _insert(cursor, batch, sqlite)
            batch.clear()

        for index, row in enumerate(_rows(count, now)):
            if sqlite:  # Django's SQLite format: naive UTC text
                row = (*row[:9], *(value.replace(tzinfo=None).isoformat(" ") if value else None
                                   for value in row[9:12]), row[12])
            batch.append(row)
            if index % 200 == 0:
                sample.append(row[0])
            if len(batch) >= 20000:
                flush()
        flush()
    filled = time.perf_counter() - started
    # Steps and history for a sample of runs (the run detail page reads them).
    runs = Run.objects.filter(id__in=sample[-2000:])
    steps, history = [], []
    for run in runs:
        t = run.created_at
        for n, step_id in enumerate(["validate", "charge", "ship", "notify"]):
            steps.append(StepRun(run=run, step_id=step_id, type="python", status="succeeded",
                                 attempts=[{"attempt": 1}], input={"n": n}, output={"ok": True},
                                 started_at=t + timedelta(seconds=n), ended_at=t + timedelta(seconds=n + 0.5)))
        for seq, kind in enumerate(["run_started", "step_started", "step_succeeded", "step_started", "step_succeeded",
                                    "run_succeeded"], start=1):
            history.append(HistoryEntry(run=run, seq=seq, kind=kind, step_id="charge" if "step" in kind else "",
                                        ts=t + timedelta(seconds=seq), data={"attempt": 1}))
    StepRun.objects.bulk_create(steps, batch_size=2000)
    HistoryEntry.objects.bulk_create(history, batch_size=2000)
    for slug in WORKFLOWS:
        Workflow.objects.get_or_create(slug=slug, defaults={"name": slug})
    User.objects.create_superuser("bench-admin", "admin@example.com", "x")
    scoped = User.objects.create_user("bench-scoped", "scoped@example.com", "x")
    for slug in SCOPED_WORKFLOWS:
        WorkflowAccess.objects.create(workflow=Workflow.objects.get(slug=slug), user=scoped, permission="view")
    if not sqlite:  # autovacuum would have vacuumed and analyzed a table built over 30 days
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    return {"seconds": filled, "detail_run": runs.first().id}


def _time(client, url: str, repeat: int) -> tuple[float, float, int, bytes]:
    client.get(url)  # warm: templates compiled, pages cached by the database
    times = []
    response = None
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code in (301, 302):
            response = client.get(response["Location"])
    return statistics.median(times), max(times), response.status_code, response.content


OLDER = re.compile(r'<a [^>]*rel="next"[^>]*href="([^"]+)"|<a [^>]*href="([^"]+)"[^>]*rel="next"')


def _older_link(html: bytes) -> str | None:
    found = OLDER.search(html.decode())
    if not found:
        return None
    return "/monitor/runs/" + (found.group(1) or found.group(2)).replace("&amp;", "&")


def measure(repeat: int, detail_run: str) -> list[list]:
    from django.contrib.auth.models import User
    from django.test import Client
    from django.utils import timezone

    import monitor.views

    monitor.views.consumer_lag = lambda: {"groups": [], "error": None}
    now = timezone.now()
    since = (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    until = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    rows = []
    for username, workflow in (("bench-admin", "wf-01"), ("bench-scoped", "wf-07")):
        client = Client()
        client.force_login(User.objects.get(username=username))
        pages = [
            ("run list, page 1", "/monitor/runs/"),
            ("run list, workflow", f"/monitor/runs/?workflow={workflow}"),
            ("run list, status=failed", "/monitor/runs/?status=failed"),
            ("run list, workflow + running", f"/monitor/runs/?workflow={workflow}&status=running"),
            ("run list, since/until (one day)", f"/monitor/runs/?since={since}&until={until}"),
            ("run list, trigger=webhook", "/monitor/runs/?trigger=webhook"),
            ("run list, trigger=parent + failed", "/monitor/runs/?trigger=parent&status=failed"),
            ("run list, q=customer-4242", "/monitor/runs/?q=customer-4242"),
            ("run list, htmx rows", "/monitor/runs/?status=succeeded"),
            ("dashboard page", "/monitor/"),
            ("dashboard data (JSON)", "/monitor/dashboard/data/"),
            ("run detail", f"/monitor/runs/{detail_run}/"),
            ("API /api/runs/", "/api/runs/"),
            ("API /api/runs/?workflow&status", f"/api/runs/?workflow={workflow}&status=failed"),
            ("API /api/runs/?page=200", "/api/runs/?page=200"),
        ]
        for name, url in pages:
            if username == "bench-scoped" and name == "run detail":
                continue
            median, worst, code, _ = _time(client, url, repeat)
            rows.append([username.removeprefix("bench-"), name, median, worst, code])
        # Deep in the list: follow the "older" link 50 times (25 runs a page), then time that page;
        # without such a link (page numbers), ask for page 51 directly.
        html = client.get("/monitor/runs/").content
        url = _older_link(html)
        hops = 0
        while url and hops < 50:
            html = client.get(url).content
            hops += 1
            next_url = _older_link(html)
            if hops < 50:
                url = next_url
        if hops:
            name = f"run list, {hops} x older"
        else:
            url, name = "/monitor/runs/?page=51", "run list, ?page=51"
        median, worst, code, _ = _time(client, url, repeat)
        rows.append([username.removeprefix("bench-"), name, median, worst, code])
        median, worst, code, _ = _time(client, "/monitor/runs/?page=20000", repeat)
        rows.append([username.removeprefix("bench-"), "run list, ?page=20000", median, worst, code])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench monitor")
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="SQLite data directory to fill once and reuse")
    parser.add_argument("--explain", action="store_true", help="print the plans of the slow queries")
    args = parser.parse_args()
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="sluice-bench-monitor-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    setup(data_dir)
    from django.core.management import call_command
    from django.db import connection

    from monitor.models import Run

    call_command("migrate", verbosity=0)
    if Run.objects.exists():
        detail_run = Run.objects.filter(steps__isnull=False).values_list("id", flat=True).first()
        filled = "reused"
    else:
        result = fill(args.runs)
        detail_run, filled = result["detail_run"], f"{result['seconds']:.0f} s"
    total = Run.objects.count()
    backend = f"{connection.vendor} {connection.Database.sqlite_version if connection.vendor == 'sqlite' else ''}"
    if connection.vendor == "postgresql":
        backend = f"postgresql {connection.pg_version // 10000}"
    load = os.getloadavg()
    rows = measure(args.repeat, detail_run)
    load_after = os.getloadavg()
    print(table(f"Monitor pages, {total:,} runs, {backend.strip()} (filled: {filled}); server time per request, "
                f"{args.repeat} requests each; load average {load[0]:.1f} before, {load_after[0]:.1f} after "
                f"({os.cpu_count()} cores)",
                ["user", "page", "median (ms)", "max (ms)", "status"], rows))
    if args.explain:
        from django.contrib.auth.models import User
        from django.test import RequestFactory

        from monitor.views import filter_runs

        admin = User.objects.get(username="bench-admin")
        for params in ({}, {"workflow": "wf-01", "status": "running"}, {"trigger": "webhook"}, {"q": "customer-4242"}):
            request = RequestFactory().get("/", params)
            print(params, filter_runs(admin, request.GET)[:26].explain(), sep="\n")
    if not args.keep:
        connection.close()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
