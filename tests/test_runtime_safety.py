"""The runtime's safety nets against the real embedded broker: records for runs without state,
dispatches no worker saw, and poison that would otherwise stall a loop forever."""

from __future__ import annotations

import contextlib
import json
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from django.conf import settings

from orchestrator.handlers import handler
from orchestrator.messages import StepResult
from orchestrator.runtime import codec, commands
from orchestrator.runtime.runner import Runner, RunnerOptions
from tests.runtime_support import produce, publish, read_topic, user_topic
from tests.test_runtime_kafka import three_steps

pytestmark = pytest.mark.kafka


@handler("test.big_output")
def big_output(input, ctx):
    return {"blob": "z" * int(input["bytes"])}


@contextlib.contextmanager
def running(**options):
    """A runner in threads of this process (its handlers include this module's)."""
    options.setdefault("instance_id", f"safety-{uuid.uuid4().hex[:6]}")
    runner = Runner(RunnerOptions(**options))
    runner.start()
    try:
        yield runner
    finally:
        runner.stop.set()
        runner.join()
    if runner.failure:
        raise runner.failure


def dead_letters(topics, count: int, timeout: float = 30.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        letters = read_topic(topics.dlq)
        if len(letters) >= count or time.monotonic() > deadline:
            return letters
        time.sleep(0.3)


def error_of(letter) -> str:
    return dict(letter.headers())["sluice-error"].decode()


def test_a_result_for_a_run_without_state_is_dead_lettered_with_the_reason(kafka, history):
    publish(three_steps())
    stray = StepResult(run_id="never-started", step_id="echo", attempt=1, ok=True, output={}, started_at=0, ended_at=0)
    with running():
        produce(kafka.runs, [codec.encode(stray)], key=b"never-started")
        run_id = commands.start_run("three", 1, {"n": 1})
        history.wait_finished([run_id], timeout=60)
        letters = dead_letters(kafka, 1)
    assert [m.key() for m in letters] == [b"never-started"]
    assert "no state for run never-started" in error_of(letters[0])
    assert dict(letters[0].headers())["sluice-stage"] == b"engine"


def test_a_late_result_for_a_run_that_finished_before_a_restart_is_not_a_dead_letter(kafka, history):
    publish(three_steps())
    instance = f"late-{uuid.uuid4().hex[:6]}"
    with running(instance_id=instance):
        run_id = commands.start_run("three", 1, {"n": 1})
        history.wait_finished([run_id], timeout=60)
    late = StepResult(run_id=run_id, step_id="echo", attempt=1, ok=True, output={}, started_at=0, ended_at=0)
    produce(kafka.runs, [codec.encode(late)], key=run_id.encode())
    with running(instance_id=instance) as runner:  # restores "finished" from the state tombstones
        after = commands.start_run("three", 1, {"n": 2})
        history.wait_finished([after], timeout=60)
        deadline = time.monotonic() + 10
        while runner.stats().get("engine.late_records", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert runner.stats().get("engine.late_records") == 1
    assert read_topic(kafka.dlq) == []


def test_a_dispatch_no_worker_ever_saw_is_sent_again_with_the_same_idempotency_key(kafka, history, settings):
    settings.SLUICE_SCHEDULE_TO_START_SECONDS = 1.0
    publish(three_steps())
    with running(workers_per_queue=0, triggers=False):  # an engine with no workers
        run_id = commands.start_run("three", 1, {"n": 1})
        history.wait_until(lambda log: any(e.kind == "step_started" for e in log.by_run[run_id]), 30, "the dispatch")
        # The dispatch is lost: the workers' group is moved past it before any worker reads it.
        tasks = kafka.tasks("default")
        skipper = Consumer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS,
                            "group.id": kafka.group("workers.default"), "enable.auto.commit": False})
        ends = [TopicPartition(tasks, p, skipper.get_watermark_offsets(TopicPartition(tasks, p), timeout=10)[1])
                for p in range(settings.SLUICE_PARTITIONS)]
        skipper.commit(offsets=ends, asynchronous=False)
        skipper.close()
        with running(engine=False, triggers=False):
            history.wait_finished([run_id], timeout=60)
    events = history.by_run[run_id]
    assert history.finished()[run_id][0].kind == "run_succeeded"
    redispatched = [e for e in events if e.kind == "step_redispatched"]
    assert redispatched and redispatched[0].step_id == "echo" and redispatched[0].attempt == 1
    assert [e.kind for e in events if e.step_id == "echo"].count("step_succeeded") == 1
    dispatches = [codec.decode_task(m.value()) for m in read_topic(kafka.tasks("default"))]
    assert {t.idempotency_key for t in dispatches} == {f"{run_id}/echo/1"} and len(dispatches) >= 2


