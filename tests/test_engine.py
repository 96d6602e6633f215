"""The engine's decisions, one behaviour at a time (pure: no broker, no database)."""

from __future__ import annotations

import pytest

from orchestrator.engine import CloseWait, Dispatch, OpenWait, Produce, Tick, decide
from orchestrator.engine import state as S
from orchestrator.messages import (
    CancelRun,
    EventArrived,
    RetryRun,
    SignalRun,
    StartRun,
    StepResult,
)
from orchestrator.spec import build

T0 = 1_000_000.0


def workflow(steps, edges=(), trigger=None):
    return build({"slug": "wf", "name": "wf", "trigger": trigger or {"type": "manual"},
                  "steps": list(steps), "edges": list(edges)})


def chain(*ids):
    return [{"from": a, "to": b} for a, b in zip(ids, ids[1:])]


class Run:
    """Drives one run through decide() and keeps everything it emitted."""

    def __init__(self, wf, input=None, now=T0):
        self.wf, self.now = wf, now
        self.history, self.effects = [], []
        self.state = None
        self.feed(StartRun(run_id="r", workflow="wf", version=1, input=input or {}, ts=now))

    def feed(self, event):
        decision = decide(self.wf, self.state, event, self.now)
        self.state = decision.state
        self.effects.extend(decision.effects)
        self.history.extend(decision.history)
        return decision

    def tasks(self):
        return [e.task for e in self.effects if isinstance(e, Dispatch)]

    def last_task(self, step_id):
        return [t for t in self.tasks() if t.step_id == step_id][-1]

    def result(self, step_id, ok=True, output=None, error=None, attempt=None):
        task = self.last_task(step_id)
        return self.feed(StepResult(run_id="r", step_id=step_id, attempt=attempt or task.attempt, ok=ok,
                                    output=output, error=error, started_at=self.now, ended_at=self.now))

    def at(self, seconds):
        self.now = T0 + seconds
        return self.feed(Tick("r"))

    def kinds(self, step_id=None):
        return [e.kind for e in self.history if step_id is None or e.step_id == step_id]


def py(step_id, **extra):
    return {"id": step_id, "type": "python", "config": {"handler": "demo.echo", "input": "{{ trigger }}"}, **extra}


def test_three_steps_run_in_order_and_the_last_output_is_the_runs():
    wf = workflow([
        {"id": "a", "type": "transform", "config": {"output": {"n": "{{ trigger.n + 1 }}"}}},
        {"id": "b", "type": "python", "config": {"handler": "demo.echo", "input": "{{ steps.a.output }}"}},
        {"id": "c", "type": "transform", "config": {"output": {"double": "{{ steps.b.output.n * 2 }}"}}},
    ], chain("a", "b", "c"))
    run = Run(wf, {"n": 1})
    assert run.state.steps["a"].status == S.SUCCEEDED
    task = run.last_task("b")
    assert task.config == {"handler": "demo.echo", "input": {"n": 2}}
    assert task.idempotency_key == "r/b/1"
    run.result("b", output={"n": 2})
    assert run.state.status == S.RUN_SUCCEEDED
    assert run.state.output == {"double": 4}
    assert run.kinds()[0] == "run_started" and run.kinds()[-1] == "run_succeeded"


def test_retries_back_off_exponentially_with_a_cap_then_fail_the_run():
    wf = workflow([py("p", retry={"max_attempts": 4, "backoff_seconds": 1, "backoff_multiplier": 3,
                                  "max_backoff_seconds": 5})])
    run = Run(wf)
    delays = []
    for attempt in (1, 2, 3):
        run.result("p", ok=False, error=f"boom {attempt}")
        retrying = [e for e in run.history if e.kind == "step_retrying"][-1]
        delays.append(retrying.data["backoff_seconds"])
        assert run.state.steps["p"].status == S.RETRYING
        run.at(run.state.steps["p"].wake_at - T0 - 0.01)  # not yet due
        assert len(run.tasks()) == attempt
        run.at(run.state.steps["p"].wake_at - T0)
        assert run.last_task("p").attempt == attempt + 1
    assert delays == [1, 3, 5]
    run.result("p", ok=False, error="boom 4")
    assert run.state.status == S.RUN_FAILED
    assert "boom 4" in run.state.error
    assert [a.backoff_seconds for a in run.state.steps["p"].attempts] == [1, 3, 5, None]


