"""The run page folds live events by the same rules as the server's projector.

A run page starts from the state the server folded (monitor/projector.py, through the run
detail view) and folds the events after it with static/monitor/run_state.js. For histories
covering every event kind, cut at every point: the server folds the events before the cut, the
page's module (in Debian's chromium) folds the rest on top, and the result must equal the
server folding everything.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from django.test import Client

from monitor.live import event_payload
from monitor.projector import apply_history
from orchestrator import messages

pytestmark = [pytest.mark.browser, pytest.mark.django_db]

T0 = 1_790_000_000.0


def history(run_id: str, shape: str) -> list[messages.HistoryEvent]:
    started = [("run_started", "", "", 0, {"input": {"n": 1}, "trigger": {"type": "manual"}, "started_by": "ada",
                                           "created_at": T0}),
               ("step_started", "check", "transform", 1, {"input": {"n": 1}, "attempt": 1}),
               ("step_succeeded", "check", "branch", 1, {"output": True, "port": "true",
                                                         "started_at": T0 + 1.25, "ended_at": T0 + 1.5})]
    shapes = {
        "retried-then-succeeded": [
            ("step_started", "charge", "http", 1, {"input": {"id": 7}, "attempt": 1}),
            ("step_retrying", "charge", "http", 1, {"error": "HTTP 503", "backoff_seconds": 2.0,
                                                    "next_attempt_at": T0 + 6.5}),
            ("step_started", "charge", "http", 2, {"input": {"id": 7}, "attempt": 2}),
            ("step_failed", "charge", "http", 2, {"error": "RuntimeError: no\n\nTraceback (most recent call last):\n  x",
                                                  "started_at": T0 + 7, "ended_at": T0 + 7.75}),
            ("step_skipped", "ship", "python", 0, {}),
            ("run_failed", "", "", 0, {"error": "step 'charge' failed: RuntimeError: no"}),
            ("run_retried", "", "", 0, {"by": "ada"}),
            ("step_started", "charge", "http", 3, {"input": {"id": 7}, "attempt": 3}),
            ("step_succeeded", "charge", "http", 3, {"output": {"status": 200}, "port": "",
                                                     "started_at": T0 + 13, "ended_at": T0 + 13.5}),
            ("run_succeeded", "", "", 0, {"output": {"status": 200}}),
        ],
        # Children of a foreach (one attempt failed with a failed item, the next collected), a
        # Celery hand-off with a re-dispatch, and the run's on_failure handler.
        "composition": [
            ("step_waiting", "ship", "foreach", 1, {"reason": "children", "workflow": "ship-one", "version": "live",
                                                    "total": 3, "until": None}),
            ("child_started", "ship", "foreach", 1, {"index": 0, "child_run_id": "full.ship.1.0"}),
            ("child_started", "ship", "foreach", 1, {"index": 1, "child_run_id": "full.ship.1.1"}),
            ("child_finished", "ship", "foreach", 1, {"index": 1, "child_run_id": "full.ship.1.1",
                                                      "status": "failed"}),
            ("step_retrying", "ship", "foreach", 1, {"error": "item 1 failed", "backoff_seconds": 1.0,
                                                     "next_attempt_at": T0 + 9}),
            ("step_waiting", "ship", "foreach", 2, {"reason": "children", "workflow": "ship-one", "version": 2,
                                                    "total": 3}),
            ("child_started", "ship", "foreach", 2, {"index": 0, "child_run_id": "full.ship.2.0"}),
            ("child_started", "ship", "foreach", 2, {"index": 1, "child_run_id": "full.ship.2.1"}),
            ("child_finished", "ship", "foreach", 2, {"index": 0, "child_run_id": "full.ship.2.0",
                                                      "status": "succeeded"}),
            ("step_started", "add", "celery_task", 1, {"input": {"task": "demo.add"}, "attempt": 1}),
            ("step_redispatched", "add", "celery_task", 1, {"redispatches": 1, "reason": "no worker within 30s"}),
            ("step_picked_up", "add", "celery_task", 1, {"worker": "runner-1"}),
            ("step_waiting", "add", "celery_task", 1, {"reason": "handed_on", "celery_task_id": "sluice-x-add-1",
                                                       "task": "demo.add"}),
            ("child_started", "ship", "foreach", 2, {"index": 2, "child_run_id": "full.ship.2.2"}),
            ("child_finished", "ship", "foreach", 2, {"index": 2, "child_run_id": "full.ship.2.2",
                                                      "status": "cancelled"}),
            ("step_succeeded", "add", "celery_task", 1, {"output": 3, "port": "out",
                                                         "started_at": T0 + 20, "ended_at": T0 + 21}),
            ("step_failed", "ship", "foreach", 2, {"error": "item 2 cancelled", "started_at": T0 + 9,
                                                   "ended_at": T0 + 22}),
            ("run_failed", "", "", 0, {"error": "step 'ship' failed: item 2 cancelled"}),
            ("on_failure_started", "", "", 0, {"workflow": "notify-ops", "run_id": "full.on-failure.25"}),
        ],
        "waited-then-cancelled": [
            ("step_started", "approve", "approval", 1, {"input": None, "attempt": 1}),
            ("step_waiting", "approve", "approval", 1, {"reason": "signal", "until": None}),
            ("signal_received", "approve", "approval", 1, {"name": "nope", "payload": 1, "by": "bob"}),
            ("step_cancelled", "approve", "approval", 1, {}),
            ("run_cancelled", "", "", 0, {"reason": "not needed", "by": "bob"}),
        ],
    }
    return [messages.HistoryEvent(run_id=run_id, seq=seq, kind=kind, ts=T0 + seq, workflow="fold", version=1,
                                  step_id=step_id, step_type=step_type, attempt=attempt, data=data)
            for seq, (kind, step_id, step_type, attempt, data) in enumerate(started + shapes[shape], start=1)]


def page_data(client: Client, run_id: str) -> dict:
    """The state the run page starts from, as the server renders it into the page."""
    html = client.get(f"/monitor/runs/{run_id}/").content.decode()
    return json.loads(re.search(r'<script id="run-data" type="application/json">(.*?)</script>', html, re.S).group(1))


def comparable(value, key=""):
    """Times as epoch milliseconds (the server writes +00:00 with microseconds, the page Z)."""
    if isinstance(value, dict):
        return {k: comparable(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if key.endswith("_at") and isinstance(value, str):
        return round(datetime.fromisoformat(value).timestamp() * 1000)
    return value


RUN_FIELDS = ("status", "error", "output", "started_at", "ended_at", "last_seq", "on_failure")


@pytest.mark.parametrize("shape", ["retried-then-succeeded", "waited-then-cancelled", "composition"])
def test_page_fold_on_top_of_server_fold_equals_server_fold(static_page, admin_user, shape):
    client = Client()
    client.force_login(admin_user)
    everything = history("full", shape)
    apply_history(everything)
    expected = page_data(client, "full")
    for cut in range(len(everything) + 1):
        run_id = f"cut-{cut}"
        events = history(run_id, shape)
        apply_history(events[:cut])
        if cut == 0:
            # Nothing projected yet: the page of a run that was just started has only the run row.
            from monitor.models import Run
            Run.objects.create(id=run_id, workflow="fold", version=1, created_at=datetime.fromtimestamp(T0).astimezone())
        start = page_data(client, run_id)
        folded = static_page.evaluate("""async ([start, events]) => {
            const { RunState } = await import('/static/monitor/run_state.js');
            const state = new RunState({ run: start.run, steps: start.steps });
            for (const event of events) state.apply(event);
            for (const event of events) state.apply(event);  // again: a catch-up overlap changes nothing
            return { run: state.run, steps: Object.values(state.steps) };
        }""", [start, [event_payload(e) for e in events[cut:]]])
        by_step = lambda steps: {s["step_id"]: comparable(s) for s in steps}  # noqa: E731
        assert {k: comparable(folded["run"].get(k), k) for k in RUN_FIELDS} == \
            {k: comparable(expected["run"][k], k) for k in RUN_FIELDS}, f"cut after {cut} events"
        assert by_step(folded["steps"]) == by_step(expected["steps"]), f"cut after {cut} events"
    if shape == "composition":  # the details the page shows, as the server folded them
        steps = {s["step_id"]: s for s in expected["steps"]}
        kids = steps["ship"]["details"]["children"]
        assert (kids["workflow"], kids["version"], kids["attempt"], kids["total"]) == ("ship-one", 2, 2, 3)
        assert (kids["started"], kids["succeeded"], kids["failed"]) == (3, 1, 1)
        assert [(c["index"], c["status"]) for c in kids["runs"]] == [(0, "succeeded"), (1, "running"), (2, "cancelled")]
        assert steps["add"]["details"]["celery"] == {"task": "demo.add", "task_id": "sluice-x-add-1", "attempt": 1}
        assert (steps["add"]["details"]["redispatches"], steps["add"]["details"]["picked_up_by"]) == (1, "runner-1")
        assert steps["add"]["details"]["waiting"] is None and steps["ship"]["details"]["waiting"] is None
        assert expected["run"]["on_failure"] == {"workflow": "notify-ops", "run_id": "full.on-failure.25"}
