"""Pausing and resuming a workflow's trigger from the API (and the doors that start runs from
the web side: schedules and webhooks), and the trigger's backlog as the broker tells it.

Real broker: pause writes the TriggerControl record runners follow (tests/test_trigger_control.py
shows a runner obeying it); the lag is read from a real consumer group's committed offsets.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from django.test import Client
from django.utils import timezone

from designer import services
from designer.models import Workflow
from monitor import trigger_status
from monitor.models import AuditEntry, RunnerProcess
from triggers import tasks, webhooks
from orchestrator.messages import TriggerControl
from orchestrator.runtime import codec
from tests.test_api_workflows import make_client
from tests.trigger_support import make_live, read_starts

pytestmark = [pytest.mark.django_db, pytest.mark.kafka]


def control_records(kafka_broker, topic: str, slug: str, expected: int, timeout: float = 10.0) -> list:
    """The TriggerControl records of `slug` on the definitions topic, oldest first."""
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    found = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(found) < expected:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() or msg.key() != f"{slug}#trigger".encode():
                continue
            record = codec.decode_definition(msg.value())
            assert isinstance(record, TriggerControl)
            found.append(record)
    finally:
        consumer.close()
    return found


def test_pause_and_resume_answer_the_new_state_write_the_control_record_and_audit(kafka, kafka_broker):
    make_live("orders-in", {"type": "kafka", "topic": "orders"})
    client, _ = make_client("ops", "monitor.view_run", "monitor.operate_run")

    paused = client.post("/api/workflows/orders-in/trigger/pause/", {}, format="json")
    assert paused.status_code == 200, paused.content
    body = paused.json()
    assert (body["workflow"], body["type"], body["paused"], body["paused_by"]) == ("orders-in", "kafka", True, "ops")
    assert body["paused_at"]
    workflow = Workflow.objects.get(slug="orders-in")
    assert workflow.trigger_paused and workflow.trigger_paused_by == "ops"
    assert client.get("/api/workflows/orders-in/").json()["trigger_paused"] is True

    resumed = client.post("/api/workflows/orders-in/trigger/resume", {}, format="json")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    assert not Workflow.objects.get(slug="orders-in").trigger_paused

    records = control_records(kafka_broker, kafka.definitions, "orders-in", 2)
    assert [(r.slug, r.paused, r.by) for r in records] == [("orders-in", True, "ops"), ("orders-in", False, "ops")]
    assert list(AuditEntry.objects.filter(target_id="orders-in").order_by("at", "id")
                .values_list("action", "username")) == [("pause_trigger", "ops"), ("resume_trigger", "ops")]


def test_pausing_needs_the_operate_right_and_takes_no_body(kafka):
    make_live("orders-in", {"type": "kafka", "topic": "orders"})
    viewer, _ = make_client("viewer", "designer.view_workflow", "monitor.view_run")
    refused = viewer.post("/api/workflows/orders-in/trigger/pause/", {}, format="json")
    assert refused.status_code == 403 and "pause or resume the trigger of 'orders-in'" in refused.json()["detail"]
    assert not Workflow.objects.get(slug="orders-in").trigger_paused
    stranger, _ = make_client("stranger")
    assert stranger.post("/api/workflows/orders-in/trigger/pause/", {}, format="json").status_code == 404
    ops, _ = make_client("ops", "monitor.view_run", "monitor.operate_run")
    odd = ops.post("/api/workflows/orders-in/trigger/pause/", {"minutes": 5}, format="json")
    assert odd.status_code == 400 and odd.json()["errors"][0]["path"] == "minutes"
    assert Client().post("/api/workflows/orders-in/trigger/pause/").status_code in (401, 403)


def test_an_archived_workflow_cannot_be_paused(kafka):
    workflow = make_live("old", {"type": "webhook"})
    Workflow.objects.filter(pk=workflow.pk).update(archived=True)
    ops, _ = make_client("ops", "monitor.view_run", "monitor.operate_run")
    answer = ops.post("/api/workflows/old/trigger/pause/", {}, format="json")
    assert answer.status_code == 409 and answer.json()["code"] == "archived"


def test_kafka_down_changes_nothing(kafka, settings):
    make_live("orders-in", {"type": "kafka", "topic": "orders"})
    from orchestrator.runtime import commands

    settings.KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:9"  # nothing listens there
    settings.KAFKA_CLIENT_CONFIG = {"message.timeout.ms": 1500, "socket.connection.setup.timeout.ms": 1000}
    commands.reset_producer()
    ops, _ = make_client("ops", "monitor.view_run", "monitor.operate_run")
    answer = ops.post("/api/workflows/orders-in/trigger/pause/", {}, format="json")
    assert answer.status_code == 503 and answer.json()["code"] == "kafka_unavailable"
    assert not Workflow.objects.get(slug="orders-in").trigger_paused
    assert not AuditEntry.objects.filter(action="pause_trigger").exists()


def test_a_paused_webhook_answers_423_and_starts_nothing_until_resumed(kafka, kafka_broker):
    workflow = make_live("hooked", {"type": "webhook"})
    token = webhooks.issue_token("hooked")
    services.set_trigger_paused(workflow, True, None)
    call = lambda: Client().post("/hooks/hooked/", data=json.dumps({"n": 1}), content_type="application/json",  # noqa: E731
                                 HTTP_X_SLUICE_TOKEN=token)
    refused = call()
    assert refused.status_code == 423, refused.content
    assert refused.json()["code"] == "trigger_paused" and "paused" in refused.json()["detail"]
    assert read_starts(kafka_broker, kafka.runs, 1, timeout=2) == []
    services.set_trigger_paused(Workflow.objects.get(slug="hooked"), False, None)
    started = call()
    assert started.status_code == 202, started.content
    assert [s.run_id for s in read_starts(kafka_broker, kafka.runs, 1)] == [started.json()["run_id"]]


def test_a_paused_schedule_skips_its_ticks(kafka, kafka_broker):
    workflow = make_live("report", {"type": "schedule", "cron": "* * * * *"})
    services.set_trigger_paused(workflow, True, None)
    assert tasks.start_scheduled_run.run("report") is None
    assert read_starts(kafka_broker, kafka.runs, 1, timeout=2) == []
    services.set_trigger_paused(Workflow.objects.get(slug="report"), False, None)
    run_id = tasks.start_scheduled_run.run("report")
    assert run_id and [s.run_id for s in read_starts(kafka_broker, kafka.runs, 1)] == [run_id]


def test_manual_starts_go_on_while_the_trigger_is_paused(kafka, kafka_broker):
    workflow = make_live("orders-in", {"type": "kafka", "topic": "orders"})
    services.set_trigger_paused(workflow, True, None)
    ops, _ = make_client("ops", "monitor.view_run", "monitor.operate_run")
    started = ops.post("/api/workflows/orders-in/runs/", {"input": {"id": 1}}, format="json")
    assert started.status_code == 202, started.content


# ---- the backlog ---------------------------------------------------------------------------
def fill_topic(kafka_broker, topic: str, partitions: int, per_partition: int) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(10)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    for partition in range(partitions):
        for i in range(per_partition):
            producer.produce(topic, value=json.dumps({"i": i}).encode(), partition=partition)
    producer.flush(10)


def commit(kafka_broker, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit offsets for the trigger's group, as a runner's trigger does after starting runs."""
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": group,
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        consumer.close()


