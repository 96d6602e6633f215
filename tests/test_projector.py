"""The history projector against the real embedded broker: rows, idempotency, replays, DLQ, heartbeats."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import msgspec
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from django.conf import settings as django_settings

from monitor import dead_letters
from monitor.models import DeadLetter, HistoryEntry, Run, RunnerProcess, StepRun
from monitor.projector import Projector
from orchestrator import messages
from orchestrator.runtime import codec
from orchestrator.runtime.kafka import producer_config
from orchestrator.runtime.topics import Topics
from tests.runtime_support import database_url, produce_history_in_transaction

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]

T0 = 1_790_000_000.0


def history_of_run(run_id: str, workflow: str, shape: str) -> list[messages.HistoryEvent]:
    """A realistic history for one run; shape: 'ok', 'retry_then_fail' or 'cancelled'."""
    events: list[tuple[str, str, str, int, dict]] = [
        ("run_started", "", "", 0, {"input": {"n": 1, "who": run_id[:4]}, "trigger": {"type": "manual"},
                                    "started_by": "alice", "created_at": T0}),
        ("step_started", "check", "transform", 1, {"input": {"n": 1}, "attempt": 1}),
        ("step_succeeded", "check", "transform", 1, {"output": {"ok": True}, "port": "",
                                                     "started_at": T0 + 1, "ended_at": T0 + 1.5}),
    ]
    if shape == "ok":
        events += [
            ("step_started", "ship", "python", 1, {"input": {"ok": True}, "attempt": 1}),
            ("step_succeeded", "ship", "python", 1, {"output": {"shipped": 1}, "port": "",
                                                     "started_at": T0 + 2, "ended_at": T0 + 3}),
            ("run_succeeded", "", "", 0, {"output": {"shipped": 1}}),
        ]
    elif shape == "retry_then_fail":
        events += [
            ("step_started", "charge", "http", 1, {"input": {"id": 7}, "attempt": 1}),
            ("step_retrying", "charge", "http", 1, {"error": "HTTP 503", "backoff_seconds": 2.0,
                                                    "next_attempt_at": T0 + 5}),
            ("step_started", "charge", "http", 2, {"input": {"id": 7}, "attempt": 2}),
            ("step_failed", "charge", "http", 2, {"error": "Traceback...\nHTTP 500", "started_at": T0 + 5,
                                                  "ended_at": T0 + 6}),
            ("step_skipped", "ship", "python", 0, {}),
            ("run_failed", "", "", 0, {"error": "step charge failed: HTTP 500"}),
        ]
    elif shape == "cancelled":
        events += [
            ("step_started", "approve", "approval", 1, {"input": None, "attempt": 1}),
            ("step_waiting", "approve", "approval", 1, {"reason": "signal", "until": None}),
            ("signal_received", "approve", "approval", 1, {"name": "nope", "payload": 1, "by": "bob"}),
            ("step_cancelled", "approve", "approval", 1, {}),
            ("run_cancelled", "", "", 0, {"reason": "not needed", "by": "bob"}),
        ]
    return [
        messages.HistoryEvent(run_id=run_id, seq=seq, kind=kind, ts=T0 + seq, workflow=workflow, version=3,
                              step_id=step_id, step_type=step_type, attempt=attempt, data=data)
        for seq, (kind, step_id, step_type, attempt, data) in enumerate(events, start=1)
    ]


def produce(topic: str, records: list[tuple[str, bytes, list | None]]) -> None:
    producer = Producer(producer_config())
    for key, value, headers in records:
        producer.produce(topic, key=key.encode() if key else None, value=value, headers=headers)
    assert producer.flush(10) == 0


def produce_history(topic: str, events: list[messages.HistoryEvent]) -> None:
    produce(topic, [(event.run_id, codec.encode(event), codec.headers_for(event)) for event in events])


def interleave(*histories):
    """Round-robin the runs' events: runs mixed together, each run still in its own order."""
    out, queues = [], [list(history) for history in histories]
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


def snapshot() -> dict:
    """Every projected row as plain values (no surrogate ids), to compare two projections."""
    return {
        "runs": list(Run.objects.order_by("id").values(
            "id", "workflow", "version", "status", "input", "output", "error", "trigger", "started_by",
            "created_at", "started_at", "ended_at", "last_seq")),
        "steps": list(StepRun.objects.order_by("run_id", "step_id").values(
            "run_id", "step_id", "type", "status", "attempts", "input", "output", "error", "port",
            "started_at", "ended_at")),
        "history": list(HistoryEntry.objects.order_by("run_id", "seq").values("run_id", "seq", "kind", "step_id",
                                                                               "ts", "data")),
    }


