"""celery_task: send a registered Celery task and take its result (worker-run, handed on).

The worker sends the task and is done with the attempt at once: it reports it handed on, with
the Celery task id, and no thread waits. The task's outcome comes back through callbacks that
Celery runs after it (`link` / `link_error`, routed to Sluice's own queue), which send the step
result for the same attempt to wf.runs. Retries and the timeout are the engine's, like every
step's: a failed task fails the attempt, and the retry policy sends a new task.
"""

from __future__ import annotations

from typing import Any

from .base import Pending, StepType, TaskContext, json_property

TASK_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$"
# Where the callbacks run: Sluice's celery worker (manage.py up starts it on this queue).
CALLBACK_QUEUE = "sluice"


def celery_task_id(task: TaskContext) -> str:
    """One Celery task id per attempt: a worker that sends twice (at least once) reuses it."""
    return f"sluice-{task.run_id}-{task.step_id}-{task.attempt}"


class CeleryTask(StepType):
    name = "celery_task"
    label = "Celery task"
    group = "Integrations"
    icon = "send"
    description = ("Send a registered Celery task and wait for its result without holding a worker: "
                   "its return value becomes the output; a failure fails the attempt (the retry policy decides).")
    config_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "Celery task",
        "additionalProperties": False,
        "required": ["task"],
        "properties": {
            "task": {"type": "string", "title": "Task", "default": "demo.add", "pattern": TASK_NAME_PATTERN,
                     "description": "The registered task name, e.g. shop.tasks.charge."},
            "args": json_property("Arguments", "Positional arguments: a list; strings are templates.", default=[],
                                  type="array"),
            "kwargs": json_property("Keyword arguments", "An object; strings are templates.", default={},
                                    type="object"),
            "queue": {"type": ["string", "null"], "title": "Queue", "default": None,
                      "pattern": r"^[A-Za-z0-9_.:-]{1,200}$",
                      "description": "The Celery queue to send it to. Empty: the task's own route."},
        },
    }
    runs_on = "worker"

    def execute(self, config: dict, task: TaskContext) -> Any:
        from ..celery import app
        from ..tasks import celery_step_failed, celery_step_succeeded

        task_id = celery_task_id(task)
        # Keyword arguments: Celery prepends the result (link) or the failure (link_error).
        attempt = {"run_id": task.run_id, "step_id": task.step_id, "attempt": task.attempt, "celery_task_id": task_id,
                   "task": config["task"]}
        options = {"queue": config["queue"]} if config.get("queue") else {}
        app.send_task(config["task"], args=list(config.get("args") or []), kwargs=dict(config.get("kwargs") or {}),
                      task_id=task_id,
                      link=celery_step_succeeded.s(**attempt).set(queue=CALLBACK_QUEUE),
                      link_error=celery_step_failed.s(**attempt).set(queue=CALLBACK_QUEUE),
                      **options)
        return Pending({"celery_task_id": task_id, "task": config["task"]})


STEP_TYPE = CeleryTask()
