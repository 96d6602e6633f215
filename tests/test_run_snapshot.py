"""A run and its steps are read as one moment, also while the bridge writes between the queries."""

from __future__ import annotations

import contextlib

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from monitor.models import Run
from monitor.projector import apply_history
from orchestrator import messages
from tests.test_api_workflows import make_client

T0 = 1_790_000_000.0


def events(run_id: str) -> list[messages.HistoryEvent]:
    """The projector's batch that moves a pending run to running with its approval waiting."""
    shape = [
        ("run_started", "", "", 0, {"input": {"amount": 42}, "trigger": {"type": "manual"}, "started_by": "ada",
                                    "created_at": T0}),
        ("step_started", "approve", "approval", 1, {"input": None, "attempt": 1}),
        ("step_waiting", "approve", "approval", 1, {"reason": "signal", "until": None}),
    ]
    return [messages.HistoryEvent(run_id=run_id, seq=seq, kind=kind, ts=T0 + seq, workflow="expenses", version=1,
                                  step_id=step_id, step_type=step_type, attempt=attempt, data=data)
            for seq, (kind, step_id, step_type, attempt, data) in enumerate(shape, start=1)]


@contextlib.contextmanager
def bridge_writes_before_the_first_step_query(run_id: str):
    """Apply the batch at the worst moment: the run row has been read (pending), its steps not yet."""
    applied = []

    def wrapper(execute, sql, params, many, context):
        if not applied and "monitor_steprun" in sql and sql.lstrip().upper().startswith("SELECT"):
            applied.append(True)  # first: apply_history reads steps too
            apply_history(events(run_id))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield applied


@pytest.fixture
def pending_run(db):
    return Run.objects.create(id="r-torn", workflow="expenses", version=1, status="pending",
                              created_at=timezone.now(), input={"amount": 42}, trigger={"type": "manual"})


def test_the_api_never_answers_a_pending_run_with_a_waiting_step(pending_run):
    client, _ = make_client("watcher", "monitor.view_run")
    with bridge_writes_before_the_first_step_query("r-torn") as applied:
        body = client.get("/api/runs/r-torn/").json()
    assert applied, "the batch was never applied: the test did not test the race"
    steps = {step["step_id"]: step["status"] for step in body["steps"]}
    assert steps == {"approve": "waiting"}
    assert body["status"] == "running", body


def test_the_run_page_shows_the_run_and_its_steps_at_one_moment(pending_run):
    _, user = make_client("page-watcher", "monitor.view_run")
    browser = Client()
    browser.force_login(user)
    with bridge_writes_before_the_first_step_query("r-torn") as applied:
        response = browser.get("/monitor/runs/r-torn/")
    assert applied and response.status_code == 200
    page = response.context["page_data"]
    assert [(step["step_id"], step["status"]) for step in page["steps"]] == [("approve", "waiting")]
    assert page["run"]["status"] == "running"
    assert page["run"]["last_seq"] == 3 == len(page["history"])
