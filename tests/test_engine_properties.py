"""Property tests of the pure engine: random DAGs, random worker behaviour, random timing.

Invariants checked on every generated case:
- no step completes twice, and results are applied once even when delivered twice or late;
- every run ends (after the random phase, letting workers answer and time pass ends it);
- exactly one run-finished event per run, and history seq numbers go up one at a time;
- skips propagate: at the end of a successful run a step ran iff one of its incoming edges
  was taken, so joins after a branch still complete.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.engine import Dispatch, Tick, decide
from orchestrator.engine import state as S
from orchestrator.messages import StartRun, StepResult
from orchestrator.spec import build

FINISH_KINDS = {"run_succeeded", "run_failed", "run_cancelled"}


@st.composite
def workflows(draw):
    count = draw(st.integers(min_value=1, max_value=8))
    steps, edges = [], []
    for index in range(count):
        kind = draw(st.sampled_from(["transform", "branch", "python"]))
        step = {"id": f"s{index}", "type": kind}
        if kind == "transform":
            step["config"] = {"output": {"i": index}}
        elif kind == "branch":
            step["config"] = {"condition": draw(st.sampled_from(["true", "false", "trigger.flag"]))}
        else:
            step["config"] = {"handler": "demo.echo", "input": {"i": index}}
            step["retry"] = {"max_attempts": draw(st.integers(1, 3)), "backoff_seconds": 1,
                             "backoff_multiplier": 2, "max_backoff_seconds": 4}
            if draw(st.booleans()):
                step["timeout_seconds"] = draw(st.sampled_from([2, 5]))
        steps.append(step)
        # Edges only go forward in index order: always a DAG.
        if index:
            sources = draw(st.lists(st.integers(0, index - 1), max_size=3, unique=True))
            for source in sources:
                port = "out"
                if steps[source]["type"] == "branch":
                    port = draw(st.sampled_from(["true", "false"]))
                edges.append({"from": f"s{source}", "to": f"s{index}", "port": port})
    return build({"slug": "prop", "name": "prop", "trigger": {"type": "manual"}, "steps": steps, "edges": edges})


class Simulation:
    def __init__(self, workflow, flag: bool):
        self.workflow = workflow
        self.now = 1000.0
        self.history = []
        self.outstanding: list = []  # dispatched tasks not yet answered
        self.answered: list = []  # results already delivered (for duplicate delivery)
        decision = decide(workflow, None, StartRun(run_id="r1", workflow="prop", version=1,
                                                   input={"flag": flag}, ts=self.now), self.now)
        self.state = decision.state
        self._take(decision)

    def _take(self, decision):
        self.state = decision.state if decision.state is not None else self.state
        for effect in decision.effects:
            if isinstance(effect, Dispatch):
                self.outstanding.append(effect.task)
        self.history.extend(decision.history)

    def feed(self, event):
        self._take(decide(self.workflow, self.state, event, self.now))

    def answer(self, index: int, ok: bool):
        task = self.outstanding.pop(index % len(self.outstanding))
        result = StepResult(run_id="r1", step_id=task.step_id, attempt=task.attempt, ok=ok,
                            output={"from": task.step_id} if ok else None, error=None if ok else "boom",
                            started_at=self.now, ended_at=self.now)
        self.answered.append(result)
        self.feed(result)

    def redeliver(self, index: int):
        self.feed(self.answered[index % len(self.answered)])

    def pass_time(self, seconds: float):
        self.now += seconds
        self.feed(Tick("r1"))


actions = st.lists(
    st.tuples(st.sampled_from(["ok", "fail", "dup", "time"]), st.integers(0, 50), st.sampled_from([0.5, 1, 3, 10])),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflow=workflows(), flag=st.booleans(), script=actions)
def test_engine_invariants(workflow, flag, script):
    sim = Simulation(workflow, flag)
    for action, index, seconds in script:
        if sim.state.done:
            break
        if action in ("ok", "fail") and sim.outstanding:
            sim.answer(index, ok=action == "ok")
        elif action == "dup" and sim.answered:
            sim.redeliver(index)
        elif action == "time":
            sim.pass_time(seconds)

    # Let it finish: workers answer everything, time passes for backoffs and timeouts.
    for _ in range(200):
        if sim.state.done:
            break
        if sim.outstanding:
            sim.answer(0, ok=True)
        else:
            sim.pass_time(5)
    assert sim.state.done, f"run did not end: {sim.state}"

    # Late and duplicate deliveries after the end change nothing.
    for result in list(sim.answered):
        before = len(sim.history)
        sim.feed(result)
        assert len(sim.history) == before

    kinds = Counter(event.kind for event in sim.history)
    assert sum(kinds[k] for k in FINISH_KINDS) == 1
    assert [event.seq for event in sim.history] == list(range(1, len(sim.history) + 1))
    completions = Counter(e.step_id for e in sim.history if e.kind in ("step_succeeded", "step_skipped"))
    assert all(count == 1 for count in completions.values()), completions

    steps = sim.state.steps
    if sim.state.status == S.RUN_SUCCEEDED:
        for step_id in workflow.steps:
            incoming = workflow.incoming[step_id]
            taken = [e for e in incoming if steps[e.source].status == S.SUCCEEDED and steps[e.source].port == e.port]
            expected = S.SUCCEEDED if (not incoming or taken) else S.SKIPPED
            assert steps[step_id].status == expected, (step_id, steps[step_id].status, expected)
    elif sim.state.status == S.RUN_FAILED:
        assert any(step.status == S.FAILED for step in steps.values())
        assert not any(step.status in (S.RUNNING, S.WAITING, S.RETRYING) for step in steps.values())
    for step_id, step in steps.items():
        attempts_ok = [a for a in step.attempts if a.error is None and a.ended_at is not None]
        assert len(attempts_ok) <= 1, (step_id, step.attempts)
        max_attempts = workflow.steps[step_id].retry.max_attempts
        assert step.attempt <= max_attempts
