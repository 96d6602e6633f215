"""Celery tasks run by `celery worker` (queue `sluice`): scheduled starts and housekeeping."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone

from .runtime import commands
from .schedules import ScheduleError, schedule_of

log = logging.getLogger(__name__)

# uuid5 namespace for run ids of scheduled ticks (a fixed, arbitrary UUID).
SCHEDULE_NAMESPACE = uuid.UUID("0b7d3c1e-8a55-4f0c-9d0e-2f6a4b8c1d23")


def scheduled_run_id(slug: str, tick) -> str:
    """One run id per workflow and cron tick (minute): a repeated beat tick starts nothing new."""
    return uuid.uuid5(SCHEDULE_NAMESPACE, f"schedule:{slug}:{tick.strftime('%Y-%m-%dT%H:%M%z')}").hex


@shared_task(name="orchestrator.tasks.start_scheduled_run", ignore_result=True)
def start_scheduled_run(slug: str) -> str | None:
    """Start a run of `slug`'s live version for the current cron tick; returns the run id.

    Returns None (and starts nothing) when the workflow is gone, archived, unpublished, its
    trigger is paused, or its live version no longer has a schedule trigger (beat fired before a
    publish disabled it).
    """
    from designer.models import Workflow
    from monitor.models import Run, RunStatus

    workflow = Workflow.objects.select_related("live_version").filter(slug=slug).first()
    if workflow is None or workflow.archived or workflow.live_version is None:
        log.warning("schedule tick for %s skipped: no live version", slug)
        return None
    if workflow.trigger_paused:
        # A paused schedule skips its ticks (they are not made up on resume, as cron does).
        log.info("schedule tick for %s skipped: its trigger is paused", slug)
        return None
    try:
        schedule = schedule_of(workflow.live_version.definition)
    except ScheduleError as exc:
        log.warning("schedule tick for %s skipped: %s", slug, exc)
        return None
    if schedule is None:
        log.info("schedule tick for %s skipped: the live version has no schedule trigger", slug)
        return None
    now = timezone.now()
    tick = schedule.last_tick(now)
    run_id = scheduled_run_id(slug, tick)
    trigger = {"type": "schedule", "scheduled_at": tick.isoformat(), "cron": schedule.cron,
               "timezone": schedule.timezone}
    version = workflow.live_version.number
    payload = {} if schedule.input is None else schedule.input
    # CommandError propagates: the task fails visibly in the worker log and beat fires again next tick.
    commands.start_run(slug, version, payload, started_by="schedule", trigger=trigger, run_id=run_id)
    try:
        Run.objects.get_or_create(id=run_id, defaults={
            "workflow": slug, "version": version, "status": RunStatus.PENDING, "input": payload,
            "trigger": trigger, "started_by": "schedule", "created_at": now,
        })
    except IntegrityError:  # the projector inserted it first; its row is newer
        pass
    log.info("scheduled run %s of %s@%s for %s", run_id, slug, version, tick.isoformat())
    return run_id


@shared_task(name="orchestrator.tasks.purge_old_runs", ignore_result=True)
def purge_old_runs() -> int:
    """Delete run rows (with their steps and history rows) older than SLUICE_RUN_RETENTION_DAYS.

    Only the database projection goes; Kafka's wf.history keeps its own retention.
    """
    from monitor.models import Run

    days = settings.SLUICE_RUN_RETENTION_DAYS
    if days <= 0:
        return 0
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = Run.objects.filter(created_at__lt=cutoff).exclude(status__in=["pending", "running"]).delete()
    log.info("purged %d rows of runs created before %s", deleted, cutoff.isoformat())
    return deleted


# ---- the celery_task step's callbacks (orchestrator/steps/celery_task.py) -------------------
def _report(run_id: str, step_id: str, attempt: int, ok: bool, output=None, error: str | None = None) -> None:
    import time

    from .messages import StepResult

    now = time.time()
    commands.send_command(StepResult(run_id=run_id, step_id=step_id, attempt=attempt, ok=ok, output=output,
                                     error=error, started_at=now, ended_at=now, worker="celery"))


@shared_task(name="sluice.celery_step_succeeded", ignore_result=True)
def celery_step_succeeded(result, *, run_id: str, step_id: str, attempt: int, celery_task_id: str) -> None:
    """Linked after a celery_task step's task: its return value is the step's output."""
    import msgspec

    try:
        msgspec.json.encode(result)
    except (TypeError, msgspec.EncodeError) as exc:
        _report(run_id, step_id, attempt, False, error=f"Celery task {celery_task_id} returned "
                                                         f"{type(result).__name__}, which is not JSON: {exc}")
        return
    _report(run_id, step_id, attempt, True, output=result)


@shared_task(name="sluice.celery_step_failed", ignore_result=True)
def celery_step_failed(*failure, run_id: str, step_id: str, attempt: int, celery_task_id: str) -> None:
    """Linked to a celery_task step's task on error. Celery calls it with (request, exc,
    traceback) in a worker that knows this task, or with the failed task's id otherwise."""
    if len(failure) >= 2 and isinstance(failure[1], BaseException):
        exc = failure[1]
        error = f"Celery task {celery_task_id} failed: {type(exc).__name__}: {exc}"
    else:
        error = f"Celery task {celery_task_id} failed (its error is in the log of the Celery worker that ran it)"
    _report(run_id, step_id, attempt, False, error=error[:4000])
