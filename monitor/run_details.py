"""What a run's history says beyond its rows: the child runs of `subworkflow` and `foreach` steps
with their progress, the Celery task a step handed on to, why a step waits, dispatches sent
again and who picked them up, and the run its `on_failure` started.

The projector (monitor/projector.py) keeps runs and steps in rows with fixed columns; these
details are folded from the run's history log when its page opens, and
static/monitor/run_state.js folds the live events after that by the same rules
(tests/browser/test_run_state_fold.py feeds one history to both and compares).

Events are in the websocket's shape (monitor.live.event_payload / entry_payload).
"""

from __future__ import annotations

from typing import Any

# A foreach may start 10,000 children: the page lists the first ones and counts them all (the
# run list, filtered by parent, has every one).
MAX_LISTED_CHILDREN = 100

# A step leaves its waiting state with any of these.
_STOPS_WAITING = {"step_started", "step_succeeded", "step_failed", "step_retrying", "step_skipped", "step_cancelled"}


def empty_step_details() -> dict:
    return {"children": None, "celery": None, "waiting": None, "redispatches": 0, "picked_up_by": None}


def empty_run_details() -> dict:
    return {"on_failure": None}


def fold_step(details: dict, event: dict) -> None:
    data = event.get("data") or {}
    kind = event.get("kind")
    if kind in _STOPS_WAITING:
        details["waiting"] = None
    if kind == "step_started":
        details["redispatches"], details["picked_up_by"] = 0, None
    elif kind == "step_waiting":
        details["waiting"] = {key: value for key, value in data.items() if key != "attempt"}
        if data.get("reason") == "children":
            details["children"] = {"workflow": data.get("workflow"), "version": data.get("version"),
                                   "total": data.get("total") or 0, "attempt": event.get("attempt") or 0,
                                   "started": 0, "succeeded": 0, "failed": 0, "runs": []}
        elif data.get("reason") == "handed_on":
            details["celery"] = {"task": data.get("task"), "task_id": data.get("celery_task_id"),
                                 "attempt": event.get("attempt") or 0}
    elif kind == "child_started" and details["children"] is not None:
        children = details["children"]
        children["started"] += 1
        if _index(data) < MAX_LISTED_CHILDREN:
            children["runs"].append({"index": _index(data), "run_id": data.get("child_run_id"), "status": "running"})
    elif kind == "child_finished" and details["children"] is not None:
        children = details["children"]
        status = data.get("status") or "failed"
        children["succeeded" if status == "succeeded" else "failed"] += 1
        for child in children["runs"]:
            if child["run_id"] == data.get("child_run_id"):
                child["status"] = status
    elif kind == "step_redispatched":
        details["redispatches"] = data.get("redispatches") or details["redispatches"] + 1
    elif kind == "step_picked_up":
        details["picked_up_by"] = data.get("worker")


def _index(data: dict) -> int:
    index = data.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else 0


def fold_run(details: dict, event: dict) -> None:
    if event.get("kind") == "on_failure_started":
        data = event.get("data") or {}
        details["on_failure"] = {"workflow": data.get("workflow"), "run_id": data.get("run_id")}


def fold_history(events: list[dict]) -> tuple[dict, dict[str, dict]]:
    """(run details, {step id: step details}) of a run's whole history, in seq order."""
    run: dict[str, Any] = empty_run_details()
    steps: dict[str, dict] = {}
    for event in sorted(events, key=lambda e: e.get("seq") or 0):
        fold_run(run, event)
        step_id = event.get("step_id")
        if step_id:
            fold_step(steps.setdefault(step_id, empty_step_details()), event)
    return run, steps