def project(group: str | None = None):
    projector = Projector(group_id=group or f"test-projector-{uuid.uuid4().hex[:6]}")
    try:
        return projector.run_until_idle(idle_seconds=1.0, timeout=30)
    finally:
        projector.close()


def test_projects_runs_steps_and_history(kafka):
    ok, failing, cancelled = (uuid.uuid4().hex for _ in range(3))
    events = interleave(history_of_run(ok, "orders", "ok"), history_of_run(failing, "orders", "retry_then_fail"),
                        history_of_run(cancelled, "approvals", "cancelled"))
    produce_history(kafka.history, events)

    stats = project()

    assert stats.applied == len(events) and stats.skipped == 0 and stats.undecodable == 0
    run = Run.objects.get(id=ok)
    assert (run.status, run.workflow, run.version, run.output) == ("succeeded", "orders", 3, {"shipped": 1})
    assert run.input == {"n": 1, "who": ok[:4]} and run.started_by == "alice" and run.last_seq == 6
    assert run.created_at.timestamp() == T0 and run.ended_at.timestamp() == T0 + 6
    assert list(run.steps.order_by("step_id").values_list("step_id", "status")) == [
        ("check", "succeeded"), ("ship", "succeeded")]

    failed = Run.objects.get(id=failing)
    assert failed.status == "failed" and failed.error == "step charge failed: HTTP 500"
    charge = failed.steps.get(step_id="charge")
    assert charge.status == "failed" and charge.type == "http" and "HTTP 500" in charge.error
    assert [(a["attempt"], a["error"], a["backoff_seconds"]) for a in charge.attempts] == [
        (1, "HTTP 503", 2.0), (2, "Traceback...\nHTTP 500", None)]
    assert failed.steps.get(step_id="ship").status == "skipped"

    stopped = Run.objects.get(id=cancelled)
    assert stopped.status == "cancelled" and "bob" in stopped.error and "not needed" in stopped.error
    assert stopped.steps.get(step_id="approve").status == "cancelled"
    assert list(stopped.history.values_list("seq", flat=True)) == list(range(1, 9))
    assert stopped.history.get(kind="signal_received").data["name"] == "nope"


def test_replay_into_fresh_group_leaves_identical_rows(kafka):
    runs = [uuid.uuid4().hex for _ in range(4)]
    shapes = ["ok", "retry_then_fail", "cancelled", "ok"]
    produce_history(kafka.history, interleave(*(history_of_run(r, "wf", s) for r, s in zip(runs, shapes))))
    project()
    first = snapshot()
    assert len(first["runs"]) == 4 and len(first["history"]) > 20

    # Same database, fresh group from the start: every event is a duplicate, nothing changes.
    again = project()
    assert again.applied == 0 and again.skipped == len(first["history"])
    assert snapshot() == first

    # Empty database, fresh group: the rows are rebuilt exactly.
    Run.objects.all().delete()
    assert snapshot()["runs"] == []
    rebuilt = project()
    assert rebuilt.applied == len(first["history"])
    assert snapshot() == first


def test_duplicates_and_stale_redeliveries_change_nothing(kafka):
    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    clean_a, clean_b = history_of_run(a, "wf", "retry_then_fail"), history_of_run(b, "wf", "ok")
    # Runs interleaved, every event of run a twice, and an old event of b redelivered at the end.
    noisy = []
    for event in interleave(clean_a, clean_b):
        noisy.append(event)
        if event.run_id == a:
            noisy.append(event)
    noisy.append(clean_b[1])
    produce_history(kafka.history, noisy)

    stats = project()

    assert stats.applied == len(clean_a) + len(clean_b)
    assert stats.skipped == len(clean_a) + 1
    assert Run.objects.get(id=a).status == "failed" and Run.objects.get(id=b).status == "succeeded"
    # The stale step_started of b must not have moved its finished step back to running.
    assert StepRun.objects.get(run_id=b, step_id="check").status == "succeeded"
    assert HistoryEntry.objects.filter(run_id=a).count() == len(clean_a)


def test_undecodable_history_is_counted_and_skipped(kafka):
    good = history_of_run(uuid.uuid4().hex, "wf", "ok")
    produce(kafka.history, [("x", b"not json at all", None), ("y", b'{"run_id": 5}', None)])
    produce_history(kafka.history, good)

    stats = project()

    assert stats.undecodable == 2
    assert stats.applied == len(good)
    assert Run.objects.get().status == "succeeded"


