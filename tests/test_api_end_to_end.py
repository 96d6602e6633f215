"""The example workflows, driven only through the REST API, run by a real runner on the real broker.

publish (API) -> start (API) -> runner executes -> history projected -> GET /api/runs/<id>/.
"""

from __future__ import annotations

import uuid

import pytest
from django.core.management import call_command

from monitor.projector import Projector
from tests.runtime_support import history, runner  # noqa: F401  (fixtures)
from tests.test_api_workflows import make_client

pytestmark = pytest.mark.kafka


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


def test_examples_run_through_the_api(kafka, db, runner, history):  # noqa: F811
    client, _ = make_client("root", superuser=True)
    call_command("load_examples", "--publish", stdout=open("/dev/null", "w"))

    hello = start(client, "hello", {"name": "Ada"})
    flaky = start(client, "flaky-with-retries", {"fail_times": 2})
    approval = start(client, "expense-approval", {"employee": "ada", "amount": 420})
    history.wait_finished([hello, flaky], timeout=60)

    # The approval run waits for a person; the signal goes in through the API.
    history.wait_until(lambda log: any(e.kind == "step_waiting" and e.step_id == "approve"
                                       for e in log.by_run[approval]), timeout=30, what="approval to wait")
    project_history()
    assert client.get(f"/api/runs/{approval}/").json()["status"] == "running"
    signal = client.post(f"/api/runs/{approval}/signal/", {"name": "approve", "payload": {"approved": True}},
                         format="json")
    assert signal.status_code == 202, signal.content
    history.wait_finished([approval], timeout=60)
    project_history()

    run = client.get(f"/api/runs/{hello}/").json()
    assert run["status"] == "succeeded", run
    steps = {step["step_id"]: step for step in run["steps"]}
    assert steps["summary"]["output"]["said"] == "Hello, Ada!"
    assert all(step["status"] == "succeeded" for step in steps.values())

    run = client.get(f"/api/runs/{flaky}/").json()
    assert run["status"] == "succeeded", run
    call = next(step for step in run["steps"] if step["step_id"] == "call")
    assert [attempt["attempt"] for attempt in call["attempts"]] == [1, 2, 3]
    assert call["attempts"][0]["error"] and call["attempts"][0]["backoff_seconds"] == 0.5
    assert call["attempts"][1]["backoff_seconds"] == 1.0 and call["attempts"][2]["error"] is None

    run = client.get(f"/api/runs/{approval}/").json()
    assert run["status"] == "succeeded", run
    statuses = {step["step_id"]: step["status"] for step in run["steps"]}
    assert statuses["pay"] == "succeeded" and statuses["rejected"] == "skipped"

    # A finished run cannot be cancelled; the API says so instead of sending a useless command.
    cancel = client.post(f"/api/runs/{hello}/cancel/", {}, format="json")
    assert cancel.status_code == 409 and "already succeeded" in cancel.json()["detail"]


def test_order_fulfilment_example_reacts_to_orders_on_kafka(kafka, db, runner, history):  # noqa: F811
    import json
    import time

    from tests.runtime_support import produce
    from tests.test_api_workflows import read_records

    client, _ = make_client("root", superuser=True)
    call_command("load_examples", "--publish", stdout=open("/dev/null", "w"))
    tag = uuid.uuid4().hex[:8]

    def runs_of_tag() -> list[str]:
        return [e.run_id for e in history.events if e.kind == "run_started" and e.workflow == "order-fulfilment"
                and str(e.data.get("input", {}).get("id", "")).startswith(tag)]

    # The trigger follows `orders` from its end once it has subscribed: offer orders until one starts a run.
    deadline = time.monotonic() + 60
    sent = 0
    while not runs_of_tag() and time.monotonic() < deadline:
        sent += 1
        produce("orders", [json.dumps({"id": f"{tag}-{sent}", "total": 120,
                                       "items": [{"sku": "A", "qty": 2}]}).encode()])
        history.wait_until(lambda log: True, timeout=0.5)
    assert runs_of_tag(), "no order started a run"
    produce("orders", [json.dumps({"id": f"{tag}-empty", "total": 10, "items": []}).encode(),
                       json.dumps({"id": f"{tag}-free", "total": 0, "items": [{"sku": "B"}]}).encode()])
    def empty_order_finished(log) -> bool:
        finished = log.finished()
        return any(e.kind == "run_started" and e.data.get("input", {}).get("id") == f"{tag}-empty"
                   and e.run_id in finished for e in log.events) and set(runs_of_tag()) <= set(finished)

    history.wait_until(empty_order_finished, timeout=60, what="the order runs to finish")
    project_history()

    shipped = [client.get(f"/api/runs/{run_id}/").json() for run_id in runs_of_tag()]
    assert all(run["status"] == "succeeded" for run in shipped), shipped
    first = next(run for run in shipped if run["input"]["id"] != f"{tag}-empty")
    assert first["trigger"]["type"] == "kafka" and first["trigger"]["topic"] == "orders"
    steps = {step["step_id"]: step["status"] for step in first["steps"]}
    assert steps["ship"] == "succeeded" and steps["reject"] == "skipped"
    empty = next(run for run in shipped if run["input"]["id"] == f"{tag}-empty")
    assert {step["step_id"]: step["status"] for step in empty["steps"]}["reject"] == "succeeded"
    # The filter (total > 0) kept the free order out: it never started a run.
    assert f"{tag}-free" not in {run["input"]["id"] for run in shipped}

    record, _ = read_records("shipments", lambda raw: json.loads(raw),
                             lambda value, msg: msg.key() == first["input"]["id"].encode())
    assert record["order_id"] == first["input"]["id"] and record["items"] == [{"sku": "A", "qty": 2}]
    record, _ = read_records("orders.rejected", lambda raw: json.loads(raw),
                             lambda value, msg: msg.key() == f"{tag}-empty".encode())
    assert record == {"order_id": f"{tag}-empty", "reason": "no items"}