def test_only_the_first_result_of_an_attempt_counts():
    run = Run(workflow([py("p", retry={"max_attempts": 2, "backoff_seconds": 1})]))
    run.result("p", ok=False, error="first")
    assert run.result("p", ok=True, attempt=1).effects == []  # late duplicate of attempt 1
    run.at(1)
    run.result("p", ok=True, output="done")
    assert run.result("p", ok=True, output="again").effects == []
    assert run.kinds("p").count("step_succeeded") == 1
    assert run.state.output == "done"


def test_a_timed_out_attempt_is_retried_and_its_late_result_ignored():
    run = Run(workflow([py("p", timeout_seconds=10, retry={"max_attempts": 2, "backoff_seconds": 2})]))
    run.at(10)
    assert run.state.steps["p"].attempts[0].error == "timed out after 10s"
    run.at(12)
    assert run.last_task("p").attempt == 2
    assert run.result("p", ok=True, attempt=1).effects == []
    run.result("p", ok=True, output=1)
    assert run.state.status == S.RUN_SUCCEEDED


def celery(step_id, **extra):
    return {"id": step_id, "type": "celery_task", "config": {"task": "demo.add", "args": [1, 2]}, **extra}


def handed(run, step_id, attempt, ok=True, output=None, error=None, pending=False, where=None):
    where = {"celery_task_id": f"sluice-r-{step_id}-{attempt}", "task": "demo.add"} if where is None else where
    return run.feed(StepResult(run_id="r", step_id=step_id, attempt=attempt, ok=ok, error=error,
                               output=where if pending else output, started_at=run.now, ended_at=run.now,
                               worker="celery" if not pending else "w", pending=pending,
                               handed_on=None if pending else where))


def waiting(run, step_id):
    return [(e.attempt, e.data) for e in run.history if e.kind == "step_waiting" and e.step_id == step_id]


def test_a_hand_on_is_recorded_once_whichever_of_report_and_outcome_comes_first():
    run = Run(workflow([celery("c", retry={"max_attempts": 2, "backoff_seconds": 1})]))
    # Attempt 1: the worker's report, then the outcome (the usual order).
    handed(run, "c", 1, pending=True)
    handed(run, "c", 1, ok=False, error="no stock")
    run.at(1)
    # Attempt 2: the outcome overtakes the report, which then changes nothing.
    handed(run, "c", 2, output=3)
    assert handed(run, "c", 2, pending=True).effects == []
    where = {"reason": "handed_on", "task": "demo.add"}
    assert waiting(run, "c") == [(1, {**where, "celery_task_id": "sluice-r-c-1"}),
                                 (2, {**where, "celery_task_id": "sluice-r-c-2"})]
    assert run.kinds("c")[-2:] == ["step_waiting", "step_succeeded"]
    assert run.state.output == 3


def test_a_hand_on_from_a_record_cannot_set_the_events_own_names():
    run = Run(workflow([celery("c")]))
    handed(run, "c", 1, pending=True, where={"reason": "forged", "step_id": "x", "kind": "k", "attempt": 9,
                                             "celery_task_id": "id"})
    assert waiting(run, "c") == [(1, {"reason": "handed_on", "celery_task_id": "id"})]
    handed(run, "c", 1, output=1, where=["not", "a", "dict"])
    assert run.state.status == S.RUN_SUCCEEDED


