"""Input meant to break Sluice, through every web door: a 400 (or 413) naming the field, never a 500.

Definitions (REST API, designer save and validate), run input (API, designer test run,
webhooks, the monitor's re-run), and rows already in the database that earlier versions
accepted: every page must still open.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from designer import services
from designer.models import Workflow, WorkflowVersion
from monitor.models import AuditEntry, DeadLetter, Run, StepRun
from tests.test_api_workflows import definition, errors_at, make_client


@pytest.fixture
def api(db):
    return make_client("root", superuser=True)[0]


def nested(depth, leaf="{{ trigger.n }}"):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def step(config, type_="transform", **fields):
    return {"id": "s", "type": type_, "config": config, **fields}


def with_steps(*steps, trigger=None, **top):
    data = definition()
    data.update(steps=list(steps), edges=[], **top)
    if trigger is not None:
        data["trigger"] = trigger
    return data


def produce_step(topic):
    return step({"topic": topic, "value": {"x": 1}}, "kafka_produce")


def sluice_topic(name: str) -> str:
    from django.conf import settings

    return settings.SLUICE_TOPIC_PREFIX + name


# (id, definition, the path the 400 must name). The body is sent as JSON text (lone surrogates
# travel as \ud800 escapes, as a hostile client would send them).
HOSTILE_DEFINITIONS = [
    ("lone surrogate in the name", {**definition(), "name": "Greet \ud800"}, "name"),
    ("lone surrogate in a step id", with_steps(step({"output": 1}, id="s\udfff")), "steps[0].id"),
    ("lone surrogate in a config key", with_steps(step({"output": {"\ud83d": 1}})), 'steps[0].config.output["\\ud83d"]'),
    ("lone surrogate in a template", with_steps(step({"output": "{{ trigger.n }}\udc00"})), "steps[0].config.output"),
    ("900-level nested config", with_steps(step({"output": nested(900)})), "steps[0].config.output"),
    ("expression 5,000 parentheses deep", with_steps(step({"condition": "(" * 5000 + "1" + ")" * 5000}, "branch")),
     "steps[0].config.condition"),
    ("expression with 5,000 nots", with_steps(step({"condition": "not " * 5000 + "trigger.n"}, "branch")),
     "steps[0].config.condition"),
    ("2,000 nested ifs", with_steps(step({"output": "{% if trigger.n %}" * 2000 + "x" + "{% endif %}" * 2000})),
     "steps[0].config.output"),
    ("filter 5,000 parentheses deep", with_steps(step({"output": 1}), trigger={
        "type": "kafka", "topic": "orders", "filter": "(" * 5000 + "trigger.n" + ")" * 5000}), "trigger.filter"),
    ("retry backoff 1e308", with_steps(step({"output": 1}, retry={"backoff_seconds": 1e308,
                                                                  "max_backoff_seconds": 1e308})),
     "steps[0].retry.backoff_seconds"),
    ("timeout 1e308", with_steps(step({"output": 1}, timeout_seconds=1e308)), "steps[0].timeout_seconds"),
    ("delay 1e308", with_steps(step({"seconds": 1e308}, "delay")), "steps[0].config.seconds"),
    ("cron that never fires", with_steps(step({"output": 1}), trigger={"type": "schedule", "cron": "0 0 30 2 *"}),
     "trigger.cron"),
    ("unknown trigger block", with_steps(step({"output": 1}), trigger={"type": "kafka", "topic": "orders",
                                                                      "window": {"size": "5m"}}), "trigger.window"),
    ("unknown top-level field", {**definition(), "owner": "mallory"}, "owner"),
    ("slug with a trailing newline", definition(slug="greet\n"), "slug"),
    ("step id with a trailing newline", with_steps(step({"output": 1}, id="s\n")), "steps[0].id"),
    ("topic with a trailing newline", with_steps(step({"output": 1}), trigger={"type": "kafka", "topic": "orders\n"}),
     "trigger.topic"),
    ("produce to Sluice's runs topic", with_steps(produce_step(sluice_topic("runs"))), "steps[0].config.topic"),
    ("produce to Sluice's history topic", with_steps(produce_step(sluice_topic("history"))), "steps[0].config.topic"),
    ("trigger on Sluice's definitions topic", with_steps(step({"output": 1}), trigger={
        "type": "kafka", "topic": sluice_topic("definitions")}), "trigger.topic"),
    ("wait on Sluice's runs topic", with_steps(step({"topic": sluice_topic("runs"), "correlation": "{{ trigger.n }}",
                                                     "key_expression": "event.n"}, "wait_for_event")),
     "steps[0].config.topic"),
]


@pytest.mark.parametrize("data, path", [case[1:] for case in HOSTILE_DEFINITIONS],
                         ids=[case[0] for case in HOSTILE_DEFINITIONS])
def test_hostile_definition_is_400_naming_the_field_at_every_door(api, data, path):
    body = json.dumps(data)
    created = api.generic("POST", "/api/workflows/", body, content_type="application/json")
    assert created.status_code == 400, created.content[:500]
    assert names(errors_at(created), path), created.json()
    assert Workflow.objects.count() == 0

    # Saving a new version of an existing workflow, from the API and from the designer.
    services.create_workflow(definition(), User.objects.get(username="root"))
    put = api.generic("PUT", "/api/workflows/greet/", body, content_type="application/json")
    assert put.status_code == 400 and names(errors_at(put), path), put.content[:500]
    designer = Client()
    designer.force_login(User.objects.get(username="root"))
    if not path.startswith("slug"):  # the designer saves under the workflow's own slug
        saved = designer.post("/designer/greet/save/", json.dumps({"definition": {**data, "slug": "greet"}}),
                              content_type="application/json")
        assert saved.status_code == 400, saved.content[:500]
        assert names([p["path"] for p in saved.json()["errors"]], path), saved.json()
    # The editor's continuous validation reports it, as a problem (200), not an error page.
    validated = designer.post("/designer/-/validate/", json.dumps({"definition": data}),
                              content_type="application/json")
    assert validated.status_code == 200 and names([p["path"] for p in validated.json()["problems"]], path)
    assert Workflow.objects.get(slug="greet").versions.count() == 1


def names(paths, expected) -> bool:
    """The field itself, or (for nesting too deep) the place inside it where the limit is crossed."""
    return any(found == expected or found.startswith(expected + "[") or found.startswith(expected + ".")
               for found in paths)


@pytest.fixture
def live(api, kafka):
    """`greet`, published (so runs can start)."""
    api.post("/api/workflows/", definition(), format="json")
    assert api.post("/api/workflows/greet/publish/", {}, format="json").status_code == 200
    return api


def test_run_input_over_the_limit_is_413_naming_the_limit(live, settings):
    settings.SLUICE_MAX_INPUT_BYTES = 256 * 1024
    big = {"blob": "x" * 600_000}
    response = live.post("/api/workflows/greet/runs/", {"input": big}, format="json")
    assert response.status_code == 413, response.content[:300]
    body = response.json()
    assert body["code"] == "too_large" and body["limit"] == 262144 and "262144 bytes" in body["detail"]
    assert errors_at(response) == ["input"]
    assert Run.objects.count() == 0
    assert live.post("/api/workflows/greet/runs/", {"input": {"n": 1}}, format="json").status_code == 202


def test_the_input_limit_leaves_room_below_the_broker_record_limit(settings):
    # The broker accepts records up to about 1,048,516 bytes; the start command, the first
    # history event and the run state all carry the input plus their own envelope.
    assert settings.SLUICE_MAX_INPUT_BYTES * 2 < 1_048_516


HOSTILE_INPUTS = [
    ("lone surrogate", '{"input": {"name": "\\ud800"}}', "input.name"),
    ("lone surrogate in a key", '{"input": {"\\udfff": 1}}', 'input["\\udfff"]'),
    ("900 levels deep", json.dumps({"input": nested(900, 1)}), "input" + "[0]" * 99),
    ("infinite number", '{"input": {"n": 1e999}}', "input.n"),
]


@pytest.mark.parametrize("raw, path", [case[1:] for case in HOSTILE_INPUTS], ids=[case[0] for case in HOSTILE_INPUTS])
def test_hostile_run_input_is_400_naming_the_path(live, raw, path):
    response = live.generic("POST", "/api/workflows/greet/runs/", raw, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert path in errors_at(response), response.json()
    assert Run.objects.count() == 0


def test_designer_test_run_input_limits(live, settings):
    settings.SLUICE_MAX_INPUT_BYTES = 1000
    designer = Client()
    designer.force_login(User.objects.get(username="root"))
    big = designer.post("/designer/greet/test-run/", json.dumps({"version": 1, "input": {"x": "y" * 2000}}),
                        content_type="application/json")
    assert big.status_code == 413 and "1000 bytes" in big.json()["detail"]
    bad = designer.post("/designer/greet/test-run/", '{"version": 1, "input": {"x": "\\ud800"}}',
                        content_type="application/json")
    assert bad.status_code == 400 and "input.x" in bad.json()["detail"]
    assert Run.objects.count() == 0


def test_monitor_rerun_refuses_unfit_input_on_the_page(live, settings):
    settings.SLUICE_MAX_INPUT_BYTES = 1000
    run = Run.objects.create(id="r1", workflow="greet", version=1, status="failed", created_at=timezone.now())
    page = Client()
    page.force_login(User.objects.get(username="root"))
    for text, phrase in ((json.dumps(nested(900, 1)), "nested more than 100 levels"),
                         ('{"x": "\\ud800"}', "input.x: not valid Unicode"),
                         (json.dumps({"x": "y" * 2000}), "limit of 1000 bytes"),
                         ("[" * 100_000, "nested too deeply"), ("{oops", "not valid JSON")):
        response = page.post(f"/monitor/runs/{run.id}/rerun/", {"input": text}, follow=True)
        assert response.status_code == 200 and phrase in response.content.decode(), phrase
    assert Run.objects.count() == 1


def test_webhook_body_limits(db, kafka, settings):
    from triggers.webhooks import TOKEN_HEADER, issue_token
    from tests.trigger_support import make_live

    settings.SLUICE_MAX_INPUT_BYTES = 1000
    make_live("hooked", {"type": "webhook"})
    token = issue_token("hooked")
    client = Client()
    headers = {f"HTTP_{TOKEN_HEADER.upper().replace('-', '_')}": token}
    big = client.post("/hooks/hooked/", json.dumps({"x": "y" * 2000}), content_type="application/json", **headers)
    assert big.status_code == 413 and "1000 bytes" in big.json()["detail"]
    deep = client.post("/hooks/hooked/", "[" * 100_000 + "]" * 100_000, content_type="application/json", **headers)
    assert deep.status_code == 400 and deep.json()["code"] == "parse_error"
    surrogate = client.post("/hooks/hooked/", '{"x": "\\ud800"}', content_type="application/json", **headers)
    assert surrogate.status_code == 400 and surrogate.json()["errors"][0]["path"] == "body.x"
    assert Run.objects.count() == 0


# ---- rows earlier versions accepted must never break a page -------------------------------------
@pytest.fixture
def hostile_rows(db):
    workflow = Workflow.objects.create(slug="broken\n", name="<script>alert(1)</script>", description="\x00\x07")
    version = WorkflowVersion.objects.create(workflow=workflow, number=1, definition={
        "slug": "broken\n", "trigger": {"type": "kafka", "topic": "wf.runs", "window": {}},
        "steps": [{"id": "a\n", "type": "teleport", "config": None}], "edges": "none", "layout": [1]})
    workflow.live_version = version
    workflow.save()
    Workflow.objects.create(slug="has/slash", name="Slash")
    now = timezone.now()
    run = Run.objects.create(id="odd run/with slash", workflow="broken\n", version=1, status="failed",
                             created_at=now, input={"deep": nested(60, 1)}, trigger={"type": "kafka", "of": "x/y"},
                             error="<b>boom</b>")
    StepRun.objects.create(run=run, step_id="a\n", type="teleport", status="failed", attempts=["not a dict", {}])
    Run.objects.create(id="replayed", workflow="broken\n", version=1, status="running", created_at=now,
                       trigger={"type": "replay", "of": "odd run/with slash"})
    DeadLetter.objects.create(topic="wf.dlq", partition=0, offset=1, key="\x00", value="base64:////",
                              headers={"sluice-stage": "?"}, stage="mystery", error="x" * 10_000,
                              failed_at=now, workflow="broken\n", replay={"to": "runs", "offset": "nan"})
    AuditEntry.objects.create(username="ghost", action="replay", target_type="run", target_id="odd run/with slash",
                              details={"input": nested(50, 1)})
    return run


PAGES = ["/", "/?archived=1", "/monitor/", "/monitor/dashboard/data/", "/monitor/runs/", "/monitor/runs/?q=slash",
         "/monitor/dead-letters/", "/monitor/audit/", "/designer/broken%0A/", "/designer/broken%0A/versions/",
         "/api/workflows/", "/api/runs/", "/api/dead-letters/", "/admin/designer/workflow/", "/admin/monitor/run/",
         "/admin/monitor/deadletter/"]


def test_rows_stored_before_a_rule_tightened_never_break_a_page(hostile_rows):
    admin = User.objects.create_superuser("admin", password="pw-admin-for-tests")
    client = Client()
    client.force_login(admin)
    letter = DeadLetter.objects.get()
    for path in PAGES + [f"/monitor/dead-letters/{letter.pk}/", f"/api/dead-letters/{letter.pk}/",
                         f"/admin/monitor/run/{hostile_rows.pk.replace('/', '_2F')}/change/"]:
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.content[:300])
    listing = client.get("/").content.decode()
    assert "&lt;script&gt;" in listing and "<script>alert(1)" not in listing
    assert 'href="/designer/broken%0A/"' in listing
