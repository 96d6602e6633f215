"""Demo Celery tasks for the celery_task step (imported by Sluice's celery worker, see
CELERY_IMPORTS): one that answers, one that always fails."""

from celery import shared_task


@shared_task(name="demo.add")
def add(a, b):
    """Add two numbers."""
    return a + b


@shared_task(name="demo.refuse")
def refuse(reason="refused"):
    """Always fail: shows a failing Celery task and the step's retries."""
    raise RuntimeError(reason)
