"""A workflow's `input_schema` is checked at every door a caller chooses the input at: the API
start, the designer's test run, webhooks and retry with edited input. A mismatch is a 400 that
names each path (jsonschema's error path), and nothing reaches Kafka."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.utils import timezone

from designer import services
from designer.models import Workflow
from monitor.models import Run
from triggers import webhooks
from tests.test_api_workflows import make_client
from tests.trigger_support import read_starts

pytestmark = [pytest.mark.django_db, pytest.mark.kafka]

SCHEMA = {
    "type": "object",
    "required": ["order_id", "amount"],
    "properties": {
        "order_id": {"type": "string", "minLength": 1},
        "amount": {"type": "number", "minimum": 0},
        "customer": {"type": "object", "properties": {"tier": {"enum": ["gold", "silver"]}}},
        "items": {"type": "array", "items": {"type": "integer"}},
    },
    "additionalProperties": False,
}


def checked(slug: str = "checked", trigger: dict | None = None) -> dict:
    return {"slug": slug, "name": slug, "trigger": trigger or {"type": "manual"}, "input_schema": SCHEMA,
            "steps": [{"id": "echo", "type": "transform", "config": {"output": "{{ trigger }}"}}], "edges": []}


@pytest.fixture
def operator(kafka):
    client, user = make_client("ops", "designer.view_workflow", "designer.change_workflow", "monitor.view_run",
                               "monitor.operate_run")
    return client, user


def paths(response) -> list[str]:
    return [error["path"] for error in response.json()["errors"]]


def test_an_api_start_that_does_not_match_gets_400_naming_every_path(operator, kafka_broker, kafka):
    client, user = operator
    workflow = services.create_workflow(checked(), user).workflow
    services.publish(workflow, 1, user)
    bad = client.post("/api/workflows/checked/runs/", {"input": {
        "order_id": "", "customer": {"tier": "bronze"}, "items": [1, "two"], "extra": True}}, format="json")
    assert bad.status_code == 400, bad.content
    body = bad.json()
    assert body["code"] == "invalid_input"
    assert set(paths(bad)) == {"input", "input.amount", "input.order_id", "input.customer.tier", "input.items[1]"}
    by_path = {error["path"]: error["message"] for error in body["errors"]}
    assert by_path["input.amount"] == "required by the workflow's input_schema"
    assert "'two' is not of type 'integer'" in by_path["input.items[1]"]
    assert "'extra' was unexpected" in by_path["input"]
    assert body["detail"].startswith("input")
    assert read_starts(kafka_broker, kafka.runs, 1, timeout=2) == []

    good = client.post("/api/workflows/checked/runs/", {"input": {"order_id": "o-1", "amount": 12.5}},
                       format="json")
    assert good.status_code == 202, good.content


def test_the_designers_test_run_checks_the_schema_of_the_version_it_runs(operator, kafka):
    client, user = operator
    workflow = services.create_workflow(checked(), user).workflow
    web = Client()
    web.force_login(user)
    bad = web.post("/designer/checked/test-run/", json.dumps({"version": 1, "input": {"order_id": 7}}),
                   content_type="application/json")
    assert bad.status_code == 400, bad.content
    assert {p["path"] for p in bad.json()["errors"]} == {"input.order_id", "input.amount"}
    # A draft without the schema runs any input: the schema is the tested version's.
    loose = {**checked()}
    loose.pop("input_schema")
    services.save_version(workflow, loose, user)
    ok = web.post("/designer/checked/test-run/", json.dumps({"version": 2, "input": {"anything": 1}}),
                  content_type="application/json")
    assert ok.status_code == 201, ok.content


def test_retry_with_input_checks_the_schema_of_the_runs_version(operator, kafka):
    client, user = operator
    workflow = services.create_workflow(checked(), user).workflow
    services.publish(workflow, 1, user)
    Run.objects.create(id="r-old", workflow="checked", version=1, status="failed", created_at=timezone.now())
    bad = client.post("/api/runs/r-old/retry/", {"input": {"order_id": "o-2", "amount": -1}}, format="json")
    assert bad.status_code == 400, bad.content
    assert paths(bad) == ["input.amount"] and "less than the minimum of 0" in bad.json()["errors"][0]["message"]
    # The monitor's form says so on the page, with the path.
    web = Client()
    web.force_login(user)
    page = web.post("/monitor/runs/r-old/rerun/", {"input": json.dumps({"amount": 1})}, follow=True)
    assert "input.order_id: required by the workflow&#x27;s input_schema" in page.content.decode()
    ok = client.post("/api/runs/r-old/retry/", {"input": {"order_id": "o-2", "amount": 1}}, format="json")
    assert ok.status_code == 202, ok.content


def test_a_webhook_body_that_does_not_match_gets_400_with_the_paths(kafka, kafka_broker):
    _, user = make_client("root", superuser=True)
    workflow = services.create_workflow(checked("hooked", {"type": "webhook"}), user).workflow
    services.publish(workflow, 1, user)
    token = webhooks.issue_token("hooked")
    bad = Client().post("/hooks/hooked/", data=json.dumps({"order_id": "o", "amount": "lots"}),
                        content_type="application/json", HTTP_X_SLUICE_TOKEN=token)
    assert bad.status_code == 400, bad.content
    assert paths(bad) == ["body.amount"] and bad.json()["detail"].startswith("body.amount: ")
    assert read_starts(kafka_broker, kafka.runs, 1, timeout=2) == []


def test_a_kafka_record_replayed_through_its_trigger_is_not_held_to_the_schema(operator, kafka):
    """Records a Kafka trigger reads start runs whatever they hold: a dead letter replayed through
    the trigger starts the run its record would have started, schema or not."""
    _client, user = operator
    workflow = services.create_workflow(checked("fed", {"type": "kafka", "topic": "feed"}), user).workflow
    services.publish(workflow, 1, user)
    workflow = Workflow.objects.get(slug="fed")
    run_id = services.start_run(workflow, {"whatever": 1}, user, trigger={"type": "kafka", "topic": "feed"})
    assert Run.objects.filter(id=run_id).exists()
    with pytest.raises(services.InvalidInput):
        services.start_run(workflow, {"whatever": 1}, user)
