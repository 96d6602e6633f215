"""Where a Kafka trigger starts reading: every record produced after publishing starts its run,
also on a topic created after publishing and across a runner killed half-way; `earliest` and
`latest` do what Kafka users expect."""

from __future__ import annotations

import json
import time

import pytest

from tests.runtime_support import create_topic, produce, publish, runner_process, user_topic
from tests.test_runtime_safety import running

pytestmark = pytest.mark.kafka


def watcher(slug: str, topic: str, start_from: str | None = None, filter: str | None = "trigger.ok") -> dict:
    trigger = {"type": "kafka", "topic": topic}
    if filter:
        trigger["filter"] = filter
    if start_from:
        trigger["start_from"] = start_from
    return {"slug": slug, "name": slug, "trigger": trigger, "edges": [],
            "steps": [{"id": "note", "type": "transform", "config": {"output": {"i": "{{ trigger.i }}"}}}]}



def records(first: int, count: int) -> list[bytes]:
    """`count` records numbered from `first`; every other one matches the filter."""
    return [json.dumps({"i": i, "ok": i % 2 == 0}).encode() for i in range(first, first + count)]


def produce_keyed(topic: str, values: list[bytes]) -> None:
    for value in values:
        produce(topic, [value], key=str(json.loads(value)["i"]).encode())


def started_inputs(history, slug: str) -> list[int]:
    return sorted(e.data["input"]["i"] for e in history.events if e.kind == "run_started" and e.workflow == slug)


def settle(history, slug: str, expected: int, timeout: float = 90.0) -> list[int]:
    history.wait_until(lambda log: len(started_inputs(log, slug)) >= expected, timeout, f"{expected} runs of {slug}")
    time.sleep(3)  # anything extra would show up now
    history.poll()
    return started_inputs(history, slug)


def test_a_topic_created_after_publishing_starts_one_run_per_matching_record(kafka, history):
    topic = user_topic(kafka, "later")
    with running():
        publish(watcher("later", topic))
        time.sleep(1.5)  # the runner has read the definition and follows a topic that is not there
        create_topic(topic)
        produce_keyed(topic, records(0, 200))
        assert settle(history, "later", 100) == list(range(0, 200, 2))


def test_a_runner_killed_half_way_through_a_new_topic_still_starts_exactly_one_run_per_record(kafka, history):
    topic = user_topic(kafka, "killed")
    publish(watcher("killed", topic))
    runner = runner_process("start-kill")
    try:
        history.wait_until(lambda _: b"following" in runner.log_path.read_bytes(), 60, "the trigger to follow")
        create_topic(topic)
        produce_keyed(topic, records(0, 200))
        history.wait_until(lambda log: len(started_inputs(log, "killed")) >= 30, 60, "the first runs")
        runner.kill()
    finally:
        runner.stop()
    runner = runner_process("start-kill")
    try:
        assert settle(history, "killed", 100) == list(range(0, 200, 2))
    finally:
        runner.stop()


def test_start_from_published_earliest_and_latest(kafka, history):
    topic = user_topic(kafka, "orders")
    create_topic(topic, partitions=2)
    produce_keyed(topic, records(0, 20))  # before anything is published
    time.sleep(0.05)  # record times are milliseconds: keep "before" strictly before
    publish(watcher("published", topic, filter=None))
    publish(watcher("earliest", topic, "earliest", filter=None))
    publish(watcher("latest", topic, "latest", filter=None))
    with running() as runner:
        wait_until_assigned(runner, {"published", "earliest", "latest"})
        produce_keyed(topic, records(20, 10))
        assert settle(history, "earliest", 30) == list(range(30))
        assert settle(history, "published", 10) == list(range(20, 30))
        assert settle(history, "latest", 10) == list(range(20, 30))


def wait_until_assigned(runner, slugs: set[str], timeout: float = 30.0) -> None:
    """Each workflow's trigger holds its partitions (so "latest" has taken its position)."""
    supervisor = next(loop for loop in runner.loops if loop.stage == "triggers")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = {slug: trigger for slug, (trigger, _stop, _thread) in list(supervisor.running.items())}
        if slugs <= set(running) and all(running[s].consumer and running[s].consumer.assignment() for s in slugs):
            time.sleep(0.5)
            return
        time.sleep(0.1)
    raise AssertionError(f"the triggers of {sorted(slugs)} were not assigned in {timeout}s")
