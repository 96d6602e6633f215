"""The webhook trigger against the real embedded broker: tokens, errors, idempotency, the record sent."""

import json
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.test import Client

from designer.models import Workflow, WorkflowVersion
from monitor.models import AuditEntry, Run
from orchestrator.messages import StartRun
from orchestrator.models import WebhookEndpoint
from tests.trigger_support import definition, make_live, read_starts
from triggers import webhooks

pytestmark = [pytest.mark.django_db, pytest.mark.kafka]


@pytest.fixture
def hook(kafka):
    make_live("orders-in", {"type": "webhook"})
    token = webhooks.sync_webhook("orders-in", definition("orders-in", {"type": "webhook"}))
    assert token
    return token


def post(slug, body, token=None, query_token=None, **headers):
    url = f"/hooks/{slug}/" + (f"?token={query_token}" if query_token else "")
    if token:
        headers["HTTP_X_SLUICE_TOKEN"] = token
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return Client().post(url, data=data, content_type="application/json", **headers)


def test_post_starts_a_run_of_the_live_version(kafka, kafka_broker, hook):
    response = post("orders-in", {"id": 7, "total": 120}, token=hook,
                    HTTP_USER_AGENT="shop/1.0", HTTP_X_REQUEST_ID="r-1", HTTP_AUTHORIZATION="Bearer nope",
                    HTTP_X_API_SECRET="hidden")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["workflow"] == "orders-in" and body["version"] == 1
    [start] = read_starts(kafka_broker, kafka.runs, 1)
    assert isinstance(start, StartRun)
    assert start.run_id == body["run_id"]
    assert (start.workflow, start.version, start.input) == ("orders-in", 1, {"id": 7, "total": 120})
    assert start.started_by == "webhook"
    assert start.trigger["type"] == "webhook" and start.trigger["received_at"]
    headers = start.trigger["headers"]
    assert headers["user-agent"] == "shop/1.0" and headers["x-request-id"] == "r-1"
    # Credentials never reach Kafka.
    assert "x-sluice-token" not in headers and "authorization" not in headers and "x-api-secret" not in headers
    assert hook not in json.dumps(start.trigger)
    run = Run.objects.get(id=body["run_id"])
    assert run.status == "pending" and run.input == {"id": 7, "total": 120}
    # Audited like every other start, by the system actor "webhook".
    entry = AuditEntry.objects.get(action="start", target_id=run.id)
    assert (entry.username, entry.user, entry.target_type) == ("webhook", None, "run")
    assert entry.details == {"workflow": "orders-in", "version": 1, "trigger": "webhook"}


def test_token_in_query_string_works_too(kafka, kafka_broker, hook):
    response = post("orders-in", {"a": 1}, query_token=hook)
    assert response.status_code == 202
    assert read_starts(kafka_broker, kafka.runs, 1)[0].input == {"a": 1}


def test_missing_and_wrong_tokens_are_refused_and_nothing_is_sent(kafka, kafka_broker, hook):
    missing = post("orders-in", {"a": 1})
    assert missing.status_code == 401
    assert missing.json()["code"] == "not_authenticated"
    assert missing.json()["errors"][0]["path"] == "headers.X-Sluice-Token"
    wrong = post("orders-in", {"a": 1}, token="not-the-token")
    assert wrong.status_code == 403
    # A valid token of another workflow does not open this one.
    make_live("other", {"type": "webhook"})
    other_token = webhooks.issue_token("other")
    assert post("orders-in", {"a": 1}, token=other_token).status_code == 403
    assert post("no-such-flow", {"a": 1}, token=hook).status_code == 403
    assert read_starts(kafka_broker, kafka.runs, 1, timeout=3) == []


def test_non_json_body_is_a_400_with_the_field(kafka, hook):
    response = post("orders-in", "{not json", token=hook)
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "body"
    assert "not valid JSON" in response.json()["detail"]


def test_get_is_not_allowed(kafka, hook):
    assert Client().get("/hooks/orders-in/", HTTP_X_SLUICE_TOKEN=hook).status_code == 405


