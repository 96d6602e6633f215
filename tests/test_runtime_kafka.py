"""The runtime against the real embedded broker: runs, retries, crashes, triggers, dead letters."""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer

from orchestrator.runtime import commands
from orchestrator.runtime.triggers import trigger_run_id
from tests.observability_support import three_steps
from tests.runtime_support import (
    produce,
    publish,
    runner_process,
    start_thread,
    user_topic,
)

pytestmark = pytest.mark.kafka




def test_runs_flow_through_engine_and_workers(kafka, runner, history):
    publish(three_steps())
    run_ids = [commands.start_run("three", 1, {"n": n}) for n in range(20)]
    history.wait_finished(run_ids, timeout=60)
    outputs = {e.run_id: e.data["output"] for e in history.events if e.kind == "run_succeeded"}
    assert [outputs[run_id] for run_id in run_ids] == [{"result": (n + 1) * 10} for n in range(20)]


def test_publish_then_start_at_once_never_fails(kafka, runner, history):
    """The runner has not read version 2 when its start arrives: it catches up first."""
    publish(three_steps())
    history.wait_until(lambda _: runner.registry.get("three", 1) is not None, 30, "version 1 to be read")
    definition = three_steps()
    definition["steps"][2]["config"]["output"] = {"result": "v2"}
    publish(definition, version=2)
    run_id = commands.start_run("three", 2, {"n": 1})
    history.wait_finished([run_id], timeout=30)
    assert history.finished()[run_id][0].data["output"] == {"result": "v2"}


def test_flaky_step_succeeds_after_retries_with_backoff_recorded(kafka, runner, history):
    publish({
        "slug": "flaky", "name": "Flaky", "trigger": {"type": "manual"},
        "steps": [{"id": "wobbly", "type": "python", "config": {"handler": "demo.flaky", "input": {"fail_times": 2}},
                   "retry": {"max_attempts": 4, "backoff_seconds": 0.2, "backoff_multiplier": 2}}],
        "edges": [],
    })
    run_id = commands.start_run("flaky", 1, {})
    history.wait_finished([run_id], timeout=30)
    events = history.by_run[run_id]
    retrying = [e for e in events if e.kind == "step_retrying"]
    assert [e.data["backoff_seconds"] for e in retrying] == [0.2, 0.4]
    assert [e.attempt for e in retrying] == [1, 2]
    assert "flaky failure on attempt 1" in retrying[0].data["error"]
    started = [e.ts for e in events if e.kind == "step_started"]
    assert started[1] - started[0] >= 0.2 and started[2] - started[1] >= 0.4
    assert history.finished()[run_id][0].kind == "run_succeeded"


def test_always_failing_step_fails_the_run_after_max_attempts(kafka, runner, history):
    publish({
        "slug": "doomed", "name": "Doomed", "trigger": {"type": "manual"},
        "steps": [{"id": "nope", "type": "python", "config": {"handler": "demo.fail", "input": {"message": "card declined"}},
                   "retry": {"max_attempts": 3, "backoff_seconds": 0.1}}],
        "edges": [],
    })
    run_id = commands.start_run("doomed", 1, {})
    history.wait_finished([run_id], timeout=30)
    finished = history.finished()[run_id][0]
    assert finished.kind == "run_failed"
    assert "card declined (attempt 3)" in finished.data["error"]
    assert [e.attempt for e in history.by_run[run_id] if e.kind == "step_started"] == [1, 2, 3]


def test_undecodable_record_goes_to_the_dead_letter_topic_and_the_loop_goes_on(kafka, runner, history):
    publish(three_steps())
    produce(kafka.runs, [b"\x00not json at all"], key=b"garbage")
    produce(kafka.runs, [json.dumps({"type": "start", "run_id": "x"}).encode()], key=b"x")  # missing fields
    run_id = commands.start_run("three", 1, {"n": 1})
    history.wait_finished([run_id], timeout=30)
    unknown = commands.start_run("no-such-workflow", 1, {})

    dlq = Consumer({"bootstrap.servers": kafka_bootstrap(), "group.id": "dlq-reader", "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed"})
    dlq.subscribe([kafka.dlq])
    letters, deadline = [], time.monotonic() + 30
    while len(letters) < 3 and time.monotonic() < deadline:
        letters += [m for m in dlq.consume(10, timeout=0.5) if not m.error()]
    dlq.close()
    assert [m.key() for m in letters] == [b"garbage", b"x", unknown.encode()]
    headers = [dict(m.headers()) for m in letters]
    assert b"undecodable" in headers[0]["sluice-error"]
    assert headers[0]["sluice-stage"] == b"engine" and headers[0]["sluice-source-topic"] == kafka.runs.encode()
    assert b"no-such-workflow@1 is not published" in headers[2]["sluice-error"]
    assert letters[0].value() == b"\x00not json at all"  # the record itself, untouched