def test_a_slow_step_is_announced_as_picked_up_and_not_dispatched_again(kafka, history, settings):
    """A handler that outlasts schedule-to-start: the worker says it has the attempt (after a
    quarter of that time), so the engine does not send it to another worker; a quick run
    sends no notice at all."""
    settings.SLUICE_SCHEDULE_TO_START_SECONDS = 2.0
    publish({"slug": "slow", "name": "Slow", "trigger": {"type": "manual"}, "steps": [
        {"id": "nap", "type": "python", "config": {"handler": "demo.sleep", "input": {"seconds": 5}}}],
        "edges": []})
    publish(three_steps())
    with running(triggers=False):
        # First a quick run, which also waits out the worker joining its group: a dispatch
        # nobody could pick up yet is rightly sent again (the test above).
        quick = commands.start_run("three", 1, {"n": 1})
        history.wait_finished([quick], timeout=60)
        slow = commands.start_run("slow", 1, {})
        history.wait_finished([slow], timeout=60)
    kinds = [e.kind for e in history.by_run[slow]]
    assert history.finished()[slow][0].kind == "run_succeeded"
    assert "step_picked_up" in kinds and "step_redispatched" not in kinds
    assert [m.key() for m in read_topic(kafka.tasks("default"))].count(slow.encode()) == 1
    assert "step_picked_up" not in [e.kind for e in history.by_run[quick]]


def test_outputs_and_inputs_over_the_limit_fail_their_step_or_run_and_the_next_run_succeeds(kafka, history):
    limit = settings.SLUICE_MAX_PAYLOAD_BYTES
    publish({"slug": "big", "name": "Big", "trigger": {"type": "manual"}, "steps": [
        {"id": "grow", "type": "transform", "config": {"output": {
            part: "{{ trigger.blob }}" for part in "abcde"}}}], "edges": []})
    publish({"slug": "big-worker", "name": "Big worker", "trigger": {"type": "manual"}, "steps": [
        {"id": "grow", "type": "python", "config": {"handler": "test.big_output", "input": "{{ trigger }}"}}],
        "edges": []})
    publish(three_steps())
    with running():
        engine_side = commands.start_run("big", 1, {"blob": "x" * 240_000})  # five copies: 1.2 MB
        worker_side = commands.start_run("big-worker", 1, {"bytes": 600_000})
        big_input = commands.start_run("three", 1, {"n": 1, "blob": "y" * 600_000})
        normal = commands.start_run("three", 1, {"n": 5})
        history.wait_finished([engine_side, worker_side, big_input, normal], timeout=90)
    finished = {run_id: events[0] for run_id, events in history.finished().items()}
    assert finished[normal].kind == "run_succeeded"
    assert f"output of 1200036 bytes exceeds the limit of {limit} bytes" in finished[engine_side].data["error"]
    assert f"output of 600011 bytes exceeds the limit of {limit} bytes" in finished[worker_side].data["error"]
    assert f"exceeds the limit of {limit} bytes" in finished[big_input].data["error"]
    assert history.by_run[big_input][0].data["input"] is None  # never stored or shown


# The largest value the embedded broker takes in one record (the rest of its ~1,048,516-byte
# limit is the record batch's own overhead).
BROKER_MAX_VALUE = 1_048_400


def test_a_record_too_large_for_a_run_goes_to_the_dead_letter_topic_and_the_trigger_goes_on(kafka, history):
    topic = user_topic(kafka, "uploads")
    publish({"slug": "uploads", "name": "Uploads", "trigger": {"type": "kafka", "topic": topic},
             "steps": [{"id": "note", "type": "transform", "config": {"output": "{{ trigger.name }}"}}],
             "edges": []})
    with running():
        time.sleep(2)  # the trigger follows the (new) topic
        produce(topic, [b"x" * BROKER_MAX_VALUE, json.dumps({"name": "small"}).encode()])
        history.wait_until(lambda log: len(log.finished()) == 1, 60, "the small record's run")
        letters = dead_letters(kafka, 1)
    assert list(history.finished().values())[0][0].data["output"] == "small"
    assert len(letters) == 1 and letters[0].value() is None  # too big to copy: coordinates only
    headers = dict(letters[0].headers())
    assert f"record of {BROKER_MAX_VALUE} bytes is over the run input limit".encode() in headers["sluice-error"]
    assert headers["sluice-value-omitted"] == str(BROKER_MAX_VALUE).encode() and headers["sluice-source-offset"] == b"0"


def test_the_one_record_whose_transaction_fails_is_isolated_and_every_other_run_finishes(kafka, history):
    publish({"slug": "emit", "name": "Emit", "trigger": {"type": "manual"}, "steps": [
        {"id": "send", "type": "kafka_produce", "config": {"topic": "{{ trigger.topic }}", "value": "{{ trigger }}"}}],
        "edges": []})
    good_topic = user_topic(kafka, "emitted")
    inputs = [{"topic": good_topic, "i": i} for i in range(8)]
    inputs[3] = {"topic": "not a valid topic name!", "i": 3}
    # Started before the runner, so they land in the same engine batches.
    run_ids = [commands.start_run("emit", 1, payload) for payload in inputs]
    with running():
        good = [r for i, r in enumerate(run_ids) if i != 3]
        history.wait_finished(good, timeout=90)
        letters = dead_letters(kafka, 1)
        after = commands.start_run("emit", 1, {"topic": good_topic, "i": 99})
        history.wait_finished([after], timeout=30)
    assert [m.key() for m in letters] == [run_ids[3].encode()]
    assert "failed delivery" in error_of(letters[0]) or "topic" in error_of(letters[0]).lower()
    assert sorted(json.loads(m.value())["i"] for m in read_topic(good_topic)) == [0, 1, 2, 4, 5, 6, 7, 99]
    assert run_ids[3] not in history.by_run
