"""The `schedule` trigger: a cron line in the live version becomes a django-celery-beat entry.

`sync_schedule(slug, definition)` is called after every publish (and unpublish/archive, with
None). It keeps exactly one PeriodicTask per workflow, named "sluice:<slug>", calling
`triggers.tasks.start_scheduled_run(slug)` (registered under its first name, TASK_NAME, which
stored beat entries keep) on the `sluice` queue. Beat's DatabaseScheduler
notices the change by itself. A version without a schedule trigger disables the entry (kept, so
the admin still shows when it last ran).

Trigger format: {"type": "schedule", "cron": "*/5 * * * *", "timezone": "Europe/Berlin",
"input": {...}}. Five cron fields: minute hour day-of-month month day-of-week.
"""

from __future__ import annotations

import json
import zoneinfo
from dataclasses import dataclass
from datetime import datetime

from croniter import croniter

from orchestrator import spec

# The Celery name of triggers.tasks.start_scheduled_run: the module it was first written in.
# Beat entries in the database name it, so it stays.
TASK_NAME = "orchestrator.tasks.start_scheduled_run"
QUEUE = "sluice"


class ScheduleError(ValueError):
    """A schedule trigger that cannot be scheduled; `path` names the field (trigger.cron, ...)."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class Schedule:
    cron: str
    timezone: str
    input: object

    @property
    def fields(self) -> dict[str, str]:
        minute, hour, day_of_month, month_of_year, day_of_week = self.cron.split()
        return {"minute": minute, "hour": hour, "day_of_month": day_of_month,
                "month_of_year": month_of_year, "day_of_week": day_of_week}

    def last_tick(self, now: datetime, slack_seconds: float = 5.0) -> datetime:
        """The cron time this firing belongs to: the latest tick at or before now (+slack).

        Beat may fire a hair early and a worker may pick the task up late; both map to the
        same tick, which is what makes the run id of a tick stable.
        """
        local_now = now.astimezone(zoneinfo.ZoneInfo(self.timezone))
        probe = local_now.timestamp() + slack_seconds
        start = datetime.fromtimestamp(probe, tz=local_now.tzinfo)
        return croniter(self.cron, start).get_prev(datetime)


def schedule_of(definition: dict | None) -> Schedule | None:
    """The schedule of a definition, None if its trigger is not a schedule, ScheduleError if bad."""
    trigger = (definition or {}).get("trigger") or {}
    if trigger.get("type") != "schedule":
        return None
    # Checked as validation checks it (orchestrator.spec, the one place for cron lines and zones).
    cron = trigger.get("cron")
    cron = " ".join(cron.split()) if isinstance(cron, str) else cron
    problem = spec.cron_problem(cron)
    if problem is not None:
        raise ScheduleError("trigger.cron", problem[1])
    timezone = trigger.get("timezone") or "UTC"
    problem = spec.timezone_problem(timezone)
    if problem is not None:
        raise ScheduleError("trigger.timezone", problem)
    return Schedule(cron=cron, timezone=timezone, input=trigger.get("input", {}))


def task_name(slug: str) -> str:
    return f"sluice:{slug}"


def sync_schedule(slug: str, definition: dict | None):
    """Create, update or disable the beat entry of `slug`; returns the PeriodicTask or None."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    schedule = schedule_of(definition)
    if schedule is None:
        PeriodicTask.objects.filter(name=task_name(slug), enabled=True).update(enabled=False)
        # .update() skips the save signal beat watches; tell it explicitly.
        from django_celery_beat.models import PeriodicTasks

        PeriodicTasks.update_changed()
        return None
    crontab, _ = CrontabSchedule.objects.get_or_create(**schedule.fields, timezone=schedule.timezone)
    task, _ = PeriodicTask.objects.update_or_create(
        name=task_name(slug),
        defaults={
            "task": TASK_NAME, "crontab": crontab, "interval": None, "args": json.dumps([slug]),
            "kwargs": "{}", "queue": QUEUE, "enabled": True,
            "description": f"Starts a run of workflow '{slug}' ({schedule.cron} {schedule.timezone})",
        },
    )
    return task