def test_branch_skips_the_path_not_taken_and_the_join_still_runs():
    wf = workflow([
        {"id": "route", "type": "branch", "config": {"condition": "trigger.total > 100"}},
        {"id": "big", "type": "transform", "config": {"output": "big"}},
        {"id": "small", "type": "transform", "config": {"output": "small"}},
        {"id": "after_small", "type": "transform", "config": {"output": "x"}},
        {"id": "join", "type": "transform", "config": {"output": "{{ steps.big.output or steps.after_small.output }}"}},
    ], [{"from": "route", "port": "true", "to": "big"}, {"from": "route", "port": "false", "to": "small"},
        {"from": "small", "to": "after_small"}, {"from": "big", "to": "join"}, {"from": "after_small", "to": "join"}])
    run = Run(wf, {"total": 150})
    steps = run.state.steps
    assert (steps["big"].status, steps["small"].status, steps["after_small"].status) == (S.SUCCEEDED, S.SKIPPED, S.SKIPPED)
    assert steps["join"].status == S.SUCCEEDED and steps["join"].output == "big"
    assert run.state.status == S.RUN_SUCCEEDED


def test_parallel_branches_are_dispatched_together():
    wf = workflow([{"id": "start", "type": "transform", "config": {"output": 1}}, py("left"), py("right"),
                   {"id": "end", "type": "transform", "config": {"output": "{{ [steps.left.output, steps.right.output] }}"}}],
                  [{"from": "start", "to": "left"}, {"from": "start", "to": "right"},
                   {"from": "left", "to": "end"}, {"from": "right", "to": "end"}])
    run = Run(wf)
    assert sorted(t.step_id for t in run.tasks()) == ["left", "right"]
    run.result("right", output="R")
    assert run.state.steps["end"].status == S.PENDING
    run.result("left", output="L")
    assert run.state.output == ["L", "R"]


def test_a_failed_step_cancels_what_is_in_flight_and_retry_reruns_only_failures():
    wf = workflow([py("ok"), py("bad"), {"id": "end", "type": "transform", "config": {"output": "end"}}],
                  [{"from": "ok", "to": "end"}, {"from": "bad", "to": "end"}])
    run = Run(wf)
    run.result("bad", ok=False, error="nope")
    assert run.state.status == S.RUN_FAILED
    assert run.state.steps["ok"].status == S.CANCELLED
    assert run.result("ok", ok=True, attempt=1).effects == []  # late: the attempt was cancelled
    dispatched = len(run.tasks())
    run.feed(RetryRun(run_id="r", by="alice", ts=T0))
    assert run.state.status == S.RUN_RUNNING
    new = run.tasks()[dispatched:]
    assert sorted((t.step_id, t.attempt) for t in new) == [("bad", 2), ("ok", 2)]
    assert new[0].idempotency_key.endswith("/2")
    run.result("ok", output="o")
    run.result("bad", output="b")
    assert run.state.status == S.RUN_SUCCEEDED
    assert run.kinds().count("run_failed") == 1 and run.kinds()[-1] == "run_succeeded"


def test_retry_keeps_what_succeeded():
    run = Run(workflow([py("first"), py("second")], chain("first", "second")))
    run.result("first", output=1)
    run.result("second", ok=False, error="x")
    run.feed(RetryRun(run_id="r", ts=T0))
    assert [t.step_id for t in run.tasks()] == ["first", "second", "second"]


def test_cancel_stops_the_run_once():
    run = Run(workflow([py("p")]))
    run.feed(CancelRun(run_id="r", reason="not needed", by="bob", ts=T0))
    assert run.state.status == S.RUN_CANCELLED
    assert run.state.steps["p"].status == S.CANCELLED
    assert run.feed(CancelRun(run_id="r", ts=T0)).effects == []
    assert run.kinds().count("run_cancelled") == 1


def test_approval_waits_for_its_signal():
    wf = workflow([{"id": "ok?", "type": "approval", "config": {}},
                   {"id": "yes", "type": "transform", "config": {"output": "approved"}},
                   {"id": "no", "type": "transform", "config": {"output": "rejected"}}],
                  [{"from": "ok?", "port": "approve", "to": "yes"}, {"from": "ok?", "port": "reject", "to": "no"}])
    run = Run(wf)
    assert run.state.steps["ok?"].status == S.WAITING
    run.feed(SignalRun(run_id="r", name="something-else", payload=True, ts=T0))
    assert run.state.steps["ok?"].status == S.WAITING
    run.feed(SignalRun(run_id="r", name="ok?", payload={"approved": False}, by="carol", ts=T0))
    assert run.state.steps["no"].status == S.SUCCEEDED and run.state.steps["yes"].status == S.SKIPPED


