"""Schedule triggers: beat entries from definitions, and the real Celery task against the real broker."""

import json
import time
from datetime import datetime, timezone

import pytest
from django_celery_beat.models import PeriodicTask

from designer.models import WorkflowVersion
from monitor import tasks as monitor_tasks
from monitor.models import AuditEntry, Run
from tests.trigger_support import definition, make_live, read_starts
from triggers import schedules, tasks
from triggers.schedules import ScheduleError, schedule_of, sync_schedule

pytestmark = pytest.mark.django_db


def test_sync_creates_a_beat_entry_from_the_cron_line():
    task = sync_schedule("nightly", definition("nightly", {"type": "schedule", "cron": "30 2 * * 1-5",
                                                          "timezone": "Europe/Berlin"}))
    task = PeriodicTask.objects.get(name="sluice:nightly")
    assert task.enabled
    assert task.task == "orchestrator.tasks.start_scheduled_run"
    assert json.loads(task.args) == ["nightly"]
    assert task.queue == "sluice"
    crontab = task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_month, crontab.month_of_year, crontab.day_of_week) == \
        ("30", "2", "*", "*", "1-5")
    assert str(crontab.timezone) == "Europe/Berlin"


def test_sync_updates_in_place_and_disables_without_a_schedule():
    sync_schedule("every", definition("every", {"type": "schedule", "cron": "*/5 * * * *"}))
    sync_schedule("every", definition("every", {"type": "schedule", "cron": "0 * * * *"}))
    assert PeriodicTask.objects.filter(name="sluice:every").count() == 1
    task = PeriodicTask.objects.get(name="sluice:every")
    assert (task.crontab.minute, task.crontab.hour) == ("0", "*")
    assert str(task.crontab.timezone) == "UTC"
    assert sync_schedule("every", definition("every", {"type": "manual"})) is None
    assert not PeriodicTask.objects.get(name="sluice:every").enabled
    sync_schedule("every", definition("every", {"type": "schedule", "cron": "0 * * * *"}))
    assert PeriodicTask.objects.get(name="sluice:every").enabled
    sync_schedule("every", None)  # unpublished / archived
    assert not PeriodicTask.objects.get(name="sluice:every").enabled


def test_sync_of_a_workflow_that_never_had_a_schedule_creates_nothing():
    assert sync_schedule("plain", definition("plain", {"type": "manual"})) is None
    assert not PeriodicTask.objects.filter(name="sluice:plain").exists()


@pytest.mark.parametrize("trigger, path", [
    ({"type": "schedule"}, "trigger.cron"),
    ({"type": "schedule", "cron": "every five minutes"}, "trigger.cron"),
    ({"type": "schedule", "cron": "* * * *"}, "trigger.cron"),
    ({"type": "schedule", "cron": "61 * * * *"}, "trigger.cron"),
    ({"type": "schedule", "cron": "* * * * * *"}, "trigger.cron"),
    ({"type": "schedule", "cron": "* * * * *", "timezone": "Mars/Olympus"}, "trigger.timezone"),
])
def test_bad_schedules_name_the_field(trigger, path):
    with pytest.raises(ScheduleError) as info:
        sync_schedule("bad", definition("bad", trigger))
    assert info.value.path == path
    assert str(info.value).startswith(path)
    assert not PeriodicTask.objects.filter(name="sluice:bad").exists()


def test_last_tick_maps_early_and_late_firings_to_the_same_minute():
    schedule = schedule_of(definition("x", {"type": "schedule", "cron": "*/5 * * * *"}))
    tick = datetime(2026, 11, 25, 2, 5, tzinfo=timezone.utc)
    early = datetime(2026, 11, 25, 2, 4, 59, 800000, tzinfo=timezone.utc)
    late = datetime(2026, 11, 25, 2, 8, 30, tzinfo=timezone.utc)
    assert schedule.last_tick(tick) == tick
    assert schedule.last_tick(early) == tick
    assert schedule.last_tick(late) == tick
    assert schedule.last_tick(datetime(2026, 11, 25, 2, 10, 1, tzinfo=timezone.utc)).minute == 10


def test_last_tick_honours_the_time_zone():
    schedule = schedule_of(definition("x", {"type": "schedule", "cron": "0 9 * * *", "timezone": "Asia/Tokyo"}))
    tick = schedule.last_tick(datetime(2026, 11, 25, 0, 30, tzinfo=timezone.utc))  # 09:30 in Tokyo
    assert tick.astimezone(timezone.utc) == datetime(2026, 11, 25, 0, 0, tzinfo=timezone.utc)