def test_dead_letters_and_heartbeats(kafka):
    headers = [(messages.DLQ_ERROR, b"unknown workflow version orders@9"), (messages.DLQ_STAGE, b"engine"),
               (messages.DLQ_SOURCE_TOPIC, kafka.runs.encode()), (messages.DLQ_SOURCE_PARTITION, b"1"),
               (messages.DLQ_SOURCE_OFFSET, b"42"), (messages.DLQ_FAILED_AT, str(T0).encode())]
    produce(kafka.dlq, [("run-1", b'{"run_id": "run-1"}', headers), ("run-2", b"\xff\xfe", headers)])
    beat = messages.RunnerHeartbeat(instance="runner-a", host="box", pid=77, roles=["engine"], started_at=T0,
                                    ts=T0 + 10, stats={"records": 5})
    newer = messages.RunnerHeartbeat(instance="runner-a", host="box", pid=77, roles=["engine"], started_at=T0,
                                     ts=T0 + 20, stats={"records": 9})
    produce(kafka.heartbeats, [("runner-a", codec.encode(beat), None), ("runner-a", codec.encode(newer), None)])

    stats = project()
    project()  # a second group replays both topics: still one row per record

    assert stats.dead_letters == 2 and stats.heartbeats == 2
    letters = list(DeadLetter.objects.order_by("offset"))
    assert len(letters) == 2
    assert letters[0].error == "unknown workflow version orders@9" and letters[0].stage == "engine"
    assert (letters[0].source_topic, letters[0].source_partition, letters[0].source_offset) == (kafka.runs, 1, 42)
    assert letters[0].value == '{"run_id": "run-1"}' and letters[0].failed_at.timestamp() == T0
    assert letters[1].value.startswith("base64:")
    runner = RunnerProcess.objects.get()
    assert runner.last_heartbeat.timestamp() == T0 + 20 and runner.stats == {"records": 9}


def test_records_the_database_refuses_are_set_aside_and_the_rest_projected(kafka):
    # Valid records the monitor's tables cannot take: a negative seq fails the column's check on
    # either database. Before, the batch failed again every two seconds and the monitor stopped.
    good = [history_of_run(uuid.uuid4().hex, "wf", "ok") for _ in range(3)]
    refused = messages.HistoryEvent(run_id="refused-run", seq=-1, kind="run_started", ts=T0, workflow="wf",
                                    version=1, data={"input": {}})
    events = interleave(*good)
    produce_history(kafka.history, events[:7] + [refused] + events[7:])

    stats = project()

    assert stats.set_aside == 1 and stats.applied == len(events)
    assert sorted(Run.objects.values_list("status", flat=True)) == ["succeeded"] * 3
    letter = DeadLetter.objects.get()
    assert (letter.stage, letter.source_topic, letter.key) == ("projector", kafka.history, "refused-run")
    assert "database refused it" in letter.error and codec.decode_history(letter.value.encode()).seq == -1
    assert (letter.source_partition, letter.source_offset) == (letter.partition, letter.offset)
    # A replay from the start sets the same record aside once, and changes nothing else.
    again = project()
    assert again.set_aside == 1 and again.applied == 0 and DeadLetter.objects.count() == 1


def test_a_time_no_datetime_holds_is_set_aside_not_a_crash(kafka):
    # A `ts` in milliseconds: valid JSON and a valid float, but "year 33658 is out of range" when
    # folded. It stopped the bridge (a ValueError, not a DatabaseError) on every restart.
    good = history_of_run(uuid.uuid4().hex, "wf", "ok")
    late = messages.HistoryEvent(run_id="ms-run", seq=1, kind="run_started", ts=T0 * 1000, workflow="wf",
                                 version=1, data={"input": {}})
    produce_history(kafka.history, [late, *good])

    stats = project()

    assert stats.set_aside == 1 and stats.applied == len(good)
    assert Run.objects.get().status == "succeeded"
    assert "out of range" in DeadLetter.objects.get(stage="projector", key="ms-run").error


