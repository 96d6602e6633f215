"""Dashboard numbers computed from the run projections a user may see."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.utils import timezone

from .models import DeadLetter, RunnerProcess, RunStatus

# A runner whose last heartbeat is older than this is shown as silent.
RUNNER_SILENT_AFTER = timedelta(seconds=60)
# Duration percentiles are computed over this many of the window's most recent succeeded runs.
DURATION_SAMPLE = 5000


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (no interpolation: an operator reads it as a real run's duration)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(fraction * len(ordered) + 0.5))))
    return ordered[rank - 1]


def dashboard(runs, now=None, minutes: int = 60, window_hours: int = 24) -> dict:
    """`runs`: the queryset of runs the viewer may see (monitor.permissions.visible_runs)."""
    now = now or timezone.now()
    since = now - timedelta(minutes=minutes)
    per_minute = defaultdict(lambda: {"succeeded": 0, "failed": 0, "other": 0})
    for created_at, status in runs.filter(created_at__gte=since).values_list("created_at", "status"):
        bucket = created_at.replace(second=0, microsecond=0)
        per_minute[bucket]["succeeded" if status == "succeeded" else "failed" if status == "failed" else "other"] += 1
    labels, series = [], {"succeeded": [], "failed": [], "other": []}
    start = since.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for index in range(minutes):
        minute = start + timedelta(minutes=index)
        labels.append(minute.strftime("%H:%M"))
        for key in series:
            series[key].append(per_minute[minute][key] if minute in per_minute else 0)

    # Per-status counts over the window, one query per status: each is a range of the
    # (status, created_at) index (or (workflow, status, created_at) for a user granted a few
    # workflows), counted without reading the rows; one aggregate with a CASE per status reads
    # every row of the window instead (a day of a busy installation is tens of thousands).
    window = runs.filter(created_at__gte=now - timedelta(hours=window_hours))
    by_status = {status: window.filter(status=status).count() for status in RunStatus.values}
    counts = {"total": sum(by_status.values()), "succeeded": by_status[RunStatus.SUCCEEDED],
              "failed": by_status[RunStatus.FAILED], "cancelled": by_status[RunStatus.CANCELLED]}
    finished = counts["succeeded"] + counts["failed"] + counts["cancelled"]
    # Durations: the most recent DURATION_SAMPLE succeeded runs of the window (the page says so),
    # not all of them: a percentile of a few thousand recent runs reads the same, for a fraction.
    durations = defaultdict(list)
    recent = (window.filter(status=RunStatus.SUCCEEDED).order_by("-created_at", "-id")
              .values_list("workflow", "started_at", "ended_at")[:DURATION_SAMPLE])
    for workflow, started, ended in recent:
        if started and ended:
            durations[workflow].append((ended - started).total_seconds())
    per_workflow = [{"workflow": workflow, "runs": len(values), "p50": percentile(values, 0.5),
                     "p95": percentile(values, 0.95)} for workflow, values in sorted(durations.items())]
    # The latest failures by end time, among the most recent failed runs (the status index, newest
    # first, not a sort of every failed run there is).
    failed = list(runs.filter(status=RunStatus.FAILED).order_by("-created_at", "-id")
                  .only("id", "workflow", "error", "ended_at", "created_at")[:50])
    failed.sort(key=lambda r: r.ended_at or r.created_at, reverse=True)
    runners = [{"instance": r.instance, "host": r.host, "pid": r.pid, "roles": r.roles,
                "last_heartbeat": r.last_heartbeat.isoformat(), "stopping": r.stopping,
                "silent": now - r.last_heartbeat > RUNNER_SILENT_AFTER, "stats": r.stats}
               for r in RunnerProcess.objects.all()]
    return {
        "generated_at": now.isoformat(),
        "per_minute": {"labels": labels, **series},
        "window_hours": window_hours,
        "totals": {**counts, "finished": finished,
                   "success_rate": counts["succeeded"] / finished if finished else None,
                   "failure_rate": counts["failed"] / finished if finished else None},
        "in_flight": runs.filter(status__in=[RunStatus.PENDING, RunStatus.RUNNING]).count(),
        "durations": per_workflow,
        "durations_sample": DURATION_SAMPLE,
        "recent_failures": [
            {"id": r.id, "workflow": r.workflow, "error": r.error[:200],
             "ended_at": r.ended_at.isoformat() if r.ended_at else None}
            for r in failed[:10]],
        "dead_letters": DeadLetter.objects.filter(status=DeadLetter.Status.NEW).count(),
        "runners": runners,
        "runner_silent_after_seconds": RUNNER_SILENT_AFTER.total_seconds(),
    }
