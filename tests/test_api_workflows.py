"""REST API for workflows through real HTTP handling, token auth, real Kafka for publish and start."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from designer.models import Workflow
from monitor.models import Run
from orchestrator.messages import LiveVersion, PublishedDefinition, StartRun
from orchestrator.runtime import codec
from orchestrator.runtime.kafka import consumer_config

ALL_PERMS = ("designer.view_workflow", "designer.add_workflow", "designer.change_workflow",
             "designer.publish_workflow", "monitor.view_run", "monitor.operate_run")


# ---- helpers shared by the other tests/test_api_*.py modules -------------------------------
def definition(slug: str = "greet", **overrides) -> dict:
    """A small valid definition: transform -> branch -> (true) transform."""
    data = {
        "slug": slug,
        "name": "Greet",
        "trigger": {"type": "manual"},
        "steps": [
            {"id": "hello", "type": "transform", "config": {"output": {"text": "Hello {{ trigger.name }}"}}},
            {"id": "check", "type": "branch", "config": {"condition": "trigger.n > 1"}},
            {"id": "big", "type": "transform", "config": {"output": {"big": True}}},
        ],
        "edges": [
            {"from": "hello", "to": "check"},
            {"from": "check", "port": "true", "to": "big"},
        ],
    }
    data.update(overrides)
    return data


def make_client(username: str, *perms: str, superuser: bool = False) -> tuple[APIClient, object]:
    """An API client authenticated with a real token of a new user holding `perms`."""
    User = get_user_model()
    if superuser:
        user = User.objects.create_superuser(username, f"{username}@example.com", None)
    else:
        user = User.objects.create_user(username, password=None)  # token only: skip password hashing
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client, user


def read_records(topic: str, decode, predicate, timeout: float = 20.0):
    """The first record on `topic` (read from the beginning) whose decoded value satisfies `predicate`."""
    consumer = Consumer(consumer_config(f"test-{uuid.uuid4().hex}"))
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            value = decode(msg.value())
            if predicate(value, msg):
                return value, msg
    finally:
        consumer.close()
    raise AssertionError(f"no matching record on {topic} within {timeout}s")


def errors_at(response) -> list[str]:
    return [error["path"] for error in response.json()["errors"]]


@pytest.fixture
def admin_client(db):
    return make_client("root", superuser=True)[0]


# ---- the main flow -----------------------------------------------------------------------
@pytest.mark.kafka
def test_create_get_list_put_versions_publish_and_run(kafka, db):
    client, author = make_client("author", *ALL_PERMS)

    created = client.post("/api/workflows/", {**definition(), "message": "first cut"}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["slug"], body["name"], body["version"], body["status"]) == ("greet", "Greet", 1, "draft")
    assert body["message"] == "first cut" and body["created_by"] == "author"
    # The save message is not part of the stored definition.
    assert "message" not in Workflow.objects.get(slug="greet").latest_version.definition

    detail = client.get("/api/workflows/greet/").json()
    assert detail["definition"]["steps"][0]["id"] == "hello"
    assert (detail["live_version"], detail["latest_version"], detail["versions_count"]) == (None, 1, 1)

    changed = definition(name="Greet people")
    saved = client.put("/api/workflows/greet/", {**changed, "base_version": 1, "message": "rename"}, format="json")
    assert saved.status_code == 201, saved.content
    assert saved.json()["version"] == 2 and saved.json()["name"] == "Greet people"
    assert "base_version" not in Workflow.objects.get(slug="greet").latest_version.definition

    versions = client.get("/api/workflows/greet/versions/").json()
    assert [v["version"] for v in versions["results"]] == [2, 1] and versions["count"] == 2
    one = client.get("/api/workflows/greet/versions/1/").json()
    assert one["definition"]["name"] == "Greet" and one["status"] == "draft"

    published = client.post("/api/workflows/greet/publish/", {}, format="json")
    assert published.status_code == 200, published.content
    assert published.json()["version"] == 2 and published.json()["status"] == "live"
    assert published.json()["published_by"] == "author"

    record, msg = read_records(
        kafka.definitions, codec.decode_definition,
        lambda value, _m: isinstance(value, PublishedDefinition) and value.slug == "greet")
    assert msg.key() == b"greet@2" and record.version == 2 and record.definition["name"] == "Greet people"
    assert record.published_by == "author"
    live, msg = read_records(kafka.definitions, codec.decode_definition,
                             lambda value, _m: isinstance(value, LiveVersion))
    assert msg.key() == b"greet" and live.version == 2

    listed = client.get("/api/workflows/?q=people").json()
    assert [(w["slug"], w["live_version"], w["latest_version"], w["status"]) for w in listed["results"]] == [
        ("greet", 2, 2, "live")]
    assert client.get("/api/workflows/?q=nothing-like-this").json()["count"] == 0

    started = client.post("/api/workflows/greet/runs/", {"input": {"name": "Ada", "n": 3}}, format="json")
    assert started.status_code == 202, started.content
    run_id = started.json()["id"]
    command, msg = read_records(kafka.runs, codec.decode_run_command,
                                lambda value, _m: isinstance(value, StartRun) and value.run_id == run_id)
    assert msg.key() == run_id.encode()
    assert (command.workflow, command.version, command.input) == ("greet", 2, {"name": "Ada", "n": 3})
    assert command.started_by == "author" and command.trigger == {"type": "manual"}

    # The run is visible at once, before any runner has touched it.
    run = client.get(f"/api/runs/{run_id}/")
    assert run.status_code == 200
    assert (run.json()["status"], run.json()["workflow"], run.json()["version"]) == ("pending", "greet", 2)
    assert run.json()["input"] == {"name": "Ada", "n": 3} and run.json()["steps"] == []


@pytest.mark.kafka
def test_publish_an_older_version_and_start_without_input(kafka, admin_client):
    admin_client.post("/api/workflows/", definition(), format="json")
    admin_client.put("/api/workflows/greet/", definition(name="Second"), format="json")
    response = admin_client.post("/api/workflows/greet/publish/", {"version": 1}, format="json")
    assert response.status_code == 200 and response.json()["version"] == 1
    detail = admin_client.get("/api/workflows/greet/").json()
    assert (detail["live_version"], detail["latest_version"], detail["status"]) == (1, 2, "changed")

    started = admin_client.post("/api/workflows/greet/runs/", format="json")
    assert started.status_code == 202
    assert Run.objects.get(id=started.json()["id"]).input == {}
    command, _ = read_records(kafka.runs, codec.decode_run_command,
                              lambda value, _m: value.run_id == started.json()["id"])
    assert command.version == 1 and command.input == {}


@pytest.mark.kafka
def test_start_accepts_any_json_input(kafka, admin_client):
    admin_client.post("/api/workflows/", definition(), format="json")
    admin_client.post("/api/workflows/greet/publish/", {}, format="json")
    started = admin_client.post("/api/workflows/greet/runs/", {"input": [1, "two", None]}, format="json")
    assert started.status_code == 202
    command, _ = read_records(kafka.runs, codec.decode_run_command,
                              lambda value, _m: value.run_id == started.json()["id"])
    assert command.input == [1, "two", None]


# ---- conflicts ---------------------------------------------------------------------------
def test_stale_base_version_is_refused_with_409_and_nothing_is_lost(db):
    ada, _ = make_client("ada", *ALL_PERMS)
    bob, _ = make_client("bob", *ALL_PERMS)
    assert ada.post("/api/workflows/", definition(), format="json").status_code == 201
    first = ada.put("/api/workflows/greet/", {**definition(name="Ada's"), "base_version": 1}, format="json")
    assert first.status_code == 201
    second = bob.put("/api/workflows/greet/", {**definition(name="Bob's"), "base_version": 1}, format="json")
    assert second.status_code == 409
    body = second.json()
    assert body["code"] == "version_conflict" and body["latest_version"] == 2 and body["saved_by"] == "ada"
    assert "version 2 by ada" in body["detail"]
    workflow = Workflow.objects.get(slug="greet")
    assert workflow.versions.count() == 2 and workflow.latest_version.definition["name"] == "Ada's"


def test_start_without_published_version_is_409(admin_client):
    admin_client.post("/api/workflows/", definition(), format="json")
    response = admin_client.post("/api/workflows/greet/runs/", {"input": {}}, format="json")
    assert response.status_code == 409
    assert response.json()["detail"] == "Workflow 'greet' has no published version: publish it first"
    assert Run.objects.count() == 0


def test_duplicate_slug_is_400_on_slug(admin_client):
    assert admin_client.post("/api/workflows/", definition(), format="json").status_code == 201
    response = admin_client.post("/api/workflows/", definition(), format="json")
    assert response.status_code == 400
    assert errors_at(response) == ["slug"] and response.json()["errors"][0]["code"] == "duplicate"


def test_put_cannot_change_the_slug(admin_client):
    admin_client.post("/api/workflows/", definition(), format="json")
    response = admin_client.put("/api/workflows/greet/", definition(slug="other"), format="json")
    assert response.status_code == 400 and errors_at(response) == ["slug"]
    assert Workflow.objects.get(slug="greet").versions.count() == 1


# ---- authentication and permissions ------------------------------------------------------
ENDPOINTS = [
    ("get", "/api/workflows/"), ("post", "/api/workflows/"), ("get", "/api/workflows/greet/"),
    ("put", "/api/workflows/greet/"), ("get", "/api/workflows/greet/versions/"),
    ("get", "/api/workflows/greet/versions/1/"), ("post", "/api/workflows/greet/publish/"),
    ("post", "/api/workflows/greet/runs/"), ("get", "/api/step-types/"), ("get", "/api/runs/"),
    ("get", "/api/runs/abc/"), ("post", "/api/runs/abc/cancel/"), ("post", "/api/runs/abc/retry/"),
    ("post", "/api/runs/abc/signal/"), ("get", "/api/schema/"), ("get", "/api/no-such-thing/"),
    ("post", "/api/workflows/greet/duplicate/"), ("post", "/api/workflows/greet/archive/"),
    ("post", "/api/workflows/greet/unarchive/"), ("post", "/api/workflows/greet/versions/1/restore/"),
]


@pytest.mark.parametrize("method,url", ENDPOINTS)
def test_every_endpoint_needs_credentials(db, method, url):
    response = getattr(APIClient(), method)(url, {}, format="json")
    assert response.status_code == 401, (url, response.status_code)
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["code"] == "not_authenticated"


def test_wrong_token_is_401(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.get("/api/workflows/")
    assert response.status_code == 401 and "Invalid token" in response.json()["detail"]


@pytest.mark.parametrize("perms,method,url,body,status,phrase", [
    (("designer.view_workflow",), "post", "/api/workflows/", definition("x"), 403, "may not create workflows"),
    (("designer.view_workflow",), "put", "/api/workflows/greet/", definition(), 403, "may not edit 'greet'"),
    (("designer.view_workflow", "designer.change_workflow"), "post", "/api/workflows/greet/publish/", {}, 403,
     "may not publish 'greet'"),
    (("designer.view_workflow", "designer.publish_workflow"), "post", "/api/workflows/greet/runs/", {}, 403,
     "may not start runs of 'greet'"),
    # A workflow the caller cannot see answers like one that does not exist.
    (("monitor.operate_run",), "post", "/api/workflows/greet/runs/", {}, 404, "No workflow 'greet'"),
    (("monitor.view_run",), "post", "/api/runs/abc/cancel/", {}, 403, "may not operate runs of workflow 'greet'"),
    (("monitor.view_run",), "post", "/api/runs/abc/signal/", {"name": "go"}, 403, "may not operate runs"),
])
def test_missing_right_is_refused_naming_the_action(admin_client, perms, method, url, body, status, phrase):
    admin_client.post("/api/workflows/", definition(), format="json")
    Run.objects.create(id="abc", workflow="greet", version=1, status="running", created_at=timezone.now())
    client, _ = make_client("limited", *perms)
    response = getattr(client, method)(url, body, format="json")
    assert response.status_code == status, response.content
    assert phrase in response.json()["detail"]
    workflow = Workflow.objects.get(slug="greet")
    assert workflow.versions.count() == 1 and workflow.live_version_id is None


def test_lists_hold_only_what_the_caller_may_see(admin_client):
    admin_client.post("/api/workflows/", definition(), format="json")
    nobody, _ = make_client("nobody")
    assert nobody.get("/api/workflows/").json()["results"] == []
    assert nobody.get("/api/workflows/greet/").status_code == 404
    # The step registry describes the product, not anyone's workflows.
    assert nobody.get("/api/step-types/").status_code == 200


def test_viewer_can_read_but_not_write(admin_client):
    admin_client.post("/api/workflows/", definition(), format="json")
    viewer, _ = make_client("viewer", "designer.view_workflow")
    assert viewer.get("/api/workflows/").json()["count"] == 1
    assert viewer.get("/api/workflows/greet/versions/1/").status_code == 200
    assert viewer.put("/api/workflows/greet/", definition(), format="json").status_code == 403


def test_session_login_works_too(admin_client):
    admin_client.post("/api/workflows/", definition(), format="json")
    get_user_model().objects.create_user("sess", password="a-long-password-1")
    user = get_user_model().objects.get(username="sess")
    user.user_permissions.add(Permission.objects.get(codename="view_workflow"))
    client = APIClient()
    assert client.login(username="sess", password="a-long-password-1")
    assert client.get("/api/workflows/greet/").json()["slug"] == "greet"


# ---- not found ---------------------------------------------------------------------------
@pytest.mark.parametrize("method,url", [
    ("get", "/api/workflows/nope/"), ("put", "/api/workflows/nope/"), ("get", "/api/workflows/nope/versions/"),
    ("get", "/api/workflows/greet/versions/9/"), ("post", "/api/workflows/nope/publish/"),
    ("post", "/api/workflows/greet/publish/"),  # body names version 7 below
    ("post", "/api/workflows/nope/runs/"), ("get", "/api/runs/nope/"), ("post", "/api/runs/nope/cancel/"),
    ("post", "/api/runs/nope/retry/"), ("post", "/api/runs/nope/signal/"), ("get", "/api/nothing/here/"),
])
def test_unknown_things_are_json_404(admin_client, method, url):
    admin_client.post("/api/workflows/", definition(), format="json")
    body = {"version": 7} if url.endswith("greet/publish/") else (
        {"name": "go"} if url.endswith("signal/") else definition())
    if "runs/nope" in url and not url.endswith("signal/"):
        body = {}
    response = getattr(admin_client, method)(url, body, format="json")
    assert response.status_code == 404, (url, response.content)
    assert response["Content-Type"] == "application/json" and response.json()["code"] == "not_found"


# ---- listing -----------------------------------------------------------------------------
def test_list_is_paginated_and_hides_archived(admin_client):
    for index in range(5):
        assert admin_client.post("/api/workflows/", definition(f"wf-{index}"), format="json").status_code == 201
    Workflow.objects.filter(slug="wf-4").update(archived=True)
    page = admin_client.get("/api/workflows/?page_size=2").json()
    assert page["count"] == 4 and [w["slug"] for w in page["results"]] == ["wf-0", "wf-1"] and page["next"]
    page3 = admin_client.get("/api/workflows/?page_size=2&page=2").json()
    assert [w["slug"] for w in page3["results"]] == ["wf-2", "wf-3"]
    archived = admin_client.get("/api/workflows/?archived=true").json()
    assert [(w["slug"], w["status"]) for w in archived["results"]] == [("wf-4", "archived")]
    assert admin_client.get("/api/workflows/?archived=all").json()["count"] == 5
    assert admin_client.get("/api/workflows/?page=99").status_code == 404


# ---- step types, schema and docs ---------------------------------------------------------
def test_step_types_come_from_the_registry(admin_client):
    from orchestrator.steps import REGISTRY

    types = admin_client.get("/api/step-types/").json()
    assert sorted(t["type"] for t in types) == sorted(REGISTRY)
    branch = next(t for t in types if t["type"] == "branch")
    assert branch["ports"] == ["true", "false"] and branch["config_schema"]["required"] == ["condition"]


def test_openapi_schema_lists_the_paths(admin_client):
    response = admin_client.get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "Sluice API"
    for path in ("/api/workflows/", "/api/workflows/{slug}/", "/api/workflows/{slug}/versions/",
                 "/api/workflows/{slug}/versions/{number}/", "/api/workflows/{slug}/publish/",
                 "/api/workflows/{slug}/runs/", "/api/runs/", "/api/runs/{run_id}/",
                 "/api/runs/{run_id}/cancel/", "/api/runs/{run_id}/retry/", "/api/runs/{run_id}/signal/",
                 "/api/step-types/"):
        assert path in schema["paths"], path
    assert "put" in schema["paths"]["/api/workflows/{slug}/"]
    assert "TokenAuth" in str(schema["components"]["securitySchemes"]) or "tokenAuth" in str(
        schema["components"]["securitySchemes"])


def test_docs_page_needs_login_and_serves_local_assets(admin_client, client):
    anonymous = client.get("/api/docs/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    get_user_model().objects.create_user("reader", password="a-long-password-1")
    client.login(username="reader", password="a-long-password-1")
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html and "/static/drf_spectacular_sidecar/" in html and "cdn" not in html.lower()


def test_openapi_schema_is_valid_and_generates_without_warnings(tmp_path):
    from django.core.management import call_command

    # --validate checks the document against the OpenAPI 3 meta-schema; warnings fail too.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert "/api/workflows/{slug}/publish/:" in (tmp_path / "schema.yaml").read_text()


# ---- duplicate, restore, archive ---------------------------------------------------------
def test_duplicate_and_restore(admin_client):
    admin_client.post("/api/workflows/", definition(), format="json")
    admin_client.put("/api/workflows/greet/", definition(name="Second"), format="json")
    copy = admin_client.post("/api/workflows/greet/duplicate/", {"slug": "greet-2"}, format="json")
    assert copy.status_code == 201 and (copy.json()["slug"], copy.json()["version"]) == ("greet-2", 1)
    assert copy.json()["name"] == "Second (copy)"
    taken = admin_client.post("/api/workflows/greet/duplicate/", {"slug": "greet-2"}, format="json")
    assert taken.status_code == 400 and errors_at(taken) == ["slug"]
    missing = admin_client.post("/api/workflows/greet/duplicate/", {}, format="json")
    assert missing.status_code == 400 and errors_at(missing) == ["slug"]

    restored = admin_client.post("/api/workflows/greet/versions/1/restore/", {}, format="json")
    assert restored.status_code == 201 and restored.json()["version"] == 3
    assert admin_client.get("/api/workflows/greet/").json()["definition"]["name"] == "Greet"
    assert admin_client.post("/api/workflows/greet/versions/9/restore/", {}, format="json").status_code == 404


@pytest.mark.kafka
def test_archiving_a_live_workflow_needs_publish_permission_and_unpublishes(kafka, admin_client):
    admin_client.post("/api/workflows/", definition(), format="json")
    admin_client.post("/api/workflows/greet/publish/", {}, format="json")
    editor, _ = make_client("editor", "designer.view_workflow", "designer.change_workflow")
    refused = editor.post("/api/workflows/greet/archive/", {}, format="json")
    assert refused.status_code == 403 and "right to publish" in refused.json()["detail"]

    archived = admin_client.post("/api/workflows/greet/archive/", {}, format="json")
    assert archived.status_code == 200
    assert (archived.json()["status"], archived.json()["live_version"]) == ("archived", None)
    read_records(kafka.definitions, codec.decode_definition,
                 lambda value, _m: isinstance(value, LiveVersion) and value.version is None)
    started = admin_client.post("/api/workflows/greet/runs/", {}, format="json")
    assert started.status_code == 409 and "archived" in started.json()["detail"]
    saved = admin_client.put("/api/workflows/greet/", definition(), format="json")
    assert saved.status_code == 409 and saved.json()["code"] == "archived"

    back = editor.post("/api/workflows/greet/unarchive/", {}, format="json")
    assert back.status_code == 200 and back.json()["status"] == "draft"
    assert editor.put("/api/workflows/greet/", definition(), format="json").status_code == 201
