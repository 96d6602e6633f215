"""Celery tasks of the triggers (queue `sluice`): the scheduled start of a run, at each cron tick."""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from django.utils import timezone

from monitor import runs, workflows

from .schedules import TASK_NAME, ScheduleError, schedule_of

log = logging.getLogger(__name__)

# uuid5 namespace for run ids of scheduled ticks (a fixed, arbitrary UUID).
SCHEDULE_NAMESPACE = uuid.UUID("0b7d3c1e-8a55-4f0c-9d0e-2f6a4b8c1d23")


def scheduled_run_id(slug: str, tick) -> str:
    """One run id per workflow and cron tick (minute): a repeated beat tick starts nothing new."""
    return uuid.uuid5(SCHEDULE_NAMESPACE, f"schedule:{slug}:{tick.strftime('%Y-%m-%dT%H:%M%z')}").hex


# Registered under its first module's name, which beat entries already stored keep calling.
@shared_task(name=TASK_NAME, ignore_result=True)
def start_scheduled_run(slug: str) -> str | None:
    """Start a run of `slug`'s live version for the current cron tick; returns the run id.

    Returns None (and starts nothing) when the workflow is gone, archived, unpublished, its
    trigger is paused, or its live version no longer has a schedule trigger (beat fired before a
    publish disabled it). The start is monitor.runs.start_run's, audited as by "schedule".
    """
    workflow = workflows.with_live_version(slug)
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
    tick = schedule.last_tick(timezone.now())
    trigger = {"type": "schedule", "scheduled_at": tick.isoformat(), "cron": schedule.cron,
               "timezone": schedule.timezone}
    version = workflow.live_version.number
    # StartFailed propagates: the task fails visibly in the worker log and beat fires again next tick.
    run_id = runs.start_run(slug, version, schedule.input, actor="schedule", trigger=trigger,
                            definition=workflow.live_version.definition, run_id=scheduled_run_id(slug, tick))
    log.info("scheduled run %s of %s@%s for %s", run_id, slug, version, tick.isoformat())
    return run_id