def test_workflow_whose_live_version_has_no_webhook_trigger_is_404(kafka, kafka_broker, hook):
    workflow = Workflow.objects.get(slug="orders-in")
    version = WorkflowVersion.objects.create(workflow=workflow, number=2,
                                             definition=definition("orders-in", {"type": "manual"}))
    workflow.live_version = version
    workflow.save()
    response = post("orders-in", {"a": 1}, token=hook)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    workflow.live_version = None
    workflow.save()
    assert post("orders-in", {"a": 1}, token=hook).status_code == 404
    assert read_starts(kafka_broker, kafka.runs, 1, timeout=3) == []


def test_idempotency_key_gives_one_run_id(kafka, kafka_broker, hook):
    first = post("orders-in", {"n": 1}, token=hook, HTTP_IDEMPOTENCY_KEY="delivery-42")
    again = post("orders-in", {"n": 1}, token=hook, HTTP_IDEMPOTENCY_KEY="delivery-42")
    other = post("orders-in", {"n": 2}, token=hook, HTTP_IDEMPOTENCY_KEY="delivery-43")
    plain1 = post("orders-in", {"n": 3}, token=hook)
    plain2 = post("orders-in", {"n": 3}, token=hook)
    ids = [r.json()["run_id"] for r in (first, again, other, plain1, plain2)]
    assert ids[0] == ids[1]
    assert len(set(ids)) == 4
    starts = read_starts(kafka_broker, kafka.runs, 5)
    # Both deliveries are sent (two partitions: no total order); the engine keeps the first.
    assert sorted(s.run_id for s in starts) == sorted(ids)
    assert Run.objects.filter(id=ids[0]).count() == 1
    too_long = post("orders-in", {}, token=hook, HTTP_IDEMPOTENCY_KEY="k" * 201)
    assert too_long.status_code == 400 and too_long.json()["errors"][0]["path"] == "headers.Idempotency-Key"


def test_empty_body_starts_with_empty_input(kafka, kafka_broker, hook):
    response = Client().post("/hooks/orders-in/", data=b"", content_type="application/json",
                             HTTP_X_SLUICE_TOKEN=hook)
    assert response.status_code == 202
    assert read_starts(kafka_broker, kafka.runs, 1)[0].input == {}


def test_unreachable_kafka_is_503_not_500(kafka, hook, settings):
    from orchestrator.runtime import commands
    from orchestrator.runtime.broker import free_port

    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"
    settings.KAFKA_CLIENT_CONFIG = {"message.timeout.ms": 1500}
    commands.reset_producer()
    original = commands._produce

    def quick(topic, key, message, timeout=10.0):
        return original(topic, key, message, timeout=2.0)

    commands._produce = quick
    try:
        response = post("orders-in", {"a": 1}, token=hook)
    finally:
        commands._produce = original
        commands.reset_producer()
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"


def test_tokens_are_stored_hashed_and_rotation_invalidates_the_old_one(kafka, hook):
    endpoint = WebhookEndpoint.objects.get(slug="orders-in")
    assert hook not in endpoint.token_hash
    assert endpoint.token_hash == webhooks.hash_token(hook)
    assert webhooks.sync_webhook("orders-in", definition("orders-in", {"type": "webhook"})) is None
    new = webhooks.issue_token("orders-in")
    assert new != hook
    assert post("orders-in", {}, token=hook).status_code == 403
    assert post("orders-in", {}, token=new).status_code == 202


def test_sync_webhook_ignores_other_triggers(db):
    assert webhooks.sync_webhook("plain", definition("plain", {"type": "manual"})) is None
    assert webhooks.sync_webhook("plain", None) is None
    assert not WebhookEndpoint.objects.filter(slug="plain").exists()


