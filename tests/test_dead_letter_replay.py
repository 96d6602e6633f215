"""Dead letters replay to where they came from, on the real broker with a real runner.

The reproduction of the bug: a record a trigger could not handle (its filter failed on it),
edited and replayed from the dead-letter page, was sent raw into `wf.runs`, refused by the
engine as undecodable and dead-lettered again. Now it goes back through its workflow's trigger
and starts a run whose trigger names the original record and the replay; a `wf.runs` record
goes back to `wf.runs`. The REST API does the same, with the same rights and audit entries.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from rest_framework.test import APIClient

from designer import services
from monitor.models import AuditEntry, DeadLetter, Run, WorkflowAccess
from monitor.projector import Projector
from tests.runtime_support import produce

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]


def orders_flow(slug: str, topic: str) -> dict:
    return {"slug": slug, "name": "Big orders",
            "trigger": {"type": "kafka", "topic": topic, "filter": "trigger.total > 100", "start_from": "earliest"},
            "steps": [{"id": "note", "type": "transform", "config": {"output": {"total": "{{ trigger.total }}"}}}],
            "edges": []}


def project_until(predicate, what: str, timeout: float = 60.0):
    """Run the history/dead-letter projector until `predicate()` holds."""
    projector = Projector(group_id=f"test-projector-{uuid.uuid4().hex[:6]}")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            projector.poll_once(timeout=0.3)
            result = predicate()
            if result:
                return result
        raise AssertionError(f"timed out waiting for {what}")
    finally:
        projector.close()


@pytest.fixture
def operator(roles):
    user = User.objects.create_user("olga", password="pw-" + uuid.uuid4().hex)
    user.groups.add(Group.objects.get(name="Operator"))
    return user


def test_a_trigger_dead_letter_goes_back_through_its_trigger(kafka, runner, operator):
    admin = User.objects.create_superuser("admin", password="pw-" + uuid.uuid4().hex)
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    # A record the filter cannot evaluate (a text total), one it rejects, one it accepts.
    produce(topic, [json.dumps({"total": "lots"}).encode(), json.dumps({"total": "many"}).encode(),
                    json.dumps({"total": 500}).encode()])
    workflow = services.create_workflow(orders_flow("big-orders", topic), admin).workflow
    services.publish(workflow, 1, admin)

    letters = project_until(lambda: list(DeadLetter.objects.order_by("source_offset"))
                            if DeadLetter.objects.count() == 2 and Run.objects.filter(status="succeeded").exists()
                            else None, "two dead letters and the good record's run")
    first, second = letters
    assert (first.stage, first.workflow, first.source_topic, first.source_offset) == ("trigger", "big-orders", topic, 0)
    assert "filter of big-orders failed" in first.error

    page = Client()
    page.force_login(operator)
    detail = page.get(f"/monitor/dead-letters/{first.pk}/").content.decode()
    assert "Replay through the trigger" in detail

    # Edited: the filter passes now, and a run starts whose trigger names the record and the replay.
    response = page.post(f"/monitor/dead-letters/{first.pk}/replay/", {"value": '{"total": 150}', "json": "1"},
                         follow=True)
    html = response.content.decode()
    first.refresh_from_db()
    run_id = first.replay["run_id"]
    assert first.status == "replayed" and first.replay["started"] is True and first.replay["to"] == "trigger"
    assert f"run {run_id} of &#x27;big-orders&#x27; started" in html
    assert f'href="/monitor/runs/{run_id}/"' in html  # the page links the run
    run = project_until(lambda: Run.objects.filter(id=run_id, status="succeeded").first(), "the replayed run")
    assert run.input == {"total": 150}
    assert {key: run.trigger[key] for key in ("type", "topic", "partition", "offset")} == {
        "type": "kafka", "topic": topic, "partition": 0, "offset": 0}
    assert run.trigger["replay"]["dead_letter"] == first.pk and run.trigger["replay"]["edited"] is True
    assert run.trigger["replay"]["by"] == "olga" and "filter of big-orders failed" in run.trigger["replay"]["error"]
    assert run.steps.get(step_id="note").output == {"total": 150}
    # Nothing was dead-lettered again.
    assert DeadLetter.objects.count() == 2

    # Unedited, the filter fails again: the page says so and the letter stays new.
    again = page.post(f"/monitor/dead-letters/{second.pk}/replay/", follow=True).content.decode()
    assert "failed again" in again and "&#x27;&gt;&#x27; not supported" in again
    second.refresh_from_db()
    assert second.status == "new"
    # Edited so the filter rejects it: replayed, no run, and the page says why.
    rejected = page.post(f"/monitor/dead-letters/{second.pk}/replay/", {"value": '{"total": 5}', "json": "1"},
                         follow=True).content.decode()
    assert "did not match: no run started" in rejected
    second.refresh_from_db()
    assert second.status == "replayed" and second.replay["started"] is False
    assert list(AuditEntry.objects.filter(action="replay").values_list("target_id", flat=True)) == [
        str(second.pk), str(first.pk)]


def test_a_runs_dead_letter_goes_back_to_wf_runs_through_the_api(kafka, runner, operator):
    admin = User.objects.create_superuser("admin", password="pw-" + uuid.uuid4().hex)
    workflow = services.create_workflow({
        "slug": "hello", "trigger": {"type": "manual"},
        "steps": [{"id": "hi", "type": "transform", "config": {"output": {"to": "{{ trigger.name }}"}}}],
        "edges": []}, admin).workflow
    services.publish(workflow, 1, admin)
    # A start command the engine cannot decode (no version, no timestamp).
    produce(kafka.runs, [json.dumps({"type": "start", "run_id": "r-broken", "workflow": "hello"}).encode()],
            key=b"r-broken")
    letter = project_until(lambda: DeadLetter.objects.first(), "the engine's dead letter")
    assert (letter.stage, letter.source_topic) == ("engine", kafka.runs)

    api = APIClient()
    api.force_authenticate(operator)
    listed = api.get("/api/dead-letters/", {"status": "new", "stage": "engine"}).json()
    assert [item["id"] for item in listed["results"]] == [letter.pk] and listed["count"] == 1
    assert api.get("/api/dead-letters/", {"stage": "trigger"}).json()["count"] == 0
    assert api.get("/api/dead-letters/", {"since": "yesterday"}).status_code == 400
    assert api.get(f"/api/dead-letters/{letter.pk}/").json()["value"] == letter.value

    # What the engine would refuse is refused at once (422), and the letter stays new.
    refused = api.post(f"/api/dead-letters/{letter.pk}/replay/", {}, format="json")
    assert refused.status_code == 422 and "the engine would refuse this record" in refused.json()["detail"]
    fixed = {"type": "start", "run_id": "r-broken", "workflow": "hello", "version": 1, "input": {"name": "Ada"},
             "ts": time.time()}
    # An edit may not reach into a workflow the user may not operate.
    scoped = User.objects.create_user("sam", password="pw-" + uuid.uuid4().hex)
    other = services.create_workflow({**workflow.latest_version.definition, "slug": "other"}, admin).workflow
    WorkflowAccess.objects.create(workflow=other, user=scoped, permission="operate")
    outsider = APIClient()
    outsider.force_authenticate(scoped)
    assert outsider.get(f"/api/dead-letters/{letter.pk}/").status_code == 404

    replayed = api.post(f"/api/dead-letters/{letter.pk}/replay/", {"value": fixed}, format="json")
    assert replayed.status_code == 200, replayed.content
    body = replayed.json()
    assert body["status"] == "replayed" and body["replay"]["to"] == "runs" and body["replay"]["run_id"] == "r-broken"
    run = project_until(lambda: Run.objects.filter(id="r-broken", status="succeeded").first(), "the replayed run")
    assert run.steps.get(step_id="hi").output == {"to": "Ada"}
    assert DeadLetter.objects.count() == 1  # not dead-lettered again
    assert api.post(f"/api/dead-letters/{letter.pk}/replay/", {}, format="json").status_code == 409
    assert api.post(f"/api/dead-letters/{letter.pk}/discard/", {}, format="json").status_code == 409
    entry = AuditEntry.objects.get(action="replay")
    assert (entry.username, entry.target_id, entry.details["edited"], entry.details["to"]) == (
        "olga", str(letter.pk), True, "runs")
