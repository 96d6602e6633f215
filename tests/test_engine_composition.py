"""Sub-workflows, foreach and on_failure in the engine (pure): what starts, what waits, what ends."""

from __future__ import annotations

from orchestrator.engine import CancelChild, NotifyParent, StartChild, decide
from orchestrator.engine import state as S
from orchestrator.messages import CancelRun, ChildFinished, StartRun
from orchestrator.spec import build
from tests.test_engine import T0, Run, chain, py, workflow


def sub(step_id="child", **config):
    return {"id": step_id, "type": "subworkflow",
            "config": {"workflow": "charge-card", "input": {"amount": "{{ trigger.amount }}"}, **config}}


def each(step_id="ship", concurrency=2, on_item_failure="fail", **extra):
    return {"id": step_id, "type": "foreach", **extra,
            "config": {"items": "{{ trigger.orders }}", "workflow": "ship-one", "concurrency": concurrency,
                       "input": {"order": "{{ item }}", "index": "{{ index }}"}, "on_item_failure": on_item_failure}}


class ParentRun(Run):
    def starts(self):
        return [e for e in self.effects if isinstance(e, StartChild)]

    def cancels(self):
        return [e for e in self.effects if isinstance(e, CancelChild)]

    def child(self, start: StartChild, status="succeeded", output=None, error=None):
        _run, step_id, attempt, index = start.parent
        return self.feed(ChildFinished(run_id="r", step_id=step_id, attempt=attempt, index=index,
                                       child_run_id=start.run_id, status=status, output=output, error=error, ts=self.now))


def test_a_subworkflow_starts_its_child_waits_and_takes_its_output():
    run = ParentRun(workflow([sub(), py("after")], chain("child", "after")), {"amount": 12})
    [start] = run.starts()
    assert (start.run_id, start.workflow, start.version, start.input) == ("r.child.1", "charge-card", None, {"amount": 12})
    assert start.trigger == {"type": "parent", "run_id": "r", "workflow": "wf", "step_id": "child", "attempt": 1, "index": 0}
    assert run.state.steps["child"].status == S.WAITING
    run.child(start, output={"charged": True})
    assert run.state.steps["child"].output == {"charged": True}
    assert run.last_task("after").step_id == "after"
    assert [e.data.get("child_run_id") for e in run.history if e.kind.startswith("child_")] == ["r.child.1", "r.child.1"]


def test_a_failed_child_fails_the_step_and_the_retry_policy_starts_a_new_child():
    run = ParentRun(workflow([{**sub(), "retry": {"max_attempts": 2, "backoff_seconds": 1}}]), {"amount": 1})
    run.child(run.starts()[0], status="failed", error="card declined")
    assert run.state.steps["child"].status == S.RETRYING
    assert "child run r.child.1 failed: card declined" in run.state.steps["child"].error
    run.at(1)
    assert [s.run_id for s in run.starts()] == ["r.child.1", "r.child.2"]
    run.child(run.starts()[1], output="ok")
    assert run.state.status == S.RUN_SUCCEEDED


def test_a_result_from_an_older_childs_attempt_is_ignored():
    run = ParentRun(workflow([{**sub(), "retry": {"max_attempts": 2, "backoff_seconds": 1}}]), {"amount": 1})
    first = run.starts()[0]
    run.child(first, status="failed", error="x")
    run.at(1)
    run.child(first, output="late")  # the old child answers again
    assert run.state.steps["child"].status == S.WAITING


def test_cancelling_the_parent_cancels_the_child():
    run = ParentRun(workflow([sub()]), {"amount": 1})
    run.feed(CancelRun(run_id="r", reason="stop", ts=T0))
    assert run.state.status == S.RUN_CANCELLED
    assert [(c.run_id, c.reason) for c in run.cancels()] == [("r.child.1", "the parent step stopped waiting")]