@pytest.mark.kafka
def test_scheduled_task_starts_one_run_per_tick(kafka, kafka_broker):
    make_live("report", {"type": "schedule", "cron": "* * * * *", "input": {"kind": "daily"}})
    # The real task function, as the celery worker calls it (twice: a duplicated beat tick).
    first = tasks.start_scheduled_run.run("report")
    second = tasks.start_scheduled_run.run("report")
    if first != second:  # the two calls straddled a minute boundary: one more try in the same minute
        first = tasks.start_scheduled_run.run("report")
        second = tasks.start_scheduled_run.run("report")
    assert first == second
    starts = [s for s in read_starts(kafka_broker, kafka.runs, 4, timeout=5) if s.run_id == first]
    assert len(starts) == 2  # both sent; the engine ignores a start for a run it has
    start = starts[0]
    assert (start.workflow, start.version, start.input) == ("report", 1, {"kind": "daily"})
    assert start.started_by == "schedule"
    assert start.trigger["type"] == "schedule" and start.trigger["cron"] == "* * * * *"
    scheduled = datetime.fromisoformat(start.trigger["scheduled_at"])
    assert scheduled.second == 0 and abs(time.time() - scheduled.timestamp()) < 125
    assert Run.objects.get(id=first).trigger["type"] == "schedule"
    # Audited like every other start, by the system actor "schedule" (once per call).
    entries = AuditEntry.objects.filter(action="start", target_id=first)
    assert {(e.username, e.target_type) for e in entries} == {("schedule", "run")}
    assert entries[0].details == {"workflow": "report", "version": 1, "trigger": "schedule"}


@pytest.mark.kafka
def test_scheduled_task_skips_when_the_live_version_lost_its_schedule(kafka, kafka_broker):
    workflow = make_live("was-scheduled", {"type": "schedule", "cron": "* * * * *"})
    version = WorkflowVersion.objects.create(workflow=workflow, number=2,
                                             definition=definition("was-scheduled", {"type": "manual"}))
    workflow.live_version = version
    workflow.save()
    assert tasks.start_scheduled_run.run("was-scheduled") is None
    assert tasks.start_scheduled_run.run("never-existed") is None
    workflow.archived = True
    workflow.live_version = WorkflowVersion.objects.get(workflow=workflow, number=1)
    workflow.save()
    assert tasks.start_scheduled_run.run("was-scheduled") is None
    assert read_starts(kafka_broker, kafka.runs, 1, timeout=3) == []


def test_run_ids_differ_per_tick_and_per_workflow():
    a = datetime(2026, 11, 25, 2, 5, tzinfo=timezone.utc)
    b = datetime(2026, 11, 25, 2, 6, tzinfo=timezone.utc)
    assert tasks.scheduled_run_id("w", a) == tasks.scheduled_run_id("w", a)
    assert tasks.scheduled_run_id("w", a) != tasks.scheduled_run_id("w", b)
    assert tasks.scheduled_run_id("w", a) != tasks.scheduled_run_id("v", a)


def test_task_is_registered_with_celery_under_the_name_beat_uses():
    from orchestrator.celery import app

    app.loader.import_default_modules()
    assert schedules.TASK_NAME in app.tasks


def test_retention_task_purges_only_old_finished_runs(settings):
    from datetime import timedelta

    from django.utils import timezone as dj_timezone

    from monitor.models import StepRun

    settings.SLUICE_RUN_RETENTION_DAYS = 30
    old = dj_timezone.now() - timedelta(days=31)
    recent = dj_timezone.now() - timedelta(days=29)
    Run.objects.create(id="old-done", workflow="w", version=1, status="succeeded", created_at=old)
    StepRun.objects.create(run_id="old-done", step_id="a", type="transform", status="succeeded")
    Run.objects.create(id="old-running", workflow="w", version=1, status="running", created_at=old)
    Run.objects.create(id="recent-failed", workflow="w", version=1, status="failed", created_at=recent)
    assert monitor_tasks.purge_old_runs_daily.run() == 2  # the run row and its step row
    assert set(Run.objects.values_list("id", flat=True)) == {"old-running", "recent-failed"}
    settings.SLUICE_RUN_RETENTION_DAYS = 0
    Run.objects.filter(id="recent-failed").update(created_at=old)
    assert monitor_tasks.purge_old_runs_daily.run() == 0
    assert Run.objects.filter(id="recent-failed").exists()


def test_retention_schedule_follows_the_setting(settings):
    from orchestrator import bootstrap

    settings.SLUICE_RUN_RETENTION_DAYS = 30
    bootstrap.ensure_retention_schedule()
    bootstrap.ensure_retention_schedule()  # idempotent on every start
    task = PeriodicTask.objects.get(name="sluice:retention")
    assert task.enabled and task.task == "orchestrator.tasks.purge_old_runs" and task.queue == "sluice"
    settings.SLUICE_RUN_RETENTION_DAYS = 0
    bootstrap.ensure_retention_schedule()
    assert not PeriodicTask.objects.get(name="sluice:retention").enabled
