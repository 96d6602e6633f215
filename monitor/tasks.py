"""Celery tasks of the monitor: retention of run rows."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from .models import Run, RunStatus

log = logging.getLogger(__name__)

PURGE_TASK_NAME = "monitor.tasks.purge_old_runs"
BATCH = 1000


@shared_task(name=PURGE_TASK_NAME)
def purge_old_runs(days: int | None = None) -> int:
    """Delete finished runs created more than `days` (default SLUICE_RUN_RETENTION_DAYS) ago.

    Their steps and history go with them (cascade). Runs still in flight are kept whatever their
    age. 0 days keeps everything. Deletes in batches so SQLite is not locked for long.
    """
    return _purge(days)[0]


def _purge(days: int | None) -> tuple[int, int]:
    """(runs deleted, rows deleted with their steps and history)."""
    days = settings.SLUICE_RUN_RETENTION_DAYS if days is None else days
    if days <= 0:
        return 0, 0
    cutoff = timezone.now() - timedelta(days=days)
    old = Run.objects.filter(created_at__lt=cutoff).exclude(status__in=[RunStatus.PENDING, RunStatus.RUNNING])
    total = rows = 0
    while True:
        ids = list(old.values_list("id", flat=True)[:BATCH])
        if not ids:
            break
        rows += Run.objects.filter(id__in=ids).delete()[0]
        total += len(ids)
    log.info("retention: purged %d runs created before %s", total, cutoff.isoformat())
    return total, rows


# The daily retention entry `manage.py up` schedules (orchestrator/bootstrap.py) calls this name,
# under which the task was first registered (in orchestrator/tasks.py); it is the same purge and
# answers, as it did, the rows deleted (runs with their steps and history).
@shared_task(name="orchestrator.tasks.purge_old_runs", ignore_result=True)
def purge_old_runs_daily() -> int:
    return _purge(None)[1]