def test_token_view_needs_login_and_publish_permission(kafka, hook, roles):
    url = "/hooks/orders-in/token/"
    anonymous = Client().post(url)
    assert anonymous.status_code == 401
    nobody = User.objects.create_user("nobody", password="pw-nobody-123")
    client = Client()
    client.force_login(nobody)
    assert client.post(url).status_code == 404  # a workflow one cannot see does not exist
    viewer = User.objects.create_user("viewer", password="pw-viewer-123")
    viewer.groups.add(Group.objects.get(name="Viewer"))
    client = Client()
    client.force_login(viewer)
    assert client.post(url).status_code == 403
    publisher = User.objects.create_user("publisher", password="pw-publisher-123")
    publisher.groups.add(Group.objects.get(name="Publisher"))
    client = Client()
    client.force_login(publisher)
    assert client.get(url).status_code == 405
    response = client.post(url)
    assert response.status_code == 200
    token = response.json()["token"]
    assert response.json()["url"].endswith("/hooks/orders-in/")
    assert post("orders-in", {}, token=token).status_code == 202
    assert post("orders-in", {}, token=hook).status_code == 403
    assert client.post("/hooks/missing-flow/token/").status_code == 404


def test_webhook_token_command(kafka):
    make_live("cmd-flow", {"type": "webhook"})
    out, err = StringIO(), StringIO()
    call_command("webhook_token", "cmd-flow", stdout=out, stderr=err)
    token = out.getvalue().strip()
    assert webhooks.token_matches("cmd-flow", token)
    assert token not in err.getvalue()
    with pytest.raises(CommandError, match="--rotate"):
        call_command("webhook_token", "cmd-flow", stdout=StringIO(), stderr=StringIO())
    out = StringIO()
    call_command("webhook_token", "cmd-flow", "--rotate", stdout=out, stderr=StringIO())
    assert webhooks.token_matches("cmd-flow", out.getvalue().strip())
    assert not webhooks.token_matches("cmd-flow", token)
    with pytest.raises(CommandError, match="no workflow"):
        call_command("webhook_token", "nope", stdout=StringIO(), stderr=StringIO())


def test_trigger_filter_decides_which_bodies_start_runs(kafka, kafka_broker):
    trigger = {"type": "webhook", "filter": "trigger.total > 100 and record.headers['x-shop'] == 'eu'"}
    make_live("big-orders", trigger)
    token = webhooks.sync_webhook("big-orders", definition("big-orders", trigger))
    small = post("big-orders", {"total": 5}, token=token, HTTP_X_SHOP="eu")
    assert small.status_code == 200 and small.json()["started"] is False and small.json()["run_id"] is None
    other_shop = post("big-orders", {"total": 500}, token=token, HTTP_X_SHOP="us")
    assert other_shop.json()["started"] is False
    big = post("big-orders", {"total": 500}, token=token, HTTP_X_SHOP="eu")
    assert big.status_code == 202 and big.json()["started"] is True
    starts = read_starts(kafka_broker, kafka.runs, 2, timeout=5)
    assert [s.run_id for s in starts] == [big.json()["run_id"]]
    assert starts[0].input == {"total": 500}


def test_filter_that_cannot_be_evaluated_is_a_422_naming_the_filter(kafka):
    trigger = {"type": "webhook", "filter": "trigger.total > 100"}
    make_live("strict", trigger)
    token = webhooks.sync_webhook("strict", definition("strict", trigger))
    response = post("strict", {"total": "lots"}, token=token)
    assert response.status_code == 422, response.content
    assert response.json()["errors"][0]["path"] == "trigger.filter"


def test_admin_lists_endpoints_without_their_digest(kafka, hook, admin_client):
    response = admin_client.get("/admin/orchestrator/webhookendpoint/")
    assert response.status_code == 200
    assert b"orders-in" in response.content
    endpoint = WebhookEndpoint.objects.get(slug="orders-in")
    detail = admin_client.get(f"/admin/orchestrator/webhookendpoint/{endpoint.pk}/change/")
    assert detail.status_code == 200
    assert endpoint.token_hash.encode() not in detail.content and hook.encode() not in detail.content
    assert admin_client.get("/admin/orchestrator/webhookendpoint/add/").status_code == 403


# ---- finding the webhook: the token shown once on publish, rotation through the API -----------
def test_get_and_head_are_405_even_with_a_token_and_start_nothing(kafka, kafka_broker, hook):
    for method in ("get", "head", "put"):
        response = getattr(Client(), method)(f"/hooks/orders-in/?token={hook}")
        assert response.status_code == 405, method
        assert response["Allow"] == "POST"
    assert Client().get("/hooks/orders-in/", HTTP_X_SLUICE_TOKEN=hook).status_code == 405
    assert read_starts(kafka_broker, kafka.runs, 1, timeout=3) == []


