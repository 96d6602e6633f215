"""The engine's safety nets (pure): re-dispatch of attempts nobody picked up, Sluice's own
topics refused, and payloads or states too large to store failing the step or run clearly."""

from __future__ import annotations

from orchestrator.engine import Policy, Rejected, decide
from orchestrator.engine import state as S
from orchestrator.messages import StartRun, StepPickedUp
from tests.test_engine import T0, Run, chain, py, workflow

POLICY = Policy(reserved_topic_prefix="wf.", max_payload_bytes=1000, schedule_to_start_seconds=30)


class PolicyRun(Run):
    def __init__(self, wf, input=None, policy=POLICY):
        self.policy = policy
        super().__init__(wf, input)

    def feed(self, event):
        decision = decide(self.wf, self.state, event, self.now, self.policy)
        self.state = decision.state
        self.effects.extend(decision.effects)
        self.history.extend(decision.history)
        return decision


def test_an_attempt_nobody_picked_up_is_dispatched_again_with_the_same_key_and_a_longer_wait():
    run = PolicyRun(workflow([py("a")]))
    first = run.last_task("a")
    assert run.state.steps["a"].dispatch_deadline == T0 + 30
    run.at(29)
    assert len(run.tasks()) == 1
    run.at(30)
    again = run.tasks()[-1]
    assert len(run.tasks()) == 2
    assert (again.attempt, again.idempotency_key, again.config) == (first.attempt, first.idempotency_key, first.config)
    redispatched = [e for e in run.history if e.kind == "step_redispatched"]
    assert redispatched[0].data["redispatches"] == 1 and "30s" in redispatched[0].data["reason"]
    assert run.state.steps["a"].dispatch_deadline == T0 + 30 + 60  # waits twice as long next time
    run.result("a", output={"ok": 1})
    assert run.state.status == S.RUN_SUCCEEDED
    assert run.kinds("a").count("step_succeeded") == 1


def test_a_pick_up_notice_or_a_result_stops_the_redispatch():
    run = PolicyRun(workflow([py("a"), py("b")], chain("a", "b")))
    run.feed(StepPickedUp(run_id="r", step_id="a", attempt=1, worker="w", ts=T0))
    assert run.state.steps["a"].dispatch_deadline is None
    run.at(1000)
    assert len(run.tasks()) == 1
    run.result("a")
    assert run.state.steps["a"].dispatch_deadline is None
    assert run.state.steps["b"].dispatch_deadline == T0 + 1000 + 30


def test_a_notice_for_another_attempt_changes_nothing():
    run = PolicyRun(workflow([py("a")]))
    run.feed(StepPickedUp(run_id="r", step_id="a", attempt=2, worker="w", ts=T0))
    assert run.state.steps["a"].dispatch_deadline == T0 + 30


def test_kafka_produce_and_wait_for_event_may_not_use_sluice_topics():
    run = PolicyRun(workflow([{"id": "emit", "type": "kafka_produce",
                               "config": {"topic": "{{ trigger.topic }}", "value": "{{ trigger }}"}}]),
                    {"topic": "wf.runs"})
    assert run.state.status == S.RUN_FAILED
    assert "reserved for Sluice" in run.state.steps["emit"].error
    assert not [e for e in run.effects if type(e).__name__ == "Produce"]
    run = PolicyRun(workflow([{"id": "wait", "type": "wait_for_event",
                               "config": {"topic": "{{ trigger.topic }}", "correlation": "1",
                                          "key_expression": "event.id", "timeout_seconds": 5}}]),
                    {"topic": "wf.history"})
    assert run.state.status == S.RUN_FAILED and "reserved for Sluice" in run.state.steps["wait"].error


def test_an_engine_step_output_over_the_limit_fails_the_step_with_its_size():
    run = PolicyRun(workflow([{"id": "big", "type": "transform", "config": {"output": "{{ 'x' * 5000 }}"}}]))
    assert run.state.status == S.RUN_FAILED
    assert run.state.steps["big"].error == "output of 5002 bytes exceeds the limit of 1000 bytes"


def test_a_run_input_over_the_limit_fails_the_run_at_its_start_without_storing_it():
    run = PolicyRun(workflow([py("a")]), {"blob": "y" * 2000})
    assert run.state.status == S.RUN_FAILED and run.state.input is None
    assert "input of 2011 bytes exceeds the limit of 1000 bytes" in run.state.error
    assert run.kinds() == ["run_started", "run_failed"]
    assert run.history[0].data["input"] is None
    assert not run.tasks()


def test_a_rejected_run_fails_from_the_state_before_and_cancels_what_runs():
    run = PolicyRun(workflow([py("a")]))
    before = run.state
    decision = decide(run.wf, before, Rejected("r", "run state of 2000000 bytes exceeds the limit"), T0, POLICY)
    assert decision.state.status == S.RUN_FAILED
    assert decision.state.steps["a"].status == S.CANCELLED
    assert [e.kind for e in decision.history] == ["step_cancelled", "run_failed"]
    assert before.status == S.RUN_RUNNING  # the input state is never mutated


def test_a_run_rejected_while_starting_is_recorded_then_failed():
    wf = workflow([py("a")])
    start = StartRun(run_id="r", workflow="wf", version=1, input={"n": 1}, ts=T0)
    decision = decide(wf, None, Rejected("r", "too big", start=start), T0, POLICY)
    assert [e.kind for e in decision.history] == ["run_started", "run_failed"]
    assert decision.state.status == S.RUN_FAILED and decision.state.error == "too big"