def test_a_child_run_tells_its_parent_how_it_ended():
    child_wf = build({"slug": "charge-card", "name": "c", "trigger": {"type": "manual"}, "edges": [],
                      "steps": [{"id": "t", "type": "transform", "config": {"output": {"ok": True}}}]})
    trigger = {"type": "parent", "run_id": "p", "workflow": "wf", "step_id": "child", "attempt": 2, "index": 0}
    decision = decide(child_wf, None, StartRun(run_id="p.child.2", workflow="charge-card", version=1, input={},
                                               trigger=trigger, ts=T0), T0)
    [notice] = [e.finished for e in decision.effects if isinstance(e, NotifyParent)]
    assert (notice.run_id, notice.step_id, notice.attempt, notice.child_run_id, notice.status, notice.output) == (
        "p", "child", 2, "p.child.2", "succeeded", {"ok": True})


def test_foreach_never_runs_more_than_its_concurrency_and_keeps_item_order():
    run = ParentRun(workflow([each(concurrency=2)]), {"orders": ["a", "b", "c", "d", "e"]})
    starts = run.starts()
    assert [s.input for s in starts] == [{"order": "a", "index": 0}, {"order": "b", "index": 1}]
    run.child(starts[1], output="B")  # finishes out of order
    run.child(starts[0], output="A")
    starts = run.starts()
    assert len(starts) == 4
    run.child(starts[3], output="D")
    run.child(starts[2], output="C")
    run.child(run.starts()[4], output="E")
    assert run.state.status == S.RUN_SUCCEEDED
    assert run.state.steps["ship"].output == {"results": ["A", "B", "C", "D", "E"], "failed": []}
    running, most = 0, 0
    for event in run.history:
        running += {"child_started": 1, "child_finished": -1}.get(event.kind, 0)
        most = max(most, running)
    assert most == 2


def test_foreach_fail_mode_cancels_the_other_children_and_fails_the_step():
    run = ParentRun(workflow([each(concurrency=3)]), {"orders": [1, 2, 3, 4]})
    starts = run.starts()
    run.child(starts[1], status="failed", error="no stock")
    assert run.state.status == S.RUN_FAILED
    assert "item 1: child run r.ship.1.1 failed: no stock" in run.state.steps["ship"].error
    assert sorted(c.run_id for c in run.cancels()) == ["r.ship.1.0", "r.ship.1.2"]
    assert len(run.starts()) == 3  # item 3 never started


def test_foreach_collect_mode_goes_on_and_lists_failures():
    run = ParentRun(workflow([each(concurrency=10, on_item_failure="collect")]), {"orders": [1, 2, 3]})
    first, second, third = run.starts()
    run.child(first, output=10)
    run.child(second, status="cancelled")
    run.child(third, status="failed", error="boom")
    assert run.state.steps["ship"].output == {"results": [10, None, None],
                                              "failed": [{"index": 1, "error": "cancelled"}, {"index": 2, "error": "boom"}]}


def test_foreach_over_no_items_succeeds_at_once():
    run = ParentRun(workflow([each()]), {"orders": []})
    assert run.state.status == S.RUN_SUCCEEDED and run.state.steps["ship"].output == {"results": [], "failed": []}


def test_foreach_items_must_be_a_list():
    run = ParentRun(workflow([each()]), {"orders": "nope"})
    assert run.state.status == S.RUN_FAILED and "must render to a list" in run.state.steps["ship"].error


def test_on_failure_starts_its_workflow_with_what_went_wrong_but_not_for_itself():
    wf = build({"slug": "wf", "name": "wf", "trigger": {"type": "manual"}, "edges": [],
                "on_failure": {"workflow": "notify-ops"},
                "steps": [{"id": "boom", "type": "fail", "config": {"message": "broken"}}]})
    run = ParentRun(wf, {"x": 1})
    [handler] = run.starts()
    assert handler.workflow == "notify-ops" and handler.version is None and handler.parent is None
    assert handler.input == {"run_id": "r", "workflow": "wf", "version": 1, "failed_step": "boom",
                             "error": run.state.error, "input": {"x": 1}}
    assert run.kinds()[-2:] == ["run_failed", "on_failure_started"]
    again = decide(wf, None, StartRun(run_id="h", workflow="wf", version=1, input={},
                                      trigger={"type": "on_failure", "run_id": "r"}, ts=T0), T0)
    assert not [e for e in again.effects if isinstance(e, StartChild)]
