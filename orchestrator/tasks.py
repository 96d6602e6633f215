"""Celery tasks of the engine (queue `sluice`): the celery_task step's callbacks.

Scheduled starts are triggers/tasks.py's, the retention of run rows monitor/tasks.py's.
"""

from __future__ import annotations

from celery import shared_task

from .runtime import commands


# ---- the celery_task step's callbacks (orchestrator/steps/celery_task.py) -------------------
def _report(run_id: str, step_id: str, attempt: int, celery_task_id: str, task: str | None, ok: bool, output=None,
            error: str | None = None) -> None:
    import time

    from .messages import StepResult

    now = time.time()
    # Where it was handed, as the worker reports it: this outcome may reach the engine first.
    handed_on = {"celery_task_id": celery_task_id, **({"task": task} if task else {})}
    commands.send_command(StepResult(run_id=run_id, step_id=step_id, attempt=attempt, ok=ok, output=output,
                                     error=error, started_at=now, ended_at=now, worker="celery",
                                     handed_on=handed_on))


@shared_task(name="sluice.celery_step_succeeded", ignore_result=True)
def celery_step_succeeded(result, *, run_id: str, step_id: str, attempt: int, celery_task_id: str,
                          task: str | None = None) -> None:
    """Linked after a celery_task step's task: its return value is the step's output."""
    import msgspec

    try:
        msgspec.json.encode(result)
    except (TypeError, msgspec.EncodeError) as exc:
        _report(run_id, step_id, attempt, celery_task_id, task, False,
                error=f"Celery task {celery_task_id} returned {type(result).__name__}, which is not JSON: {exc}")
        return
    _report(run_id, step_id, attempt, celery_task_id, task, True, output=result)


@shared_task(name="sluice.celery_step_failed", ignore_result=True)
def celery_step_failed(*failure, run_id: str, step_id: str, attempt: int, celery_task_id: str,
                       task: str | None = None) -> None:
    """Linked to a celery_task step's task on error. Celery calls it with (request, exc,
    traceback) in a worker that knows this task, or with the failed task's id otherwise."""
    if len(failure) >= 2 and isinstance(failure[1], BaseException):
        exc = failure[1]
        error = f"Celery task {celery_task_id} failed: {type(exc).__name__}: {exc}"
    else:
        error = f"Celery task {celery_task_id} failed (its error is in the log of the Celery worker that ran it)"
    _report(run_id, step_id, attempt, celery_task_id, task, False, error=error[:4000])
