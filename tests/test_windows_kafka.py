"""Windowed Kafka triggers against the real broker: one run per closed window with the right
aggregates and emitted records, exactly once across a kill -9; hopping and session windows;
windows that close with no later record; late records counted."""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter, defaultdict

import pytest
from confluent_kafka import Producer
from django.conf import settings

from orchestrator import windows as W
from tests.runtime_support import create_topic, publish, read_topic, runner_process, user_topic
from tests.test_runtime_safety import running

pytestmark = pytest.mark.kafka


def produce_at(topic: str, records: list[tuple[int, dict]], key: bytes | None = None) -> None:
    """Records with chosen timestamps (ms)."""
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS, "linger.ms": 5})
    for ts, value in records:
        producer.produce(topic, value=json.dumps(value).encode(), key=key, timestamp=ts)
    assert producer.flush(30) == 0


def wait_following(runner, *slugs: str, timeout: float = 60.0) -> None:
    """Until the runner's trigger of each workflow holds its (existing) topic's partitions: a
    record read after its window closed on the wall clock is late by design, so a window test's
    records go in only once their trigger reads."""
    triggers = next(loop for loop in runner.loops if loop.stage == "triggers")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        consumers = [triggers.running[slug][0].consumer if slug in triggers.running else None for slug in slugs]
        if all(consumer is not None and consumer.assignment() for consumer in consumers):
            return
        time.sleep(0.1)
    raise AssertionError(f"the triggers of {slugs} hold no partitions after {timeout}s:")


def windowed(slug: str, topic: str, window: dict, filter: str | None = None) -> dict:
    trigger = {"type": "kafka", "topic": topic, "window": window}
    if filter:
        trigger["filter"] = filter
    return {"slug": slug, "name": slug, "trigger": trigger, "edges": [],
            "steps": [{"id": "keep", "type": "transform", "config": {"output": "{{ trigger }}"}}]}


def window_runs(history, slug: str) -> list[dict]:
    return [e.data["input"] for e in history.events if e.kind == "run_started" and e.workflow == slug]


def test_a_tumbling_count_and_sum_over_1000_records_across_a_kill_9(kafka, history):
    topic, emitted = user_topic(kafka, "clicks"), user_topic(kafka, "buy-stats")
    publish(windowed("buys", topic, {
        "type": "tumbling", "size_seconds": 10, "grace_seconds": 30, "key": "{{ trigger.user }}",
        "aggregates": {"buys": {"op": "count"}, "spent": {"op": "sum", "of": "trigger.amount"}},
        "emit_topic": emitted}, filter="trigger.kind == 'buy'"))
    # Two windows, [end-20s, end-10s) and [end-10s, end), both still open (grace) until every record
    # is in, also the half produced after the restart.
    end = math.ceil((time.time() + 1) / 10) * 10 * 1000
    rng = random.Random(7)
    records = [(end - 20_000 + rng.randrange(20_000), {"user": rng.choice(["ada", "bob", "cy"]), "amount": i % 7,
                                                       "kind": "buy" if i % 5 else "view"}) for i in range(1000)]
    expected = defaultdict(Counter)
    for ts, value in records:
        if value["kind"] == "buy":
            start = ts - ts % 10_000
            expected[(value["user"], W.iso(start))]["buys"] += 1
            expected[(value["user"], W.iso(start))]["spent"] += value["amount"]

    runner = runner_process("windows-kill")
    try:
        history.wait_until(lambda _: b"following" in runner.log_path.read_bytes(), 60, "the trigger to follow")
        produce_at(topic, records[:500])
        history.wait_until(lambda _: len(read_topic(kafka.windows_in)) >= 200, 60, "records in the windows")
        runner.kill()
    finally:
        runner.stop()
    produce_at(topic, records[500:])
    runner = runner_process("windows-kill")
    try:
        history.wait_until(lambda log: len(window_runs(log, "buys")) >= len(expected), 90, "a run per window and key")
        time.sleep(2)
        history.poll()
    finally:
        runner.stop()
    got = {(run["key"], run["window_start"]): {"buys": run["buys"], "spent": run["spent"]}
           for run in window_runs(history, "buys")}
    assert len(window_runs(history, "buys")) == len(expected) == 6
    starts = [e for e in history.events if e.kind == "run_started" and e.workflow == "buys"]
    assert [e.data["trigger"]["late_records"] for e in starts] == [0] * 6  # nothing arrived after its window closed
    assert got == {key: dict(counts) for key, counts in expected.items()}
    assert all(run["window_end"] == W.iso(W.WindowSpec.from_config({"type": "tumbling", "size_seconds": 10}).size_ms
                                           + int(_ms(run["window_start"]))) for run in window_runs(history, "buys"))
    out = [(m.key().decode(), json.loads(m.value())) for m in read_topic(emitted)]
    assert sorted((key, value["window_start"], value["buys"], value["spent"]) for key, value in out) == sorted(
        (user, start, counts["buys"], counts["spent"]) for (user, start), counts in expected.items())


def _ms(iso: str) -> int:
    from datetime import datetime
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_hopping_and_session_windows_close_without_a_later_record_and_late_records_are_counted(kafka, history):
    hops, sessions = user_topic(kafka, "hops"), user_topic(kafka, "sessions")
    create_topic(hops)
    create_topic(sessions, partitions=1)  # the session's records (no key) read in the order produced, for `collect`
    publish(windowed("hops", hops, {"type": "hopping", "size_seconds": 4, "advance_seconds": 2, "grace_seconds": 1,
                                    "aggregates": {"n": {"op": "count"}}}))
    publish(windowed("visits", sessions, {"type": "session", "gap_seconds": 1, "grace_seconds": 0.5,
                                          "key": "{{ trigger.user }}",
                                          "aggregates": {"n": {"op": "count"}, "pages": {"op": "collect", "of": "trigger.page"}}}))
    with running() as runner:
        wait_following(runner, "hops", "visits")
        now = int(time.time() * 1000)
        base = math.ceil((now + 1000) / 2000) * 2000
        produce_at(hops, [(base + 500, {}), (base + 2_500, {})], key=b"k")
        produce_at(hops, [(now - 3_600_000, {})], key=b"k")  # an hour late
        produce_at(sessions, [(now, {"user": "ada", "page": "a"}), (now + 300, {"user": "ada", "page": "b"}),
                              (now + 600, {"user": "ada", "page": "c"}), (now + 4_000, {"user": "ada", "page": "d"})])
        history.wait_until(lambda log: len(window_runs(log, "hops")) >= 3 and len(window_runs(log, "visits")) >= 2,
                           60, "the windows to close")
        time.sleep(1)
        history.poll()
        late = runner.stats().get("windows.late:hops")
    assert sorted((_ms(r["window_start"]) - base, r["n"]) for r in window_runs(history, "hops")) == [
        (-2000, 1), (0, 2), (2000, 1)]
    assert sorted((r["n"], r["pages"]) for r in window_runs(history, "visits")) == [(1, ["d"]), (3, ["a", "b", "c"])]
    assert late == 1