def kafka_bootstrap():
    from django.conf import settings

    return settings.KAFKA_BOOTSTRAP_SERVERS


def test_kill_9_in_the_middle_of_200_runs_loses_and_repeats_nothing(kafka, history):
    publish({
        "slug": "crashy", "name": "Crash test", "trigger": {"type": "manual"},
        "steps": [
            {"id": "start", "type": "transform", "config": {"output": "{{ trigger }}"}},
            {"id": "flaky", "type": "python", "config": {"handler": "demo.flaky", "input": {"fail_times": 1}},
             "retry": {"max_attempts": 3, "backoff_seconds": 0.3}},
            {"id": "pause", "type": "delay", "config": {"seconds": 1}},
            {"id": "echo", "type": "python", "config": {"handler": "demo.echo", "input": "{{ trigger }}"}},
            {"id": "end", "type": "transform", "config": {"output": "{{ steps.echo.output }}"}},
        ],
        "edges": [{"from": "start", "to": "flaky"}, {"from": "flaky", "to": "pause"},
                  {"from": "pause", "to": "echo"}, {"from": "echo", "to": "end"}],
    })
    run_ids = [commands.new_run_id() for _ in range(200)]

    def start_steadily():  # 50 runs a second, so runs are at every stage when the kill comes
        for i, run_id in enumerate(run_ids):
            commands.start_run("crashy", 1, {"i": i}, run_id=run_id)
            time.sleep(0.02)

    first = runner_process("crash-test")
    try:
        history.wait_finished([commands.start_run("crashy", 1, {"warm": "up"})], timeout=60)
        starter = start_thread(start_steadily)
        history.wait_until(lambda log: len(log.finished()) >= 40, 120, "40 runs to finish before the kill")
        first.kill()
    finally:
        first.stop()
    starter.join()
    in_flight = len(set(run_ids) - set(history.finished()))
    assert in_flight > 0, "every run finished before the kill: the test proves nothing"
    second = runner_process("crash-test")
    try:
        history.wait_finished(run_ids, timeout=180)
    finally:
        second.stop()
    finished = {run_id: events for run_id, events in history.finished().items() if run_id in run_ids}
    assert all(len(events) == 1 and events[0].kind == "run_succeeded" for events in finished.values())
    assert {e.run_id: e.data["output"] for events in finished.values() for e in events} == {
        run_id: {"i": i} for i, run_id in enumerate(run_ids)}
    applied = Counter((e.run_id, e.step_id) for e in history.events
                      if e.kind == "step_succeeded" and e.run_id in run_ids)
    assert set(applied.values()) == {1}
    assert len(applied) == 200 * 5


def test_kafka_trigger_starts_one_run_per_matching_record_across_a_restart(kafka, history):
    publish({
        "slug": "big-orders", "name": "Big orders",
        "trigger": {"type": "kafka", "topic": user_topic(kafka, "orders"), "filter": "trigger.total > 100",
                    "start_from": "earliest"},
        "steps": [{"id": "note", "type": "transform", "config": {"output": {"order": "{{ trigger.id }}"}}}],
        "edges": [],
    })
    orders = [json.dumps({"id": i, "total": 150 if i % 2 else 50}).encode() for i in range(1000)]
    produce(user_topic(kafka, "orders"), orders[:500])
    first = runner_process("trigger-test")
    try:
        history.wait_until(lambda log: len(log.finished()) >= 100, 120, "the first runs")
        first.kill()  # mid-way, without warning
    finally:
        first.stop()
    produce(user_topic(kafka, "orders"), orders[500:])
    second = runner_process("trigger-test")
    try:
        history.wait_until(lambda log: len(log.finished()) >= 500, 180, "500 runs")
        time.sleep(3)  # anything extra would show up now
        history.poll()
    finally:
        second.stop()
    started = [e for e in history.events if e.kind == "run_started"]
    assert len(started) == 500
    assert sorted(e.data["input"]["id"] for e in started) == list(range(1, 1000, 2))
    first_record = started[0].data["trigger"]
    assert first_record["type"] == "kafka" and first_record["topic"] == user_topic(kafka, "orders")
    assert started[0].run_id == trigger_run_id("big-orders", first_record["topic"], first_record["partition"],
                                               first_record["offset"])