def _webhook_workflow(user, slug="hooked"):
    from designer import services

    return services.create_workflow(definition(slug, {"type": "webhook", "filter": "trigger.ok"}), user).workflow


def test_first_publish_answers_the_token_once_with_url_and_curl(kafka, kafka_broker):
    from tests.test_api_workflows import make_client

    client, user = make_client("publisher", "designer.view_workflow", "designer.publish_workflow")
    _webhook_workflow(user)
    response = client.post("/api/workflows/hooked/publish/", {}, format="json")
    assert response.status_code == 200, response.content
    hook_info = response.json()["webhook"]
    token = hook_info["token"]
    assert hook_info["url"] == "http://testserver/hooks/hooked/"
    assert hook_info["header"] == "X-Sluice-Token"
    assert hook_info["curl"].startswith("curl -X POST 'http://testserver/hooks/hooked/'")
    assert f'-H "X-Sluice-Token: {token}"' in hook_info["curl"]
    assert webhooks.token_matches("hooked", token)
    assert post("hooked", {"ok": True}, token=token).status_code == 202
    # Shown once: publishing again (the same version or a new one) does not show it again.
    again = client.post("/api/workflows/hooked/publish/", {}, format="json")
    assert again.status_code == 200 and "webhook" not in again.json()
    assert webhooks.token_matches("hooked", token)


def test_designer_publish_shows_the_new_token(kafka):
    from django.urls import reverse

    ada = User.objects.create_superuser("ada", "ada@example.com", "pw-ada-123")
    _webhook_workflow(ada)
    client = Client()
    client.force_login(ada)
    response = client.post(reverse("designer:publish", args=["hooked"]), {"version": 1}, content_type="application/json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["live"] == 1 and webhooks.token_matches("hooked", body["webhook"]["token"])
    assert body["webhook"]["token"] in body["webhook"]["curl"]


def test_rotate_through_the_api_with_an_api_token(kafka):
    from tests.test_api_workflows import make_client

    publisher, user = make_client("publisher", "designer.view_workflow", "designer.publish_workflow")
    viewer, _ = make_client("viewer", "designer.view_workflow")
    _webhook_workflow(user)
    old = webhooks.issue_token("hooked")
    assert viewer.post("/api/workflows/hooked/webhook-token/").status_code == 403
    from rest_framework.test import APIClient

    assert APIClient().post("/api/workflows/hooked/webhook-token/").status_code == 401
    assert publisher.post("/api/workflows/nope/webhook-token/").status_code == 404
    response = publisher.post("/api/workflows/hooked/webhook-token/")
    assert response.status_code == 200, response.content
    new = response.json()["token"]
    assert webhooks.token_matches("hooked", new) and not webhooks.token_matches("hooked", old)
    assert response.json()["url"].endswith("/hooks/hooked/") and new in response.json()["curl"]
    # The older door takes API tokens too (no session, no CSRF).
    again = publisher.post("/hooks/hooked/token/")
    assert again.status_code == 200 and webhooks.token_matches("hooked", again.json()["token"])
    from monitor.models import AuditEntry

    assert AuditEntry.objects.filter(action="rotate_webhook_token", target_id="hooked").count() == 2


def test_rotate_from_a_browser_session_needs_the_csrf_token(kafka):
    ada = User.objects.create_superuser("ada", "ada@example.com", "pw-ada-123")
    _webhook_workflow(ada)
    client = Client(enforce_csrf_checks=True)
    client.force_login(ada)
    url = "/api/workflows/hooked/webhook-token/"
    # As the designer sends it: a JSON body, the page's CSRF token in a header.
    assert client.post(url, "{}", content_type="application/json").status_code == 403  # no CSRF token
    csrf = client.get("/designer/hooked/").cookies["csrftoken"].value
    response = client.post(url, "{}", content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 200 and webhooks.token_matches("hooked", response.json()["token"])