def test_delay_sleeps_on_a_timer():
    run = Run(workflow([{"id": "d", "type": "delay", "config": {"seconds": 30}}]))
    assert run.state.steps["d"].status == S.WAITING and run.state.next_wake() == T0 + 30
    run.at(29)
    assert not run.state.done
    run.at(30)
    assert run.state.status == S.RUN_SUCCEEDED


def test_wait_for_event_subscribes_and_times_out_through_its_port():
    wf = workflow([{"id": "w", "type": "wait_for_event",
                    "config": {"topic": "payments", "correlation": "{{ trigger.order }}",
                               "key_expression": "event.order_id", "timeout_seconds": 60}},
                   {"id": "paid", "type": "transform", "config": {"output": "{{ steps.w.output.value }}"}},
                   {"id": "late", "type": "transform", "config": {"output": "late"}}],
                  [{"from": "w", "port": "event", "to": "paid"}, {"from": "w", "port": "timeout", "to": "late"}])
    run = Run(wf, {"order": 7})
    opened = [e for e in run.effects if isinstance(e, OpenWait)]
    assert opened[0].subscription.correlation == "7" and opened[0].subscription.topic == "payments"
    run.feed(EventArrived(run_id="r", step_id="w", attempt=1, event={"value": {"order_id": 7}}, ts=T0))
    assert run.state.steps["paid"].output == {"order_id": 7}
    assert any(isinstance(e, CloseWait) for e in run.effects)

    timed_out = Run(wf, {"order": 8})
    timed_out.at(60)
    assert timed_out.state.steps["late"].status == S.SUCCEEDED
    assert timed_out.state.steps["paid"].status == S.SKIPPED


def test_kafka_produce_is_an_effect_of_the_engine():
    run = Run(workflow([{"id": "emit", "type": "kafka_produce",
                         "config": {"topic": "shipments", "key": "{{ trigger.id }}", "value": "{{ trigger }}"}}]),
              {"id": "o-1"})
    produced = [e for e in run.effects if isinstance(e, Produce)]
    assert produced == [Produce("shipments", {"id": "o-1"}, "o-1", {})]


def test_secrets_stay_markers_in_everything_the_engine_writes():
    wf = workflow([{"id": "call", "type": "http", "config": {
        "method": "GET", "url": "http://127.0.0.1:1/x", "headers": {"Authorization": "Bearer {{ secret('API_TOKEN') }}"}}}])
    run = Run(wf)
    assert run.last_task("call").config["headers"]["Authorization"] == "Bearer «secret:API_TOKEN»"
    started = [e for e in run.history if e.kind == "step_started"][0]
    assert "«secret:API_TOKEN»" in str(started.data)


def test_an_expression_error_fails_the_step_without_retrying():
    wf = workflow([{"id": "t", "type": "transform", "config": {"output": "{{ trigger.items | sum }}"}, "retry": {"max_attempts": 5}}])
    run = Run(wf, {"items": ["a", 1]})
    assert run.state.status == S.RUN_FAILED
    assert run.state.steps["t"].attempt == 1


def test_a_repeated_start_is_ignored():
    wf = workflow([py("p")])
    run = Run(wf)
    assert run.feed(StartRun(run_id="r", workflow="wf", version=1, input={}, ts=T0)).effects == []


def test_the_input_state_is_never_mutated():
    run = Run(workflow([py("p", retry={"max_attempts": 2})]))
    before = run.state
    snapshot = repr(before)
    decide(run.wf, before, StepResult(run_id="r", step_id="p", attempt=1, ok=False, error="x",
                                      started_at=T0, ended_at=T0), T0)
    assert repr(before) == snapshot


@pytest.mark.parametrize("event", [Tick("r"), CancelRun(run_id="r", ts=T0), RetryRun(run_id="r", ts=T0)])
def test_commands_for_unknown_runs_do_nothing(event):
    assert decide(None, None, event, T0).effects == []