def test_nul_characters_in_records_are_stored(kafka):
    # PostgreSQL's text and jsonb cannot hold NUL: the monitor's tables show U+FFFD (on every
    # database). A dead letter's key or value with NUL is kept exactly, as base64 (replayable).
    run_id = uuid.uuid4().hex
    events = history_of_run(run_id, "wf", "ok")
    events[0].data["input"] = {"note": "a\x00b", "k\x00": ["\x00"]}
    events[-2].data["port"] = "x\x00\\u0000"  # a NUL, then a backslash and "u0000", which stays
    produce_history(kafka.history, events)
    produce(kafka.dlq, [("key\x00", b"value\x00", [(messages.DLQ_STAGE, b"engine\x00"), ("name", b"v\x00")])])

    stats = project()

    assert stats.applied == len(events) and stats.set_aside == 0 and stats.dead_letters == 1
    nul = "\ufffd"
    assert Run.objects.get(id=run_id).input == {"note": f"a{nul}b", f"k{nul}": [nul]}
    assert HistoryEntry.objects.get(run_id=run_id, seq=1).data["input"]["note"] == f"a{nul}b"
    assert StepRun.objects.get(run_id=run_id, step_id="ship").port == f"x{nul}\\u0000"
    letter = DeadLetter.objects.get()
    assert dead_letters.raw_bytes(letter.key) == b"key\x00" and dead_letters.raw_bytes(letter.value) == b"value\x00"
    assert letter.headers == {messages.DLQ_STAGE: letter.stage, "name": letter.headers["name"]}
    assert dead_letters.raw_bytes(letter.headers["name"]) == b"v\x00"
    assert dead_letters.raw_bytes(letter.stage) == b"engine\x00"


def test_a_projector_started_before_its_topics_exist_reads_them(kafka, settings):
    # A prefix whose topics nobody created: the bridge started before the first runner.
    settings.SLUICE_TOPIC_PREFIX = f"fresh{uuid.uuid4().hex[:6]}."
    fresh = Topics(settings.SLUICE_TOPIC_PREFIX)
    projector = Projector(topics=fresh, group_id=f"test-projector-{uuid.uuid4().hex[:6]}")
    try:
        # It created them before subscribing: a consumer subscribed to a missing topic may not
        # hear of it for minutes (seen: a bridge started 0.1 s before the runner created them
        # projected nothing for the 45 s it was watched).
        admin = AdminClient({"bootstrap.servers": django_settings.KAFKA_BOOTSTRAP_SERVERS})
        assert {fresh.history, fresh.dlq, fresh.heartbeats} <= set(admin.list_topics(timeout=10).topics)
        beat = messages.RunnerHeartbeat(instance="runner-late", host="box", pid=7, roles=["engine"], started_at=T0,
                                        ts=T0 + 1, stats={})
        produce(fresh.heartbeats, [("runner-late", codec.encode(beat), None)])
        stats = projector.run_until_idle(idle_seconds=3.0, timeout=30)
    finally:
        projector.close()
    assert stats.heartbeats == 1
    assert RunnerProcess.objects.get().instance == "runner-late"


