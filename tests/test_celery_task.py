"""The celery_task step against a real Celery worker and the real broker: a task's result
becomes the step's output, a failing task fails the attempt and the retry policy sends a new
one, and no worker thread waits meanwhile."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestrator.runtime import commands
from tests.runtime_support import ROOT, ManageProcess, publish, runner_process

pytestmark = pytest.mark.kafka


@pytest.fixture
def celery_worker(kafka):
    """Sluice's celery worker (callbacks on `sluice`, demo tasks on `celery`), as `up` runs it."""
    log = subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "orchestrator", "worker", "--without-gossip",
                                "--without-mingle", "--without-heartbeat", "-Q", "sluice,celery", "--pool", "solo",
                                "-l", "INFO"], cwd=ROOT, env=ManageProcess.environment(), stdout=log,
                               stderr=subprocess.STDOUT)
    yield process
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


def test_a_celery_tasks_result_is_the_output_and_a_failing_one_is_retried(kafka, history, celery_worker):
    publish({"slug": "sums", "name": "Sums", "trigger": {"type": "manual"}, "edges": [{"from": "add", "to": "twice"}],
             "steps": [{"id": "add", "type": "celery_task", "config": {"task": "demo.add", "args": ["{{ trigger.a }}", 2]}},
                       {"id": "twice", "type": "transform", "config": {"output": "{{ steps.add.output * 2 }}"}}]})
    publish({"slug": "refusals", "name": "Refusals", "trigger": {"type": "manual"}, "edges": [],
             "steps": [{"id": "nope", "type": "celery_task", "config": {"task": "demo.refuse", "kwargs": {"reason": "no stock"}},
                        "retry": {"max_attempts": 2, "backoff_seconds": 0.2}}]})
    runner = runner_process("celery-steps")  # a process of its own: Celery's settings come from its environment
    try:
        ok = commands.start_run("sums", 1, {"a": 40})
        failing = commands.start_run("refusals", 1, {})
        history.wait_finished([ok, failing], timeout=120)
    finally:
        runner.stop()
    assert history.finished()[ok][0].data["output"] == 84
    handed = [e for e in history.by_run[ok] if e.kind == "step_waiting" and e.step_id == "add"]
    assert handed[0].data["reason"] == "handed_on" and handed[0].data["celery_task_id"] == f"sluice-{ok}-add-1"
    failed = history.finished()[failing][0]
    assert failed.kind == "run_failed" and "RuntimeError: no stock" in failed.data["error"]
    assert [e.attempt for e in history.by_run[failing] if e.kind == "step_started"] == [1, 2]
    assert [e.data["celery_task_id"] for e in history.by_run[failing] if e.kind == "step_waiting"] == [
        f"sluice-{failing}-nope-1", f"sluice-{failing}-nope-2"]