def test_wait_for_event_is_released_by_the_matching_record_only(kafka, runner, history):
    topic = user_topic(kafka, "payments")
    publish({
        "slug": "await-payment", "name": "Await payment", "trigger": {"type": "manual"},
        "steps": [
            {"id": "wait", "type": "wait_for_event",
             "config": {"topic": topic, "correlation": "{{ trigger.order }}", "key_expression": "event.order_id",
                        "timeout_seconds": 60}},
            {"id": "paid", "type": "transform", "config": {"output": "{{ steps.wait.output.value.amount }}"}},
        ],
        "edges": [{"from": "wait", "port": "event", "to": "paid"}],
    })
    produce(topic, [json.dumps({"order_id": 0, "amount": 0}).encode()])  # creates the topic
    run_id = commands.start_run("await-payment", 1, {"order": 42})
    history.wait_until(lambda log: any(e.kind == "step_waiting" for e in log.by_run[run_id]), 30, "the wait")
    produce(topic, [json.dumps({"order_id": 41, "amount": 1}).encode(), json.dumps({"order_id": 42, "amount": 99}).encode()])
    history.wait_finished([run_id], timeout=30)
    assert history.finished()[run_id][0].data["output"] == 99


def test_approval_is_decided_by_a_signal(kafka, runner, history):
    from orchestrator.messages import SignalRun

    publish({
        "slug": "approve-me", "name": "Approve me", "trigger": {"type": "manual"},
        "steps": [{"id": "manager", "type": "approval", "config": {"instructions": "Check {{ trigger.amount }}"}},
                  {"id": "yes", "type": "transform", "config": {"output": "approved"}},
                  {"id": "no", "type": "transform", "config": {"output": "rejected"}}],
        "edges": [{"from": "manager", "port": "approve", "to": "yes"}, {"from": "manager", "port": "reject", "to": "no"}],
    })
    run_id = commands.start_run("approve-me", 1, {"amount": 12})
    history.wait_until(lambda log: any(e.kind == "step_waiting" for e in log.by_run[run_id]), 30, "the approval")
    waiting = [e for e in history.by_run[run_id] if e.kind == "step_waiting"][0]
    assert waiting.data["instructions"] == "Check 12"
    commands.send_command(SignalRun(run_id=run_id, name="manager", payload={"approved": True}, by="boss", ts=time.time()))
    history.wait_finished([run_id], timeout=30)
    assert history.finished()[run_id][0].data["output"] == "approved"


def test_two_runners_share_the_partitions_and_each_run_finishes_once(kafka, history):
    publish(three_steps("shared"))
    first, second = runner_process("share-a"), runner_process("share-b")
    one_partition = re.compile(r"engine: assigned wf.runs partitions \[\d\]")
    try:
        # A generous wait: what this test checks is that each run finishes once, not how fast
        # a group rebalances on a loaded machine (it once took over 60 s in a full suite run).
        deadline = time.monotonic() + 120
        while not all(one_partition.search(p.log_path.read_text(errors="replace")) for p in (first, second)):
            if time.monotonic() > deadline:
                tails = "\n".join(f"---- {p.log_path.name} (last lines)\n"
                                   + "\n".join(p.log_path.read_text(errors="replace").splitlines()[-40:])
                                   for p in (first, second))
                raise AssertionError(f"the two runners did not split the partitions in 120 s:\n{tails}")
            time.sleep(0.2)
        run_ids = [commands.start_run("shared", 1, {"n": n}) for n in range(100)]
        history.wait_finished(run_ids, timeout=120)
    finally:
        logs = [first.stop(), second.stop()]
    finished = history.finished()
    assert all(len(finished[run_id]) == 1 for run_id in run_ids)
    assert [finished[run_id][0].data["output"] for run_id in run_ids] == [{"result": (n + 1) * 10} for n in range(100)]
    # Each runner held one of the two partitions before the first run started, and 100
    # random run ids land on both: both engines did part of the work.
    assert all("Traceback" not in log for log in logs), logs
