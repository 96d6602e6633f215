"""Trigger control against the real broker: a paused trigger starts nothing and stays paused
across a restart; on resume its backlog drains at max_runs_per_second."""

from __future__ import annotations

import json
import time

import pytest

from orchestrator.messages import StartRun
from orchestrator.runtime import codec, commands
from tests.runtime_support import produce, publish, read_topic, user_topic
from tests.test_kafka_trigger_start import create_topic, wait_until_assigned
from tests.test_runtime_safety import running

pytestmark = pytest.mark.kafka

RATE = 20


def started(history, slug):
    return sorted(e.ts for e in history.events if e.kind == "run_started" and e.workflow == slug)


def test_a_paused_trigger_starts_nothing_survives_a_restart_and_drains_at_its_rate(kafka, history):
    topic = user_topic(kafka, "jobs")
    create_topic(topic, partitions=2)
    publish({"slug": "jobs", "name": "Jobs", "edges": [],
             "trigger": {"type": "kafka", "topic": topic, "max_runs_per_second": RATE},
             "steps": [{"id": "note", "type": "transform", "config": {"output": "{{ trigger.i }}"}}]})
    instance = "control"
    with running(instance_id=instance) as runner:
        wait_until_assigned(runner, {"jobs"})
        commands.set_trigger_paused("jobs", True, by="test")
        supervisor = next(loop for loop in runner.loops if loop.stage == "triggers")
        deadline = time.monotonic() + 10
        while not supervisor.running["jobs"][0].paused and time.monotonic() < deadline:
            time.sleep(0.1)
        produce(topic, [json.dumps({"i": i}).encode() for i in range(100)])
        time.sleep(3)
        history.poll()
        assert started(history, "jobs") == []
        assert supervisor.lags().get("jobs") == 100  # the backlog, in records
    with running(instance_id=instance) as runner:  # paused is kept across a restart
        wait_until_assigned(runner, {"jobs"})
        time.sleep(2)
        history.poll()
        assert started(history, "jobs") == []
        commands.set_trigger_paused("jobs", False, by="test")
        history.wait_until(lambda log: len(started(log, "jobs")) == 100, 60, "the backlog to drain")
    # When the trigger started each run (its commands' times): the engine's own times add how
    # long each command queued, which bunches them under load (44 in one second, once, in CI).
    commands_sent = (codec.decode_run_command(record.value(), record.headers()) for record in read_topic(kafka.runs))
    times = sorted(command.ts for command in commands_sent
                   if isinstance(command, StartRun) and command.workflow == "jobs")
    assert len(times) == 100
    # Never more than a second's worth (plus the one-second burst) in any second.
    busiest = max(sum(1 for t in times if start <= t < start + 1) for start in times)
    assert busiest <= 2 * RATE, busiest
