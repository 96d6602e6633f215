"""Runs through the API: list and detail from the projection, actions as real Kafka commands."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from monitor.models import Run, StepRun
from orchestrator.messages import CancelRun, RetryRun, SignalRun, StartRun
from orchestrator.runtime import codec
from tests.test_api_workflows import errors_at, make_client, read_records


@pytest.fixture
def operator(db):
    return make_client("operator", "monitor.view_run", "monitor.operate_run")[0]


def make_run(run_id: str, status: str = "running", workflow: str = "orders", minutes_ago: int = 0, **fields) -> Run:
    now = timezone.now() - timedelta(minutes=minutes_ago)
    return Run.objects.create(id=run_id, workflow=workflow, version=3, status=status, created_at=now,
                              input={"id": run_id}, trigger={"type": "manual"}, **fields)


def test_run_detail_has_steps_and_attempts(operator):
    start = timezone.now()
    run = make_run("r-1", status="failed", started_at=start, ended_at=start + timedelta(seconds=4),
                   error="charge failed", output=None)
    StepRun.objects.create(run=run, step_id="check", type="transform", status="succeeded",
                           output={"ok": True}, port="out", started_at=start, ended_at=start,
                           attempts=[{"attempt": 1, "started_at": start.isoformat(), "ended_at": start.isoformat(),
                                      "error": None, "backoff_seconds": None}])
    StepRun.objects.create(run=run, step_id="charge", type="http", status="failed", error="HTTP 502",
                           started_at=start + timedelta(seconds=1),
                           attempts=[{"attempt": 1, "error": "HTTP 503", "backoff_seconds": 1.0},
                                     {"attempt": 2, "error": "HTTP 502"}])
    body = operator.get("/api/runs/r-1/").json()
    assert (body["id"], body["workflow"], body["version"], body["status"]) == ("r-1", "orders", 3, "failed")
    assert body["error"] == "charge failed" and body["duration_seconds"] == 4.0
    assert body["input"] == {"id": "r-1"} and body["trigger"] == {"type": "manual"}
    assert [s["step_id"] for s in body["steps"]] == ["check", "charge"]
    charge = body["steps"][1]
    assert charge["status"] == "failed" and charge["error"] == "HTTP 502"
    assert charge["attempts"] == [
        {"attempt": 1, "started_at": None, "ended_at": None, "error": "HTTP 503", "backoff_seconds": 1.0},
        {"attempt": 2, "started_at": None, "ended_at": None, "error": "HTTP 502", "backoff_seconds": None},
    ]


def test_run_list_filters_and_pages(operator):
    make_run("a", status="running", minutes_ago=3)
    make_run("b", status="failed", minutes_ago=2)
    make_run("c", status="failed", workflow="billing", minutes_ago=1)
    everything = operator.get("/api/runs/").json()
    assert [r["id"] for r in everything["results"]] == ["c", "b", "a"]
    assert [r["id"] for r in operator.get("/api/runs/?status=failed").json()["results"]] == ["c", "b"]
    assert [r["id"] for r in operator.get("/api/runs/?workflow=orders&status=failed").json()["results"]] == ["b"]
    assert operator.get("/api/runs/?workflow=nothing").json()["count"] == 0
    page = operator.get("/api/runs/?page_size=2").json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]


@pytest.mark.kafka
def test_cancel_sends_a_cancel_command(kafka, operator):
    make_run("r-cancel")
    response = operator.post("/api/runs/r-cancel/cancel/", {"reason": "wrong input"}, format="json")
    assert response.status_code == 202 and response.json() == {"id": "r-cancel", "accepted": "cancel"}
    command, msg = read_records(kafka.runs, codec.decode_run_command,
                                lambda value, _m: isinstance(value, CancelRun))
    assert msg.key() == b"r-cancel"
    assert (command.run_id, command.reason, command.by) == ("r-cancel", "wrong input", "operator")


@pytest.mark.kafka
def test_signal_sends_name_and_payload(kafka, operator):
    make_run("r-wait")
    response = operator.post("/api/runs/r-wait/signal/", {"name": "approve", "payload": {"approved": True}},
                             format="json")
    assert response.status_code == 202
    command, _ = read_records(kafka.runs, codec.decode_run_command, lambda value, _m: isinstance(value, SignalRun))
    assert (command.run_id, command.name, command.payload, command.by) == (
        "r-wait", "approve", {"approved": True}, "operator")


@pytest.mark.kafka
def test_retry_of_a_failed_run_sends_retry(kafka, operator):
    make_run("r-failed", status="failed")
    assert operator.post("/api/runs/r-failed/retry/", {}, format="json").status_code == 202
    command, _ = read_records(kafka.runs, codec.decode_run_command, lambda value, _m: isinstance(value, RetryRun))
    assert command.run_id == "r-failed" and command.by == "operator"


@pytest.mark.kafka
def test_retry_with_input_starts_a_new_run_of_the_same_version(kafka, operator):
    make_run("r-old", status="succeeded")
    response = operator.post("/api/runs/r-old/retry/", {"input": {"id": "fixed"}}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    new_id = body["new_run"]
    assert body == {"id": "r-old", "accepted": "retry_with_input", "new_run": new_id, "url": f"/api/runs/{new_id}/"}
    assert new_id != "r-old"
    command, msg = read_records(kafka.runs, codec.decode_run_command,
                                lambda value, _m: isinstance(value, StartRun) and value.run_id == new_id)
    assert (command.workflow, command.version, command.input) == ("orders", 3, {"id": "fixed"})
    assert command.trigger == {"type": "replay", "of": "r-old"} and command.started_by == "operator"
    # The new run answers at once (pending), so a client can follow it straight away.
    assert operator.get(f"/api/runs/{new_id}/").json()["input"] == {"id": "fixed"}


def test_retry_takes_only_input(operator):
    make_run("r-failed", status="failed")
    response = operator.post("/api/runs/r-failed/retry/", {"inputs": {}}, format="json")
    assert response.status_code == 400 and errors_at(response) == ["inputs"]


@pytest.mark.parametrize("status,action,body,phrase", [
    ("succeeded", "cancel", {}, "run r-x already succeeded: nothing to cancel"),
    ("cancelled", "cancel", {}, "already cancelled"),
    ("failed", "signal", {"name": "approve"}, "run r-x already failed: it waits for no signal"),
    ("running", "retry", {}, "is running: only failed or cancelled runs can be retried"),
    ("succeeded", "retry", {}, "only failed or cancelled runs can be retried"),
])
def test_actions_that_cannot_apply_are_409(operator, status, action, body, phrase):
    make_run("r-x", status=status)
    response = operator.post(f"/api/runs/r-x/{action}/", body, format="json")
    assert response.status_code == 409, response.content
    assert phrase in response.json()["detail"] and response.json()["code"] == "conflict"


def test_viewer_cannot_operate(db):
    viewer, _ = make_client("viewer", "monitor.view_run")
    make_run("r-1")
    assert viewer.get("/api/runs/r-1/").status_code == 200
    response = viewer.post("/api/runs/r-1/cancel/", {}, format="json")
    assert response.status_code == 403 and "may not operate runs" in response.json()["detail"]


def test_without_a_role_that_sees_everything_only_runs_of_granted_workflows_are_visible(db):
    from designer import services
    from tests.test_api_workflows import definition

    # Creating a workflow grants its creator the right to edit it, which includes seeing it.
    client, author = make_client("author", "designer.add_workflow")
    services.create_workflow(definition("mine"), author)
    make_run("r-mine", workflow="mine")
    make_run("r-theirs", workflow="theirs")
    assert [r["id"] for r in client.get("/api/runs/").json()["results"]] == ["r-mine"]
    assert client.get("/api/runs/r-mine/").status_code == 200
    assert client.get("/api/runs/r-theirs/").status_code == 404  # existence is not revealed


def test_operator_cannot_act_on_runs_they_cannot_see(db):
    from designer import services
    from tests.test_api_workflows import definition

    client, author = make_client("author", "designer.add_workflow", "monitor.operate_run")
    services.create_workflow(definition("mine"), author)
    make_run("r-theirs", workflow="theirs")
    assert client.post("/api/runs/r-theirs/cancel/", {}, format="json").status_code == 404


def test_unknown_status_filter_lists_the_valid_ones(operator):
    response = operator.get("/api/runs/?status=done")
    assert response.status_code == 400 and errors_at(response) == ["status"]
    assert "pending, running, succeeded, failed, cancelled" in response.json()["errors"][0]["message"]


def test_signal_payload_that_cannot_be_stored_is_400_naming_it(operator):
    make_run("r-nul")
    response = operator.post("/api/runs/r-nul/signal/", '{"name": "go", "payload": {"note": "a\\u0000b"}}',
                             content_type="application/json")
    assert response.status_code == 400 and errors_at(response) == ["payload.note"]