def test_bridge_command_projects_and_stops_on_sigterm(kafka):
    events = history_of_run(uuid.uuid4().hex, "wf", "ok")
    produce_history(kafka.history, events)
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "KAFKA_BOOTSTRAP_SERVERS": django_settings.KAFKA_BOOTSTRAP_SERVERS,
        "SLUICE_EMBEDDED_BROKER": "1",
        "SLUICE_TOPIC_PREFIX": django_settings.SLUICE_TOPIC_PREFIX,
    }
    bridge = subprocess.Popen([sys.executable, "manage.py", "bridge", "--group", f"g-{uuid.uuid4().hex[:6]}"],
                              cwd=django_settings.BASE_DIR, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not Run.objects.filter(status="succeeded").exists():
            time.sleep(0.2)
        assert Run.objects.get().last_seq == len(events)
    finally:
        bridge.send_signal(signal.SIGTERM)
        out, err = bridge.communicate(timeout=20)
    assert bridge.returncode == 0, err
    assert f"{len(events)} events applied" in out


def test_a_failed_batch_is_rewound_and_applied_on_retry(kafka, monkeypatch):
    """A database error must not skip history: the batch is read again and applied."""
    import monitor.projector as projector_module

    run_id = uuid.uuid4().hex
    events = history_of_run(run_id, "wf", "ok")
    # run_started without input (StartRun.input defaults to None) must still make a row.
    events[0] = msgspec.structs.replace(events[0], data={"trigger": {"type": "manual"}})
    produce_history(kafka.history, events)
    real_apply, calls = projector_module.apply_history, []

    def flaky_apply(batch, stats=None):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return real_apply(batch, stats)

    monkeypatch.setattr(projector_module, "apply_history", flaky_apply)
    projector = Projector(group_id=f"g-{uuid.uuid4().hex[:6]}")
    try:
        with pytest.raises(RuntimeError):
            while True:
                projector.poll_once(timeout=0.5)
        projector.run_until_idle(idle_seconds=1.0)
    finally:
        projector.close()
    assert len(calls) >= 2 and sum(calls[1:]) == len(events)
    run = Run.objects.get(id=run_id)
    assert run.status == "succeeded" and run.input == {} and run.last_seq == len(events)



def poll_until(projector: Projector, done, what: str, limit: int = 300) -> None:
    """Drive the loop by hand (as run_forever does) until `done()`; fails after `limit` polls."""
    for _ in range(limit):
        if done():
            return
        projector.poll_once(timeout=0.1)
    raise AssertionError(f"the projector never got to: {what}")


def test_projector_pauses_when_idle_and_resumes_on_the_next_event(kafka):
    """The embedded broker ignores the fetch long-poll: an idle projector pauses its partitions
    (instead of refetching in a tight loop) and still applies the next event that comes."""
    run_id = uuid.uuid4().hex
    events = history_of_run(run_id, "wf", "ok")
    produce_history_in_transaction(kafka.history, events[:3])
    projector = Projector(group_id=kafka.group(f"idle-{uuid.uuid4().hex[:6]}"))
    try:
        poll_until(projector, lambda: projector.stats.applied == 3, "the first three events")
        # Quiet now: the transaction's commit marker is read past and the assignment paused.
        poll_until(projector, lambda: projector.backoff.paused, "a paused assignment")
        assert set(projector.backoff.paused) == set(projector.consumer.assignment())
        produce_history_in_transaction(kafka.history, events[3:])
        poll_until(projector, lambda: projector.stats.applied == len(events), "the events after the pause")
        assert Run.objects.get(id=run_id).last_seq == len(events)
        poll_until(projector, lambda: projector.backoff.paused, "a paused assignment again")
    finally:
        projector.close()


def test_the_projectors_fetcher_rests_as_long_as_a_batch_lingers(kafka, settings):
    """How the rest itself behaves is tests/test_consumer_prefetch.py's; here, that the bridge
    has it, as long as its linger, and that an operator's setting still wins."""
    settings.KAFKA_CLIENT_CONFIG = {}
    projectors = [Projector(group_id=kafka.group(f"rest-{uuid.uuid4().hex[:6]}"), linger=linger)
                  for linger in (0.05, 0)]
    try:
        lingering, eager = (projector.consumer_settings() for projector in projectors)
        assert (lingering["queued.min.messages"], lingering["fetch.queue.backoff.ms"]) == (1, 50)
        assert eager["queued.min.messages"] == settings.SLUICE_CONSUMER_PREFETCH
        settings.KAFKA_CLIENT_CONFIG = {"fetch.queue.backoff.ms": "5"}
        assert projectors[0].consumer_settings()["fetch.queue.backoff.ms"] == "5"
    finally:
        for projector in projectors:
            projector.close()


def test_projector_group_carries_the_topic_prefix_and_adopts_the_old_groups_offsets(kafka):
    from confluent_kafka import Consumer, TopicPartition

    from monitor.projector import LEGACY_GROUP_ID, adopt_offsets
    from orchestrator.runtime.kafka import consumer_config

    before, after = uuid.uuid4().hex, uuid.uuid4().hex
    produce_history(kafka.history, history_of_run(before, "wf", "ok"))
    # A projector of an earlier release (group without the prefix) folded those in and committed.
    legacy = Consumer(consumer_config(LEGACY_GROUP_ID))
    ends = [TopicPartition(kafka.history, p, legacy.get_watermark_offsets(TopicPartition(kafka.history, p))[1])
            for p in range(django_settings.SLUICE_PARTITIONS)]
    legacy.commit(offsets=ends, asynchronous=False)
    legacy.close()
    produce_history(kafka.history, history_of_run(after, "wf", "ok"))

    projector = Projector()
    try:
        assert projector.group_id == f"{kafka.prefix}projector"
        projector.run_until_idle(idle_seconds=1.0, timeout=30)
    finally:
        projector.close()
    assert Run.objects.filter(id=after, status="succeeded").exists()
    assert not Run.objects.filter(id=before).exists()  # not folded in a second time
    # Once the new group has offsets of its own, the old group's are never taken again.
    assert adopt_offsets(LEGACY_GROUP_ID, projector.group_id, kafka) == 0