def test_the_lag_comes_from_the_triggers_committed_offsets(kafka, kafka_broker):
    topic = f"clicks-{uuid.uuid4().hex[:6]}"
    fill_topic(kafka_broker, topic, partitions=2, per_partition=10)
    make_live("clicks-in", {"type": "kafka", "topic": topic})
    trigger_status.forget_cached()
    ops, _ = make_client("ops", "monitor.view_run", "monitor.operate_run")

    # Not read at all (start_from published): no figure to give yet, and the status says why.
    before = ops.get("/api/workflows/clicks-in/trigger/").json()
    assert (before["lag"], before["unread_partitions"], before["lag_source"]) == (0, 2, "broker")

    commit(kafka_broker, trigger_status.trigger_group("clicks-in", topic), topic, {0: 4, 1: 10})
    trigger_status.forget_cached()
    status = ops.get("/api/workflows/clicks-in/trigger/").json()
    assert (status["type"], status["topic"], status["paused"]) == ("kafka", topic, False)
    assert (status["lag"], status["lag_source"], status["unread_partitions"]) == (6, "broker", 0)
    assert status["late_records"] is None  # not a windowed trigger


def test_earliest_counts_unread_partitions_from_the_start_and_late_records_come_from_runners(kafka, kafka_broker):
    topic = f"clicks-{uuid.uuid4().hex[:6]}"
    fill_topic(kafka_broker, topic, partitions=1, per_partition=7)
    window = {"type": "tumbling", "size_seconds": 10, "aggregates": {"n": {"op": "count"}}}
    workflow = make_live("buys", {"type": "kafka", "topic": topic, "start_from": "earliest", "window": window})
    now = timezone.now()
    for name, late, beat in (("r1", 3, now), ("r2", 2, now), ("gone", 50, now - timezone.timedelta(hours=1))):
        RunnerProcess.objects.create(instance=name, started_at=now, last_heartbeat=beat,
                                     stats={"windows.late:buys": late, "windows.late:other": 9})
    trigger_status.forget_cached()
    status = trigger_status.status(workflow)
    assert (status["lag"], status["unread_partitions"], status["windowed"]) == (7, 0, True)
    assert status["late_records"] == 5  # runners heard from lately; a stopped one's figure is old
