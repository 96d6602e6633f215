"""Composition against the real broker: sub-workflows, foreach and on_failure across runs
that may live on different partitions (and engines)."""

from __future__ import annotations

import pytest

from orchestrator.messages import CancelRun
from orchestrator.runtime import commands
from orchestrator.runtime.verify import verify
from tests.runtime_support import publish
from tests.test_runtime_safety import running

pytestmark = pytest.mark.kafka


def child_workflow(slug="charge-card", seconds=0.0):
    steps = [{"id": "charge", "type": "transform", "config": {"output": {"charged": "{{ trigger.amount }}"}}}]
    edges = []
    if seconds:
        steps.insert(0, {"id": "wait", "type": "delay", "config": {"seconds": seconds}})
        edges = [{"from": "wait", "to": "charge"}]
    return {"slug": slug, "name": slug, "trigger": {"type": "manual"}, "steps": steps, "edges": edges}


def test_a_subworkflows_output_reaches_the_parent_and_links_go_both_ways(kafka, history):
    publish(child_workflow())
    publish({"slug": "order", "name": "Order", "trigger": {"type": "manual"}, "edges": [{"from": "pay", "to": "done"}],
             "steps": [{"id": "pay", "type": "subworkflow", "config": {"workflow": "charge-card",
                                                                         "input": {"amount": "{{ trigger.total }}"}}},
                       {"id": "done", "type": "transform", "config": {"output": "{{ steps.pay.output.charged }}"}}]})
    with running():
        run_id = commands.start_run("order", 1, {"total": 42})
        history.wait_finished([run_id], timeout=60)
    child_id = f"{run_id}.pay.1"
    assert history.finished()[run_id][0].data["output"] == 42
    started = history.by_run[child_id][0]
    assert started.kind == "run_started" and started.data["trigger"]["run_id"] == run_id
    assert [e.data["child_run_id"] for e in history.by_run[run_id] if e.kind == "child_started"] == [child_id]


def test_cancelling_the_parent_cancels_the_running_child(kafka, history):
    publish(child_workflow(seconds=60))
    publish({"slug": "order", "name": "Order", "trigger": {"type": "manual"}, "edges": [],
             "steps": [{"id": "pay", "type": "subworkflow", "config": {"workflow": "charge-card", "input": {}}}]})
    with running():
        run_id = commands.start_run("order", 1, {})
        child_id = f"{run_id}.pay.1"
        history.wait_until(lambda log: any(e.kind == "step_waiting" for e in log.by_run[child_id]), 30, "the child")
        commands.send_command(CancelRun(run_id=run_id, reason="customer left", by="test", ts=0))
        history.wait_finished([run_id, child_id], timeout=30)
    assert history.finished()[run_id][0].kind == "run_cancelled"
    assert history.finished()[child_id][0].kind == "run_cancelled"


def test_a_child_of_an_unpublished_workflow_fails_the_step_with_the_reason(kafka, history):
    publish({"slug": "order", "name": "Order", "trigger": {"type": "manual"}, "edges": [],
             "steps": [{"id": "pay", "type": "subworkflow", "config": {"workflow": "nowhere", "input": {}}}]})
    with running():
        run_id = commands.start_run("order", 1, {})
        history.wait_finished([run_id], timeout=30)
    assert "not started: workflow 'nowhere' has no live version" in history.finished()[run_id][0].data["error"]


def test_foreach_over_100_items_never_runs_more_than_10_at_once_and_keeps_order(kafka, history):
    publish(child_workflow("ship-one", seconds=0.05))
    publish({"slug": "ship-all", "name": "Ship all", "trigger": {"type": "manual"}, "edges": [],
             "steps": [{"id": "ship", "type": "foreach",
                        "config": {"items": "{{ trigger.orders }}", "workflow": "ship-one", "concurrency": 10,
                                   "input": {"amount": "{{ item * 10 }}"}}}]})
    with running():
        run_id = commands.start_run("ship-all", 1, {"orders": list(range(100))})
        history.wait_finished([run_id], timeout=180)
    assert history.finished()[run_id][0].data["output"] == {"results": [{"charged": i * 10} for i in range(100)],
                                                            "failed": []}
    children = [f"{run_id}.ship.1.{i}" for i in range(100)]
    # The children's history lies on other partitions than the parent's: the parent can be read
    # finished before the last child's own run_succeeded is (it was committed first).
    history.wait_finished(children, timeout=30)
    spans = []
    for child in children:
        events = history.by_run[child]
        spans += [(events[0].ts, 1), (history.finished()[child][0].ts, -1)]
    running_now = most = 0
    for _ts, change in sorted(spans, key=lambda span: (span[0], span[1])):
        running_now += change
        most = max(most, running_now)
    assert most == 10
    report = verify(kafka)  # parent and children replay through the engine as recorded
    assert report.divergences == [] and report.replayed == 101


def test_on_failure_starts_its_workflow_with_the_failure(kafka, history):
    publish({"slug": "notify-ops", "name": "Notify", "trigger": {"type": "manual"}, "edges": [],
             "steps": [{"id": "page", "type": "transform", "config": {"output": "{{ trigger.failed_step }}: {{ trigger.error }}"}}]})
    publish({"slug": "fragile", "name": "Fragile", "trigger": {"type": "manual"}, "edges": [],
             "on_failure": {"workflow": "notify-ops"},
             "steps": [{"id": "boom", "type": "fail", "config": {"message": "disk full"}}]})
    with running():
        run_id = commands.start_run("fragile", 1, {"x": 1})
        history.wait_finished([run_id], timeout=30)
        handler = next(e.data["run_id"] for e in history.by_run[run_id] if e.kind == "on_failure_started")
        history.wait_finished([handler], timeout=30)
    started = history.by_run[handler][0]
    assert started.data["input"]["run_id"] == run_id and started.data["input"]["input"] == {"x": 1}
    assert history.finished()[handler][0].data["output"].startswith("boom: step 'boom' failed: disk full")
