"""The composition examples (examples/*.json, loaded by `manage.py up`) end to end: loaded and
published as `up` does, started through the REST API, run by a real runner process with a real
Celery worker on the embedded broker, their history projected, and read back through the API.

- place-order -> charge-card (subworkflow): the child's output reaches the parent; a declined
  card fails the child, the parent's step, the run, and on_failure starts notify-ops, which
  writes its alert to `ops.alerts`;
- ship-all -> ship-one (foreach): one child per order, results in order, failures collected;
- add-with-celery: demo.add on Celery, the task id on the step;
- buy-stats: a tumbling window over `clicks` starts one run per user and window and emits to
  `buy-stats` (the example's topics swapped for this test's own, so other tests' records stay out).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command

from monitor.projector import Projector
from orchestrator.runtime import commands
from tests.runtime_support import produce_in_one_window, read_topic, runner_process, user_topic
from tests.test_api_workflows import make_client
from tests.test_celery_task import celery_worker  # noqa: F401  (fixture)

pytestmark = pytest.mark.kafka

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def project_history() -> None:
    projector = Projector(group_id=f"test-projector-{uuid.uuid4().hex[:6]}")
    try:
        projector.run_until_idle(idle_seconds=1.0, timeout=30)
    finally:
        projector.close()


def start(client, slug: str, input: dict) -> str:
    response = client.post(f"/api/workflows/{slug}/runs/", {"input": input}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def started_runs(history, slug: str) -> list:
    return [e for e in history.events if e.kind == "run_started" and e.workflow == slug]


def test_the_composition_examples_run_end_to_end(kafka, db, history, celery_worker):  # noqa: F811
    client, _ = make_client("root", superuser=True)
    call_command("load_examples", "--publish", stdout=open("/dev/null", "w"))
    # The window example on topics of this test's own, published as the next version.
    clicks, stats = user_topic(kafka, "clicks"), user_topic(kafka, "buy-stats")
    windowed = json.loads((EXAMPLES / "buy-stats.json").read_text())
    windowed["trigger"]["topic"], windowed["trigger"]["window"]["emit_topic"] = clicks, stats
    commands.publish_definition("buy-stats", 99, windowed, by="test")

    runner = runner_process("composition-examples")
    try:
        bad = client.post("/api/workflows/place-order/runs/", {"input": {"order_id": "o-0"}}, format="json")
        assert bad.status_code == 400 and bad.json()["errors"][0]["path"] == "input.amount"
        ordered = start(client, "place-order", {"order_id": "o-1", "amount": 120})
        declined = start(client, "place-order", {"order_id": "o-2", "amount": 5000})
        shipped = start(client, "ship-all", {"orders": [{"id": "a"}, {"id": "b"}, {}, {"id": "d"}]})
        added = start(client, "add-with-celery", {"a": 40, "b": 2})
        history.wait_finished([ordered, declined, shipped, added], timeout=180)
        history.wait_until(lambda log: any(e.kind == "run_succeeded" and e.workflow == "notify-ops"
                                           for e in log.events), timeout=60, what="notify-ops to finish")
        # Two buys of ada and one of bob in one 10-second window, and a view the filter drops. They
        # go in once the runner is up (the runs above finished), into a window that stays open.
        window_end = produce_in_one_window(clicks, [
            {"user": "ada", "kind": "buy", "amount": 60}, {"user": "ada", "kind": "buy", "amount": 50},
            {"user": "bob", "kind": "buy", "amount": 5}, {"user": "ada", "kind": "view", "amount": 999}],
            size_seconds=10, grace_seconds=2)

        # The windows close 2 s (grace) after their end, on the wall clock.
        history.wait_until(lambda log: len([e for e in log.events if e.kind == "run_succeeded"
                                            and e.workflow == "buy-stats"]) == 2,
                           timeout=max(30, window_end + 20 - time.time()), what="two window runs")
    finally:
        runner.stop()
    project_history()

    # ---- subworkflow: the child's output reaches the parent, linked both ways
    run = client.get(f"/api/runs/{ordered}/").json()
    assert run["status"] == "succeeded", run
    assert run["output"] == {"order_id": "o-1", "charge_id": "ch-o-1", "status": "confirmed"}
    child_id = f"{ordered}.charge.1"
    child = client.get(f"/api/runs/{child_id}/").json()
    assert child["workflow"] == "charge-card" and child["status"] == "succeeded"
    assert child["trigger"] == {"type": "parent", "run_id": ordered, "workflow": "place-order", "step_id": "charge",
                                "attempt": 1, "index": 0}

    # ---- a declined card: the child fails, the step and the run fail, on_failure starts notify-ops
    run = client.get(f"/api/runs/{declined}/").json()
    assert run["status"] == "failed" and "card declined: 5000 is over the limit of 1000" in run["error"], run
    handler_event = next(e for e in history.by_run[declined] if e.kind == "on_failure_started")
    handler = client.get(f"/api/runs/{handler_event.data['run_id']}/").json()
    assert handler["workflow"] == "notify-ops" and handler["status"] == "succeeded", handler
    assert handler["trigger"] == {"type": "on_failure", "run_id": declined, "workflow": "place-order"}
    assert handler["input"]["failed_step"] == "charge" and handler["input"]["input"] == {"order_id": "o-2",
                                                                                          "amount": 5000}
    alerts = [json.loads(m.value()) for m in read_topic("ops.alerts") if m.key() == declined.encode()]
    assert alerts and alerts[0]["text"].startswith(f"place-order run {declined} failed at step charge: ")

    # ---- foreach: one child per order, results in item order, the order without an id collected
    run = client.get(f"/api/runs/{shipped}/").json()
    assert run["status"] == "succeeded", run
    assert run["output"] == {"labels": ["SHIP-a", "SHIP-b", None, "SHIP-d"], "failed": [2]}
    children = [e for e in history.by_run[shipped] if e.kind == "child_started"]
    assert sorted(e.data["index"] for e in children) == [0, 1, 2, 3]
    listed = client.get("/api/runs/", {"workflow": "ship-one", "page_size": 100}).json()["results"]
    assert sorted(r["trigger"]["index"] for r in listed if r["trigger"].get("run_id") == shipped) == [0, 1, 2, 3]

    # ---- celery_task: the task's result, and its id recorded on the step
    run = client.get(f"/api/runs/{added}/").json()
    assert run["status"] == "succeeded" and run["output"] == {"sum": 42, "doubled": 84}, run
    handed = next(e for e in history.by_run[added] if e.kind == "step_waiting" and e.step_id == "add")
    assert (handed.data["reason"], handed.data["celery_task_id"]) == ("handed_on", f"sluice-{added}-add-1")

    # ---- window: one run per user and window, the same object emitted to the stats topic
    inputs = {e.data["input"]["key"]: e.data["input"] for e in started_runs(history, "buy-stats")}
    assert (inputs["ada"]["buys"], inputs["ada"]["spent"]) == (2, 110)
    assert (inputs["bob"]["buys"], inputs["bob"]["spent"]) == (1, 5)
    emitted = {m.key().decode(): json.loads(m.value()) for m in read_topic(stats)}
    assert emitted == inputs
    flagged = [e for e in history.events if e.kind == "step_succeeded" and e.workflow == "buy-stats"
               and e.step_id == "flag"]
    assert len(flagged) == 1 and flagged[0].data["output"]["key"] == "ada"  # spent 110 > 100
