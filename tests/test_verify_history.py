"""The replayer: runs recorded by a real runner replay through decide() without divergence, and
a history that does not follow from its inputs is reported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestrator.messages import CancelRun, HistoryEvent, StepResult
from orchestrator.runtime import codec, commands
from orchestrator.runtime.verify import verify
from tests.runtime_support import ROOT, ManageProcess, produce, publish
from tests.test_runtime_kafka import three_steps
from tests.test_runtime_safety import running

pytestmark = pytest.mark.kafka

BRANCHY = {
    "slug": "branchy", "name": "Branchy", "trigger": {"type": "manual"},
    "steps": [
        {"id": "check", "type": "branch", "config": {"condition": "trigger.n > 2"}},
        {"id": "flaky", "type": "python", "config": {"handler": "demo.flaky", "input": {"fail_times": 1}},
         "retry": {"max_attempts": 3, "backoff_seconds": 0.1}},
        {"id": "pause", "type": "delay", "config": {"seconds": 0.2}},
        {"id": "join", "type": "transform", "config": {"output": {"n": "{{ trigger.n }}"}}},
    ],
    "edges": [{"from": "check", "port": "true", "to": "flaky"}, {"from": "check", "port": "false", "to": "pause"},
              {"from": "flaky", "to": "join"}, {"from": "pause", "to": "join"}],
}
WAITS = {
    "slug": "waits", "name": "Waits", "trigger": {"type": "manual"},
    "steps": [{"id": "sleep", "type": "python", "config": {"handler": "demo.sleep", "input": {"seconds": 30}}}],
    "edges": [],
}


def test_recorded_runs_replay_without_divergence_and_a_forged_event_is_reported(kafka, history):
    for definition in (three_steps(), BRANCHY, WAITS):
        publish(definition)
    with running():
        runs = [commands.start_run("three", 1, {"n": n}) for n in range(5)]
        runs += [commands.start_run("branchy", 1, {"n": n}) for n in range(6)]
        runs.append(commands.start_run("three", 1, {"n": 1, "blob": "x" * 300_000}))  # fails: input too large
        cancelled = commands.start_run("waits", 1, {})
        history.wait_until(lambda log: any(e.kind == "step_started" for e in log.by_run[cancelled]), 30, "the sleep")
        commands.send_command(CancelRun(run_id=cancelled, reason="test", by="test", ts=0))
        history.wait_finished(runs + [cancelled], timeout=90)
        duplicate = StepResult(run_id=runs[0], step_id="echo", attempt=1, ok=True, output={}, started_at=0, ended_at=0)
        produce(kafka.runs, [codec.encode(duplicate)], key=runs[0].encode())  # late: ignored, no history

    report = verify(kafka)
    assert report.divergences == []
    assert (report.runs, report.replayed, report.skipped) == (13, 13, 0)

    recorded = history.by_run[runs[1]]
    forged = HistoryEvent(run_id=runs[1], seq=len(recorded) + 1, kind="run_succeeded", ts=recorded[-1].ts + 1,
                          workflow="three", version=1, data={"output": "forged"}, cause=recorded[0].cause)
    produce(kafka.history, [codec.encode(forged)], key=runs[1].encode())
    report = verify(kafka, {runs[1]})
    assert [d.run_id for d in report.divergences] == [runs[1]]

    command = subprocess.run([sys.executable, str(ROOT / "manage.py"), "verify_history", runs[1]], cwd=ROOT,
                             env=ManageProcess.environment(), capture_output=True, text=True, timeout=120)
    assert command.returncode == 1
    assert "divergences: 1" in command.stdout and runs[1] in command.stdout
