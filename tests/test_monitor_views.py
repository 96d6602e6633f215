"""Monitor pages, operations, dead letters, admin, audit and retention (real broker for commands)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from confluent_kafka import Consumer
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from designer.models import Workflow, WorkflowVersion
from monitor.models import AuditEntry, DeadLetter, Run, StepRun, WorkflowAccess
from orchestrator.runtime import codec
from orchestrator.runtime.kafka import consumer_config

pytestmark = [pytest.mark.django_db]


def make_user(username, *perms, **extra) -> User:
    user = User.objects.create_user(username, password="x-" + uuid.uuid4().hex, **extra)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    return user


def make_run(workflow="orders", status="running", **fields) -> Run:
    fields.setdefault("created_at", timezone.now())
    return Run.objects.create(id=fields.pop("id", uuid.uuid4().hex), workflow=workflow, version=1, status=status,
                              **fields)


def read_records(topic: str, count: int, timeout: float = 15.0) -> list:
    consumer = Consumer(consumer_config(f"test-read-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([topic])
    records = []
    try:
        import time

        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            records += [m for m in consumer.consume(count, timeout=0.5) if not m.error()]
    finally:
        consumer.close()
    return records


@pytest.fixture
def operator(client):
    user = make_user("op", "monitor.view_run", "monitor.operate_run", "monitor.view_deadletter",
                     "monitor.view_auditentry")
    client.force_login(user)
    return user


# ---- access ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/monitor/", "/monitor/dashboard/data/", "/monitor/runs/", "/monitor/runs/abc/",
                                  "/monitor/dead-letters/", "/monitor/audit/"])
def test_every_page_requires_login(client, path):
    response = client.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_restricted_user_sees_only_granted_workflows(client):
    user = make_user("alice")
    granted = Workflow.objects.create(slug="orders", name="Orders")
    Workflow.objects.create(slug="payroll", name="Payroll")
    WorkflowAccess.objects.create(workflow=granted, user=user)
    mine, hidden = make_run("orders"), make_run("payroll")
    client.force_login(user)

    listing = client.get("/monitor/runs/").content.decode()
    assert mine.id[:15] in listing and hidden.id[:15] not in listing
    assert client.get(f"/monitor/runs/{hidden.id}/").status_code == 403
    assert client.get(f"/monitor/runs/{mine.id}/").status_code == 200
    assert client.get("/monitor/runs/nope/").status_code == 404
    assert client.get("/monitor/dead-letters/").status_code == 403
    assert client.get("/monitor/audit/").status_code == 403
    # Viewing is not operating.
    assert client.post(f"/monitor/runs/{mine.id}/cancel/").status_code == 403


# ---- run list filters -----------------------------------------------------------------------
def test_run_list_filters_and_search(client, operator):
    kafka_run = make_run("orders", "failed", input={"customer": "acme-42"},
                         trigger={"type": "kafka", "topic": "orders", "partition": 1, "offset": 1234})
    old = make_run("orders", "succeeded", created_at=timezone.now() - timedelta(days=3), input={"customer": "zeta"})
    other = make_run("billing", "running")

    def ids(query):
        response = client.get("/monitor/runs/" + query, HTTP_HX_REQUEST="true")
        assert response.status_code == 200, response.content
        return {row for row in (kafka_run.id, old.id, other.id) if row[:15] in response.content.decode()}

    assert ids("") == {kafka_run.id, old.id, other.id}
    assert ids("?status=failed") == {kafka_run.id}
    assert ids("?workflow=billing") == {other.id}
    assert ids("?q=acme-42") == {kafka_run.id}
    assert ids(f"?q={old.id[:10]}") == {old.id}
    assert ids("?trigger=kafka&topic=orders&partition=1&offset=1234") == {kafka_run.id}
    assert ids("?offset=99") == set()
    since = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert ids(f"?since={since}") == {kafka_run.id, other.id}
    # The partial is just the rows; the full page has the filter form.
    assert b"run-filters" not in client.get("/monitor/runs/", HTTP_HX_REQUEST="true").content
    assert b"run-filters" in client.get("/monitor/runs/").content


@pytest.mark.parametrize("query, field", [("?status=bogus", "status:"), ("?since=yesterday", "since:"),
                                          ("?partition=x", "partition:")])
def test_bad_filters_name_the_field(client, operator, query, field):
    response = client.get("/monitor/runs/" + query)
    assert response.status_code == 400
    assert field in response.content.decode()


# ---- operations through Kafka ---------------------------------------------------------------
@pytest.mark.kafka
def test_cancel_sends_command_and_audits(client, operator, kafka):
    run = make_run("orders", "running")
    response = client.post(f"/monitor/runs/{run.id}/cancel/", {"reason": "wrong customer"})
    assert response.status_code == 302

    [record] = read_records(kafka.runs, 1)
    command = codec.decode_run_command(record.value(), record.headers())
    assert type(command).__name__ == "CancelRun"
    assert (command.run_id, command.reason, command.by) == (run.id, "wrong customer", "op")
    assert record.key().decode() == run.id
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.target_type, entry.target_id, entry.username) == ("cancel", "run", run.id, "op")


@pytest.mark.kafka
def test_cancel_of_finished_run_is_refused_with_a_message(client, operator, kafka):
    run = make_run("orders", "succeeded")
    response = client.post(f"/monitor/runs/{run.id}/cancel/", follow=True)
    assert "already succeeded" in response.content.decode()
    assert read_records(kafka.runs, 1, timeout=2) == []
    assert not AuditEntry.objects.exists()


@pytest.mark.kafka
def test_retry_with_edited_input_starts_a_replay_run(client, operator, kafka):
    run = make_run("orders", "failed", input={"n": 1})
    bad = client.post(f"/monitor/runs/{run.id}/rerun/", {"input": "{not json"}, follow=True)
    assert "input: not valid JSON" in bad.content.decode()

    response = client.post(f"/monitor/runs/{run.id}/rerun/", {"input": '{"n": 2}'})
    new_run = Run.objects.exclude(id=run.id).get()
    assert response["Location"] == f"/monitor/runs/{new_run.id}/"
    assert new_run.trigger == {"type": "replay", "of": run.id} and new_run.input == {"n": 2}
    [record] = read_records(kafka.runs, 1)
    start = codec.decode_run_command(record.value(), record.headers())
    assert (start.run_id, start.workflow, start.version, start.input) == (new_run.id, "orders", 1, {"n": 2})
    assert AuditEntry.objects.get().details["new_run"] == new_run.id


@pytest.mark.kafka
def test_approve_and_retry(client, operator, kafka):
    run = make_run("orders", "running")
    client.post(f"/monitor/runs/{run.id}/signal/", {"name": "manager_ok", "decision": "approve", "comment": "fine"})
    assert "decision: must be" in client.post(f"/monitor/runs/{run.id}/signal/",
                                             {"name": "x", "decision": "maybe"}, follow=True).content.decode()
    failed = make_run("orders", "failed")
    client.post(f"/monitor/runs/{failed.id}/retry/")

    records = read_records(kafka.runs, 2)
    commands = sorted((codec.decode_run_command(r.value(), r.headers()) for r in records), key=lambda c: c.ts)
    assert type(commands[0]).__name__ == "SignalRun"
    assert commands[0].name == "manager_ok" and commands[0].payload == {"decision": "approve", "comment": "fine"}
    assert type(commands[1]).__name__ == "RetryRun" and commands[1].run_id == failed.id
    assert list(AuditEntry.objects.order_by("at", "id").values_list("action", flat=True)) == ["approve", "retry"]


# ---- dead letters ---------------------------------------------------------------------------
def start_command(version=9, run_id="r1", workflow="orders") -> str:
    return json.dumps({"type": "start", "run_id": run_id, "workflow": workflow, "version": version, "input": {},
                       "ts": 1.0})


def make_letter(offset=0, value=None, source_topic="wf.runs", workflow="orders") -> DeadLetter:
    return DeadLetter.objects.create(topic="wf.dlq", partition=0, offset=offset, key="r1",
                                     value=value or start_command(),
                                     headers={"sluice-error": "bad", "sluice-kind": "StartRun"},
                                     error="workflow orders@9 unknown", stage="engine", failed_at=timezone.now(),
                                     source_topic=source_topic, source_partition=0, source_offset=offset,
                                     workflow=workflow)


@pytest.mark.kafka
def test_dead_letter_replay_with_edit_and_discard(client, operator, kafka):
    letter = make_letter(0, source_topic=kafka.runs)
    other = make_letter(1, source_topic=kafka.runs)
    page = client.get("/monitor/dead-letters/").content.decode()
    assert "workflow orders@9 unknown" in page
    assert client.get(f"/monitor/dead-letters/{letter.pk}/").status_code == 200

    bad = client.post(f"/monitor/dead-letters/{letter.pk}/replay/", {"value": "{oops", "json": "1"}, follow=True)
    assert "value: not valid JSON" in bad.content.decode()
    # What the engine would refuse is refused here, with its reason, and the letter stays new.
    refused = client.post(f"/monitor/dead-letters/{letter.pk}/replay/",
                          {"value": '{"run_id": "r1", "fixed": true}', "json": "1"}, follow=True)
    assert "the engine would refuse this record" in refused.content.decode()
    replayed = client.post(f"/monitor/dead-letters/{letter.pk}/replay/", {"value": start_command(version=1), "json": "1"},
                           follow=True)
    assert "StartRun for run r1 sent to" in replayed.content.decode()
    client.post(f"/monitor/dead-letters/{other.pk}/discard/")

    [record] = read_records(kafka.runs, 1)
    assert record.key() == b"r1" and json.loads(record.value())["version"] == 1
    assert ("sluice-kind", b"StartRun") in record.headers() and all(h[0] != "sluice-error" for h in record.headers())
    letter.refresh_from_db(), other.refresh_from_db()
    assert (letter.status, letter.resolved_by) == ("replayed", "op") and other.status == "discarded"
    assert letter.replay["to"] == "runs" and letter.replay["run_id"] == "r1" and letter.replay["edited"] is True
    assert (letter.replay["topic"], letter.replay["partition"]) == (kafka.runs, record.partition())
    assert letter.replay["offset"] == record.offset()
    actions = list(AuditEntry.objects.order_by("id").values_list("action", "target_id"))
    assert actions == [("replay", str(letter.pk)), ("discard", str(other.pk))]
    assert AuditEntry.objects.get(action="replay").details["edited"] is True
    # A handled letter cannot be replayed again.
    again = client.post(f"/monitor/dead-letters/{letter.pk}/replay/", follow=True)
    assert "already replayed" in again.content.decode()
    # If the runner dead-letters the replayed record again, the first letter's page says so.
    DeadLetter.objects.create(topic="wf.dlq", partition=0, offset=7, key="r1", value=start_command(version=1),
                              error="still wrong", stage="engine", failed_at=timezone.now(),
                              source_topic=kafka.runs, source_partition=record.partition(),
                              source_offset=record.offset(), workflow="orders")
    detail = client.get(f"/monitor/dead-letters/{letter.pk}/").content.decode()
    assert "refused the replayed record again" in detail and "still wrong" in detail


def test_dead_letters_need_operate_permission_to_act(client):
    viewer = make_user("viewer", "monitor.view_deadletter", "monitor.view_run")
    client.force_login(viewer)
    letter = make_letter()
    assert client.get("/monitor/dead-letters/").status_code == 200
    assert client.post(f"/monitor/dead-letters/{letter.pk}/discard/").status_code == 403
    letter.refresh_from_db()
    assert letter.status == "new"


# ---- dashboard ------------------------------------------------------------------------------
@pytest.mark.kafka
def test_dashboard_numbers_and_consumer_lag(client, operator, kafka):
    from confluent_kafka import Producer

    from orchestrator.runtime.kafka import producer_config

    now = timezone.now()
    for seconds in (1, 2, 3, 4, 10):
        make_run("orders", "succeeded", started_at=now - timedelta(seconds=seconds + 1), ended_at=now - timedelta(seconds=1))
    make_run("orders", "failed", error="boom", ended_at=now)
    make_run("orders", "running")
    make_letter()
    # A consumer group with lag: 5 records, 2 consumed and committed.
    producer = Producer(producer_config())
    for i in range(5):
        producer.produce(kafka.history, key=b"k", value=b"{}")
    producer.flush(10)
    group = kafka.group(f"lag-test-{uuid.uuid4().hex[:6]}")
    foreign = f"another-app-{uuid.uuid4().hex[:6]}"  # not this installation's: not shown
    for group_id in (group, foreign):
        consumer = Consumer(consumer_config(group_id))
        consumer.subscribe([kafka.history])
        got = []
        while len(got) < 2:
            got += consumer.consume(2 - len(got), timeout=1)
        consumer.commit(asynchronous=False)
        consumer.close()

    data = client.get("/monitor/dashboard/data/").json()
    assert data["in_flight"] == 1
    assert data["totals"]["total"] == 7 and data["totals"]["succeeded"] == 5 and data["totals"]["failed"] == 1
    assert data["totals"]["failure_rate"] == pytest.approx(1 / 6)
    [durations] = data["durations"]
    assert durations["workflow"] == "orders" and durations["p50"] == pytest.approx(3) and durations["p95"] == pytest.approx(10)
    assert data["recent_failures"][0]["error"] == "boom"
    assert data["dead_letters"] == 1
    assert sum(data["per_minute"]["succeeded"]) == 5
    [lag] = [row for row in data["lag"]["groups"] if row["group"] == group]
    assert (lag["topic"], lag["committed"], lag["end"], lag["lag"]) == (kafka.history, 2, 5, 3)
    assert all(row["group"].startswith(kafka.prefix) for row in data["lag"]["groups"]), data["lag"]
    assert client.get("/monitor/").status_code == 200


# ---- admin ----------------------------------------------------------------------------------
@pytest.mark.kafka
def test_admin_lists_and_cancel_action(client, kafka):
    admin_user = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    workflow = Workflow.objects.create(slug="orders", name="Orders")
    WorkflowVersion.objects.create(workflow=workflow, number=1, definition={"slug": "orders"})
    run = make_run("orders", "running")
    StepRun.objects.create(run=run, step_id="a", type="transform")
    make_letter()
    for path in ("designer/workflow", "designer/workflowversion", "monitor/run", "monitor/steprun",
                 "monitor/deadletter", "monitor/auditentry", "monitor/runnerprocess", "monitor/workflowaccess",
                 "django_celery_beat/periodictask"):
        assert client.get(f"/admin/{path}/").status_code == 200, path
    assert client.get(f"/admin/monitor/run/?q={run.id[:8]}&status__exact=running").status_code == 200
    assert client.get(f"/admin/monitor/run/{run.id}/change/").status_code == 200
    version = WorkflowVersion.objects.get()
    # Versions are history: the change page is view-only (no save possible).
    assert client.post(f"/admin/designer/workflowversion/{version.pk}/change/", {"message": "x"}).status_code == 403

    client.post("/admin/monitor/run/", {"action": "cancel", "_selected_action": [run.id]})
    [record] = read_records(kafka.runs, 1)
    assert codec.decode_run_command(record.value(), record.headers()).run_id == run.id
    assert AuditEntry.objects.get().action == "cancel"


# ---- retention ------------------------------------------------------------------------------
def test_retention_purges_old_finished_runs_only(settings):
    from django_celery_beat.models import PeriodicTask

    from monitor.tasks import purge_old_runs

    settings.SLUICE_RUN_RETENTION_DAYS = 7
    old = make_run("orders", "succeeded", created_at=timezone.now() - timedelta(days=8))
    StepRun.objects.create(run=old, step_id="a", type="transform")
    old_but_running = make_run("orders", "running", created_at=timezone.now() - timedelta(days=30))
    recent = make_run("orders", "failed", created_at=timezone.now() - timedelta(days=6))

    assert purge_old_runs() == 1
    assert set(Run.objects.values_list("id", flat=True)) == {old_but_running.id, recent.id}
    assert not StepRun.objects.exists()
    settings.SLUICE_RUN_RETENTION_DAYS = 0
    assert purge_old_runs() == 0
    # Registered with celery beat by a data migration.
    task = PeriodicTask.objects.get(task="monitor.tasks.purge_old_runs")
    assert task.enabled and task.interval.every == 1 and task.queue == "sluice"


def test_audit_record_redacts_secrets_and_page_lists_it(client, operator):
    from monitor.audit import record

    record(operator, "publish", ("workflow", "orders"), {"version": 3, "headers": {"Authorization": "Bearer x"}})
    entry = AuditEntry.objects.get()
    assert entry.details == {"version": 3, "headers": {"Authorization": "***"}}
    page = client.get("/monitor/audit/?action=publish").content.decode()
    assert "publish" in page and "orders" in page and "Bearer" not in page


def test_a_dead_letter_with_nowhere_to_go_is_listed_without_replay(client, operator):
    # A record the monitor's database refused (monitor.projector): it has no loop to go back to.
    kept = make_letter(0, source_topic="wf.runs")
    aside = DeadLetter.objects.create(topic="wf.history", partition=0, offset=7, key="r1", value="{}",
                                      error="the monitor's database refused it: value too long", stage="projector",
                                      failed_at=timezone.now(), source_topic="wf.history", source_partition=0,
                                      source_offset=7, workflow="orders")
    page = client.get("/monitor/dead-letters/").content.decode()
    assert f"/monitor/dead-letters/{kept.pk}/replay/" in page
    assert f"/monitor/dead-letters/{aside.pk}/replay/" not in page
    assert f"/monitor/dead-letters/{aside.pk}/discard/" in page and "value too long" in page
