"""The designer's pages and editor endpoints through Django's test client (HTTP in, HTML/JSON out).

Login and permissions on every page and endpoint; bad input answered with 4xx naming the
field or step, never a 500; the side panel form round trip; save conflicts; publish and test
runs against the real embedded broker.
"""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Producer
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from designer import services
from designer.models import Workflow
from monitor.models import Run
from orchestrator.messages import PublishedDefinition, StartRun
from orchestrator.runtime import codec
from tests.test_api_workflows import definition, read_records

PASSWORD = "pw-for-tests-only-9"


def user_with(username: str, *codenames: str):
    user = get_user_model().objects.create_user(username, password=PASSWORD)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


@pytest.fixture
def editor_user(db):
    return user_with("ada", "view_workflow", "change_workflow", "add_workflow", "publish_workflow", "operate_run")


@pytest.fixture
def viewer(db):
    return user_with("vic", "view_workflow")


@pytest.fixture
def ada(client, editor_user):
    client.force_login(editor_user)
    return client


@pytest.fixture
def greet(editor_user):
    return services.create_workflow(definition(), editor_user, message="first").workflow


def post_json(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


# ---- login and permissions ---------------------------------------------------------------
@pytest.mark.parametrize("name,args", [
    ("designer:list", []), ("designer:new", []), ("designer:editor", ["greet"]),
    ("designer:versions", ["greet"]), ("designer:diff", ["greet"]),
])
def test_pages_require_login(client, greet, name, args):
    response = client.get(reverse(name, args=args))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("name,args", [
    ("designer:validate", []), ("designer:panel", []), ("designer:create", []), ("designer:save", ["greet"]),
    ("designer:publish", ["greet"]), ("designer:test_run", ["greet"]), ("designer:duplicate", ["greet"]),
    ("designer:archive", ["greet"]),
])
def test_endpoints_require_login(client, greet, name, args):
    response = client.post(reverse(name, args=args), data="{}", content_type="application/json")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_viewer_can_look_but_not_change(client, viewer, greet):
    client.force_login(viewer)
    page = client.get(reverse("designer:editor", args=["greet"]))
    assert page.status_code == 200
    assert b'id="btn-save"' not in page.content and b'id="btn-publish"' not in page.content
    assert page.context["editor_config"]["canEdit"] is False
    refused = post_json(client, reverse("designer:save", args=["greet"]), {"definition": definition(), "base_version": 1})
    assert refused.status_code == 403 and "may not edit 'greet'" in refused.json()["detail"]
    assert post_json(client, reverse("designer:publish", args=["greet"]), {"version": 1}).status_code == 403
    assert post_json(client, reverse("designer:test_run", args=["greet"]), {"version": 1}).status_code == 403
    assert client.get(reverse("designer:new")).status_code == 403
    assert client.post(reverse("designer:archive", args=["greet"])).status_code == 403
    assert Workflow.objects.get(slug="greet").versions.count() == 1


def test_user_without_view_permission_is_refused(client, db, greet):
    client.force_login(user_with("nobody"))
    assert client.get(reverse("designer:list")).status_code == 403
    assert client.get(reverse("designer:editor", args=["greet"])).status_code == 403
    assert post_json(client, reverse("designer:validate"), {"definition": definition()}).status_code == 403


# ---- list --------------------------------------------------------------------------------
def test_list_shows_live_and_draft_versions_and_last_run(ada, editor_user, greet):
    services.save_version(greet, definition(name="Greet v2"), editor_user, base_version=1)
    Workflow.objects.filter(pk=greet.pk).update(live_version=greet.versions.get(number=1))
    from django.utils import timezone

    Run.objects.create(id="run-1", workflow="greet", version=1, status="failed", created_at=timezone.now())
    services.create_workflow(definition("other", name="Other thing"), editor_user)
    html = ada.get(reverse("designer:list")).content.decode()
    assert "v1 live" in html and "v2 draft" in html and 'class="pill failed"' in html
    assert "Other thing" in html
    searched = ada.get(reverse("designer:list"), {"q": "other"}).content.decode()
    assert "Other thing" in searched and "Greet v2" not in searched
    assert "No workflow matches" in ada.get(reverse("designer:list"), {"q": "zzz"}).content.decode()


def test_duplicate_and_archive_from_the_list(ada, greet, kafka):
    response = ada.post(reverse("designer:duplicate", args=["greet"]))
    assert response.status_code == 302 and response["Location"] == reverse("designer:editor", args=["greet-copy"])
    copy = Workflow.objects.get(slug="greet-copy")
    assert copy.latest_version.definition["steps"] == definition()["steps"]
    ada.post(reverse("designer:archive", args=["greet"]))
    assert Workflow.objects.get(slug="greet").archived
    html = ada.get(reverse("designer:list")).content.decode()
    assert 'data-slug="greet"' not in html and 'data-slug="greet-copy"' in html
    assert 'data-slug="greet"' in ada.get(reverse("designer:list"), {"archived": "1"}).content.decode()
    ada.post(reverse("designer:archive", args=["greet"]), {"restore": "1"})
    assert not Workflow.objects.get(slug="greet").archived


# ---- editor page, validation, panel ------------------------------------------------------
def test_editor_page_embeds_definition_step_types_and_config(ada, greet):
    response = ada.get(reverse("designer:editor", args=["greet"]))
    assert response.status_code == 200
    html = response.content.decode()
    for script_id in ("initial-definition", "step-types", "editor-config"):
        assert f'id="{script_id}"' in html
    assert response.context["editor_config"]["version"] == 1
    assert {t["type"] for t in response.context["step_types"]} >= {"transform", "branch", "http"}
    assert ada.get(reverse("designer:editor", args=["greet"]), {"version": 9}).status_code == 404
    assert ada.get(reverse("designer:editor", args=["greet"]), {"version": "abc"}).status_code == 404
    assert ada.get(reverse("designer:editor", args=["nope"])).status_code == 404


def test_validate_returns_problems_with_step_ids(ada):
    bad = definition()
    bad["steps"][1]["config"]["condition"] = "trigger.n >"
    response = post_json(ada, reverse("designer:validate"), {"definition": bad})
    assert response.status_code == 200
    problems = response.json()["problems"]
    assert any(p["step_id"] == "check" and p["path"].startswith("steps[1].config.condition") for p in problems)
    assert post_json(ada, reverse("designer:validate"), {"definition": definition()}).json()["problems"] == [] or all(
        p["severity"] == "warning" for p in post_json(ada, reverse("designer:validate"),
                                                      {"definition": definition()}).json()["problems"])


def test_validate_refuses_broken_requests_with_400(ada):
    response = ada.post(reverse("designer:validate"), data="{nope", content_type="application/json")
    assert response.status_code == 400 and "not valid JSON" in response.json()["detail"]
    response = post_json(ada, reverse("designer:validate"), {"definition": [1, 2]})
    assert response.status_code == 400 and "'definition'" in response.json()["detail"]


def panel(client, data: dict, **fields):
    return client.post(reverse("designer:panel"), {"definition": json.dumps(data), **fields})


def test_panel_renders_a_form_from_the_step_schema(ada):
    data = definition(steps=[{"id": "call", "type": "http", "config": {"url": "https://x.example"}}], edges=[])
    response = panel(ada, data, step_id="call")
    html = response.content.decode()
    assert response.status_code == 200 and "HX-Trigger" not in response
    assert '<select id="fld-config.method"' in html and 'value="https://x.example"' in html
    assert 'textarea id="fld-config.headers"' in html and 'type="checkbox" name="config.follow_redirects"' in html
    assert "<code>trigger</code>" in html  # names available in expressions


def test_panel_post_updates_the_step_and_shows_inline_errors(ada):
    data = definition()
    response = panel(ada, data, step_id="check", submitted="1", **{"config.condition": "trigger.n >",
                                                                   "retry.max_attempts": "x"})
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-field="config.condition"' in html and "invalid expression" in html
    assert "Max attempts must be a whole number" in html
    event = json.loads(response["HX-Trigger"])["sluice:step-updated"]
    assert event["step_id"] == "check" and event["step"]["config"]["condition"] == "trigger.n >"
    fixed = panel(ada, data, step_id="check", submitted="1", **{"config.condition": "trigger.n > 5"})
    assert "field-errors" not in fixed.content.decode()
    assert json.loads(fixed["HX-Trigger"])["sluice:step-updated"]["step"]["config"] == {"condition": "trigger.n > 5"}


def test_trigger_panel_follows_the_trigger_type(ada):
    response = panel(ada, definition(), submitted="1", **{"trigger.type": "kafka", "trigger.topic": "orders",
                                                         "trigger.filter": "trigger.total >"})
    html = response.content.decode()
    assert 'name="trigger.topic"' in html and 'name="trigger.filter"' in html and 'name="trigger.cron"' not in html
    assert "field-errors" in html
    trigger = json.loads(response["HX-Trigger"])["sluice:trigger-updated"]["trigger"]
    assert trigger == {"type": "kafka", "topic": "orders", "filter": "trigger.total >"}


def test_trigger_panel_offers_every_field_of_each_trigger_type(ada):
    schedule = panel(ada, definition(), submitted="1", **{
        "trigger.type": "schedule", "trigger.cron": "*/5 * * * *", "trigger.timezone": "Europe/Paris",
        "trigger.input": '{"report": "daily"}'})
    html = schedule.content.decode()
    for name in ("cron", "timezone", "input"):
        assert f'name="trigger.{name}"' in html
    assert 'name="trigger.topic"' not in html and "field-errors" not in html
    assert json.loads(schedule["HX-Trigger"])["sluice:trigger-updated"]["trigger"] == {
        "type": "schedule", "cron": "*/5 * * * *", "timezone": "Europe/Paris", "input": {"report": "daily"}}
    bad_zone = panel(ada, definition(), submitted="1", **{"trigger.type": "schedule", "trigger.cron": "0 * * * *",
                                                         "trigger.timezone": "Mars/Olympus"})
    assert "is not a time zone name" in bad_zone.content.decode()

    kafka = panel(ada, definition(), submitted="1", **{"trigger.type": "kafka", "trigger.topic": "orders",
                                                      "trigger.start_from": "earliest"})
    assert '<select id="fld-trigger.start_from"' in kafka.content.decode()
    assert json.loads(kafka["HX-Trigger"])["sluice:trigger-updated"]["trigger"] == {
        "type": "kafka", "topic": "orders", "start_from": "earliest"}
    unknown = panel(ada, definition(), submitted="1", **{"trigger.type": "kafka", "trigger.topic": "orders",
                                                        "trigger.start_from": "yesterday"})
    assert "Choose one of: published, earliest, latest" in unknown.content.decode()

    webhook = panel(ada, definition(), submitted="1", **{"trigger.type": "webhook", "trigger.filter": "trigger.ok"})
    html = webhook.content.decode()
    assert 'name="trigger.filter"' in html
    assert json.loads(webhook["HX-Trigger"])["sluice:trigger-updated"]["trigger"] == {"type": "webhook", "filter": "trigger.ok"}


def test_trigger_panel_of_a_saved_webhook_workflow_says_how_to_call_it(ada, greet):
    from triggers import webhooks

    data = {**definition(), "trigger": {"type": "webhook"}}
    html = panel(ada, data).content.decode()
    assert "http://testserver/hooks/greet/" in html and "X-Sluice-Token: $SLUICE_WEBHOOK_TOKEN" in html
    assert 'data-rotate-webhook="first"' in html and "No token yet" in html
    webhooks.issue_token("greet")
    html = panel(ada, data).content.decode()
    assert 'data-rotate-webhook="replace"' in html and "A token exists" in html
    assert "/hooks/" not in panel(ada, definition()).content.decode()  # other triggers: nothing to call


def test_panel_for_a_missing_step_or_broken_definition(ada):
    assert panel(ada, definition(), step_id="ghost").status_code == 404
    assert ada.post(reverse("designer:panel"), {"definition": "{broken"}).status_code == 400


# ---- create, save, conflicts, versions, diff, restore ------------------------------------
def test_create_from_the_new_page(ada):
    response = post_json(ada, reverse("designer:create"), {"definition": definition("fresh"), "message": "hi"})
    assert response.status_code == 201 and response.json()["url"] == reverse("designer:editor", args=["fresh"])
    again = post_json(ada, reverse("designer:create"), {"definition": definition("fresh")})
    assert again.status_code == 400 and again.json()["errors"][0]["path"] == "slug"


def test_save_refuses_invalid_definitions_naming_the_step(ada, greet):
    bad = definition()
    bad["steps"][0]["type"] = "teleport"
    response = post_json(ada, reverse("designer:save", args=["greet"]), {"definition": bad, "base_version": 1})
    assert response.status_code == 400
    assert any(p["step_id"] == "hello" for p in response.json()["errors"])
    assert greet.versions.count() == 1


def test_second_save_from_the_same_base_is_refused_as_a_conflict(client, ada, greet, db):
    first = post_json(ada, reverse("designer:save", args=["greet"]),
                      {"definition": definition(name="Ada's"), "base_version": 1, "message": "mine"})
    assert first.status_code == 201 and first.json()["version"] == 2
    bob = user_with("bob", "view_workflow", "change_workflow")
    client.force_login(bob)
    second = post_json(client, reverse("designer:save", args=["greet"]),
                       {"definition": definition(name="Bob's"), "base_version": 1})
    assert second.status_code == 409
    body = second.json()
    assert body["latest_version"] == 2 and body["saved_by"] == "ada" and "after you loaded version 1" in body["detail"]
    assert Workflow.objects.get(slug="greet").latest_version.definition["name"] == "Ada's"


def test_editor_and_api_answer_a_refusal_in_one_shape(ada, editor_user, greet):
    """The editor's JSON endpoints answer errors as the REST API does (webbase.errors)."""
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(editor_user)
    bad = definition()
    bad["steps"][0]["type"] = "teleport"
    from_editor = post_json(ada, reverse("designer:save", args=["greet"]), {"definition": bad})
    from_api = api.put("/api/workflows/greet/", bad, format="json")
    assert from_editor.status_code == from_api.status_code == 400
    assert from_editor.json() == from_api.json()
    assert set(from_editor.json()) == {"detail", "code", "errors"} and from_editor.json()["code"] == "invalid_definition"
    missing = ada.get(reverse("designer:version", args=["greet", 9]))
    from_api = api.get("/api/workflows/greet/versions/9/")
    assert missing.status_code == from_api.status_code == 404
    assert missing.json()["code"] == "not_found" and missing.json()["errors"][0]["path"] == ""
    broken = ada.post(reverse("designer:save", args=["greet"]), "{broken", content_type="application/json")
    assert broken.status_code == 400 and broken.json()["code"] == "invalid"
    assert broken.json()["errors"] == [{"path": "", "step_id": None, "code": "invalid",
                                        "message": broken.json()["detail"], "severity": "error"}]


def test_versions_diff_and_restore(ada, editor_user, greet):
    changed = definition()
    changed["steps"][0]["config"]["output"] = {"text": "Hi"}
    changed["steps"].append({"id": "extra", "type": "fail", "config": {"message": "no"}})
    changed["edges"].append({"from": "check", "port": "false", "to": "extra"})
    services.save_version(greet, changed, editor_user, message="second", base_version=1)
    html = ada.get(reverse("designer:versions", args=["greet"])).content.decode()
    assert 'data-version="2"' in html and 'data-version="1"' in html and "second" in html
    diff = ada.get(reverse("designer:diff", args=["greet"]), {"a": 1, "b": 2}).content.decode()
    assert "step <code>extra</code> added" in diff and "<code>config.output.text</code>" in diff
    assert "check → extra [false]" in diff
    assert ada.get(reverse("designer:diff", args=["greet"]), {"a": 1, "b": 7}).status_code == 400
    restored = post_json(ada, reverse("designer:restore", args=["greet", 1]), {})
    assert restored.status_code == 200 and restored.json()["version"] == 3
    assert greet.versions.get(number=3).definition["steps"] == definition()["steps"]
    assert post_json(ada, reverse("designer:restore", args=["greet", 99]), {}).status_code == 404
    as_json = ada.get(reverse("designer:version", args=["greet", 2])).json()
    assert as_json["status"] == "draft" and as_json["definition"]["steps"][-1]["id"] == "extra"


# ---- publish and test runs on the real broker --------------------------------------------
def test_publish_makes_a_version_live(ada, greet, kafka):
    response = post_json(ada, reverse("designer:publish", args=["greet"]), {"version": 1})
    assert response.status_code == 200 and response.json() == {"live": 1}
    assert Workflow.objects.get(slug="greet").live_version.number == 1
    assert post_json(ada, reverse("designer:publish", args=["greet"]), {"version": "1"}).status_code == 400
    assert post_json(ada, reverse("designer:publish", args=["greet"]), {"version": 5}).status_code == 404


def test_test_run_offers_the_draft_to_runners_without_making_it_live(ada, greet, kafka):
    response = post_json(ada, reverse("designer:test_run", args=["greet"]), {"version": 1, "input": {"n": 3}})
    assert response.status_code == 201
    run_id = response.json()["run_id"]
    published, _ = read_records(kafka.definitions, codec.decode_definition,
                                lambda value, msg: msg.key() == b"greet@1")
    assert isinstance(published, PublishedDefinition) and published.definition["slug"] == "greet"
    start, _ = read_records(kafka.runs, codec.decode_run_command,
                            lambda value, msg: isinstance(value, StartRun) and value.run_id == run_id)
    assert start.version == 1 and start.input == {"n": 3} and start.trigger["type"] == "test"
    assert Workflow.objects.get(slug="greet").live_version is None  # still not live
    run = Run.objects.get(id=run_id)
    assert run.status == "pending" and run.started_by == "ada"
    assert post_json(ada, reverse("designer:test_run", args=["greet"]), {"input": {}}).status_code == 400


def kafka_triggered(slug, topic, user):
    data = definition(slug)
    data["trigger"] = {"type": "kafka", "topic": topic}
    return services.create_workflow(data, user).workflow


def test_sample_record_reads_the_newest_record_of_the_trigger_topic(ada, editor_user, viewer, greet, kafka, settings):
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    kafka_triggered("orders", topic, editor_user)
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS})
    for n in range(3):
        producer.produce(topic, key=f"k{n}", value=json.dumps({"n": n}))
        producer.flush(10)
    url = reverse("designer:sample_record", args=["orders"])
    response = ada.get(url, {"topic": topic})
    assert response.status_code == 200, response.content
    assert response.json()["value"] == {"n": 2} and response.json()["record"]["key"] == "k2"
    assert ada.get(url).json()["value"] == {"n": 2}  # the trigger topic is the default
    # Only the workflow's own trigger topic: never Sluice's topics, nor anybody else's.
    for other in (kafka.runs, kafka.history, kafka.definitions, "payroll"):
        refused = ada.get(url, {"topic": other})
        assert refused.status_code == 403 and topic in refused.json()["detail"], other
    # Only for users who may edit the workflow.
    ada.force_login(viewer)
    assert ada.get(url, {"topic": topic}).status_code == 403
    ada.force_login(editor_user)

    missing_topic = f"none-{uuid.uuid4().hex[:8]}"
    kafka_triggered("quiet", missing_topic, editor_user)
    missing = ada.get(reverse("designer:sample_record", args=["quiet"]))
    assert missing.status_code == 404 and "does not exist" in missing.json()["detail"]
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS}).list_topics(timeout=5).topics
    assert missing_topic not in topics  # asking did not create it
    assert ada.get(reverse("designer:sample_record", args=["greet"])).status_code == 400  # manual trigger


def test_panel_renames_a_step_unless_the_id_is_taken_or_malformed(ada):
    data = definition()
    renamed = panel(ada, data, step_id="check", submitted="1", **{"step.id": "gate", "config.condition": "trigger.n > 1"})
    event = json.loads(renamed["HX-Trigger"])["sluice:step-updated"]
    assert event["step_id"] == "check" and event["step"]["id"] == "gate"
    html = renamed.content.decode()
    assert 'data-step-id="gate"' in html and "field-errors" not in html  # edges followed the rename
    for bad, message in (("hello", "Another step is called"), ("1x", "starts with a letter")):
        refused = panel(ada, data, step_id="check", submitted="1", **{"step.id": bad, "config.condition": "trigger.n > 1"})
        assert message in refused.content.decode()
        assert json.loads(refused["HX-Trigger"])["sluice:step-updated"]["step"]["id"] == "check"
