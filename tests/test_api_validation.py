"""Malformed definitions and request bodies: 400 JSON naming the field path, never a 500."""

from __future__ import annotations

import copy
import json

import pytest

from designer.models import Workflow
from monitor.models import Run
from tests.test_api_workflows import definition, errors_at, make_client


@pytest.fixture
def api(db):
    return make_client("root", superuser=True)[0]


def with_step(index: int, **changes) -> dict:
    data = definition()
    data["steps"][index].update(changes)
    return data


def without(key: str) -> dict:
    data = definition()
    del data[key]
    return data


def edited(fn) -> dict:
    data = copy.deepcopy(definition())
    fn(data)
    return data


def covers(paths: list[str], expected: str) -> bool:
    """`expected` names the field itself or a parent of the reported path."""
    return any(path == expected or path.startswith(expected + ".") or path.startswith(expected + "[")
               for path in paths)


# (id, body as Python value, expected path); the body is sent as JSON.
BAD_DEFINITIONS = [
    ("array body", [], ""),
    ("string body", "greet", ""),
    ("number body", 42, ""),
    ("null body", None, ""),
    ("missing slug", without("slug"), "slug"),
    ("slug with spaces", definition(slug="Not A Slug"), "slug"),
    ("slug not a string", definition(slug=5), "slug"),
    ("empty slug", definition(slug=""), "slug"),
    ("name not a string", definition(name=["x"]), "name"),
    ("missing steps", without("steps"), "steps"),
    ("steps not a list", definition(steps={"hello": {}}), "steps"),
    ("no steps", edited(lambda d: (d.update(steps=[], edges=[]))), "steps"),
    ("step not an object", edited(lambda d: d["steps"].__setitem__(0, "hello")), "steps[0]"),
    ("step without id", edited(lambda d: d["steps"][0].pop("id")), "steps[0].id"),
    ("step id not a string", with_step(2, id=7), "steps[2].id"),
    ("duplicate step id", with_step(2, id="hello"), "steps[2].id"),
    ("unknown step type", with_step(0, type="teleport"), "steps[0].type"),
    ("step without type", edited(lambda d: d["steps"][0].pop("type")), "steps[0].type"),
    ("config not an object", with_step(0, config="output"), "steps[0].config"),
    ("transform without output", with_step(0, config={}), "steps[0].config"),
    ("unknown config field", with_step(0, config={"output": {}, "extra": 1}), "steps[0].config"),
    ("template syntax error", with_step(0, config={"output": {"x": "{{ trigger. }}"}}), "steps[0].config.output"),
    ("bad branch condition", with_step(1, config={"condition": "trigger.n >"}), "steps[1].config.condition"),
    ("retry not an object", with_step(0, retry=3), "steps[0].retry"),
    ("retry max_attempts zero", with_step(0, retry={"max_attempts": 0}), "steps[0].retry.max_attempts"),
    ("retry unknown field", with_step(0, retry={"tries": 3}), "steps[0].retry"),
    ("negative timeout", with_step(0, timeout_seconds=-1), "steps[0].timeout_seconds"),
    ("edges not a list", definition(edges={"from": "hello"}), "edges"),
    ("edge to unknown step", edited(lambda d: d["edges"][0].update(to="ghost")), "edges[0].to"),
    ("edge from unknown step", edited(lambda d: d["edges"][1].update({"from": "ghost"})), "edges[1].from"),
    ("edge without to", edited(lambda d: d["edges"][0].pop("to")), "edges[0].to"),
    ("unknown branch port", edited(lambda d: d["edges"][1].update(port="maybe")), "edges[1].port"),
    ("cycle", edited(lambda d: d["edges"].append({"from": "big", "to": "hello"})), "edges"),
    ("trigger not an object", definition(trigger="manual"), "trigger"),
    ("unknown trigger type", definition(trigger={"type": "carrier-pigeon"}), "trigger.type"),
    ("kafka trigger without topic", definition(trigger={"type": "kafka"}), "trigger.topic"),
    ("bad kafka filter", definition(trigger={"type": "kafka", "topic": "orders", "filter": "trigger.total >"}),
     "trigger.filter"),
    ("bad cron", definition(trigger={"type": "schedule", "cron": "every tuesday"}), "trigger.cron"),
    ("kafka_produce without topic", with_step(2, type="kafka_produce", config={"value": {}}), "steps[2].config"),
    ("python handler name", with_step(2, type="python", config={"handler": "not a name!"}),
     "steps[2].config.handler"),
    ("layout not an object", definition(layout=[1, 2]), "layout"),
    ("save message not a string", {**definition(), "message": {"text": "hi"}}, "message"),
]


@pytest.mark.parametrize("body,expected", [(b, e) for _, b, e in BAD_DEFINITIONS],
                         ids=[name for name, _, _ in BAD_DEFINITIONS])
def test_bad_definition_is_400_with_the_field_path(api, body, expected):
    response = api.post("/api/workflows/", json.dumps(body), content_type="application/json")
    assert response.status_code == 400, response.content
    payload = response.json()
    assert payload["detail"] and payload["errors"], payload
    assert all(set(error) == {"path", "step_id", "code", "message", "severity"} for error in payload["errors"])
    assert {error["severity"] for error in payload["errors"]} == {"error"}
    assert covers(errors_at(response), expected), (expected, payload["errors"])
    assert Workflow.objects.count() == 0


def test_step_problems_name_the_step_id(api):
    response = api.post("/api/workflows/", with_step(1, type="teleport"), format="json")
    assert response.status_code == 400
    assert {"path": "steps[1].type", "step_id": "check"}.items() <= response.json()["errors"][0].items()


def test_every_problem_is_reported_at_once(api):
    data = definition(trigger={"type": "carrier-pigeon"})
    data["steps"][0]["type"] = "teleport"
    data["edges"][1]["to"] = "ghost"
    paths = errors_at(api.post("/api/workflows/", data, format="json"))
    assert covers(paths, "trigger.type") and covers(paths, "steps[0].type") and covers(paths, "edges[1].to")


def test_bad_definition_on_put_leaves_versions_alone(api):
    api.post("/api/workflows/", definition(), format="json")
    response = api.put("/api/workflows/greet/", with_step(0, type="teleport"), format="json")
    assert response.status_code == 400 and covers(errors_at(response), "steps[0].type")
    assert Workflow.objects.get(slug="greet").versions.count() == 1


@pytest.mark.parametrize("raw", [b'{"slug": ', b"{'slug': 'x'}", b"\xff\xfe", b"[1, 2,]", b"NaN-ish"])
def test_malformed_json_is_400(api, raw):
    response = api.generic("POST", "/api/workflows/", raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "parse_error" and errors_at(response) == [""]


def test_pathologically_nested_json_is_a_parse_error(api):
    raw = "[" * 100_000 + "]" * 100_000
    response = api.generic("POST", "/api/workflows/", raw, content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "parse_error"


def test_body_over_the_upload_limit_is_413(api, settings):
    body = json.dumps({**definition(), "description": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})
    response = api.post("/api/workflows/", body, content_type="application/json")
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert Workflow.objects.count() == 0


@pytest.mark.parametrize("url,detail", [
    ("/api/workflows/nope/", "No workflow 'nope'"),
    ("/api/workflows/greet/versions/99999999999999999999999/", "has no version 99999999999999999999999"),
    ("/api/runs/nope/", "No run 'nope'"),
])
def test_not_found_says_what_is_missing(api, url, detail):
    api.post("/api/workflows/", definition(), format="json")
    response = api.get(url)
    assert response.status_code == 404 and detail in response.json()["detail"]


@pytest.mark.parametrize("content_type,raw", [
    ("text/plain", json.dumps(definition())),
    ("application/x-www-form-urlencoded", "slug=greet&name=Greet"),
    ("application/xml", "<workflow slug='greet'/>"),
])
def test_non_json_content_types_are_refused(api, content_type, raw):
    response = api.generic("POST", "/api/workflows/", raw, content_type=content_type)
    # 415 Unsupported Media Type: the standard answer, JSON body in the usual shape.
    assert response.status_code == 415, response.content
    assert response.json()["code"] == "unsupported_media_type" and "Unsupported media type" in response.json()["detail"]
    assert Workflow.objects.count() == 0


def test_body_without_content_type_is_refused_not_ignored(api):
    api.post("/api/workflows/", definition(), format="json")
    response = api.generic("POST", "/api/workflows/greet/publish/", b'{"version": 1}', content_type="")
    assert response.status_code == 415 and "Content-Type: application/json" in response.json()["detail"]
    assert Workflow.objects.get(slug="greet").live_version_id is None


# Bodies and query strings of the other endpoints: (method, url, body, expected path).
BAD_REQUESTS = [
    ("post", "/api/workflows/greet/publish/", {"version": "latest"}, "version"),
    ("post", "/api/workflows/greet/publish/", {"version": 0}, "version"),
    ("post", "/api/workflows/greet/publish/", {"version": True}, "version"),
    ("post", "/api/workflows/greet/publish/", {"versoin": 1}, "versoin"),
    ("post", "/api/workflows/greet/publish/", [1], ""),
    ("post", "/api/workflows/greet/publish/", {"version": 2**40}, "version"),
    ("post", "/api/workflows/greet/runs/", {"inputs": {}}, "inputs"),
    ("post", "/api/workflows/greet/runs/", "just text", ""),
    ("put", "/api/workflows/greet/", {**definition(), "base_version": "one"}, "base_version"),
    ("put", "/api/workflows/greet/", {**definition(), "base_version": -1}, "base_version"),
    ("put", "/api/workflows/greet/", {**definition(), "base_version": 10**30}, "base_version"),
    ("post", "/api/runs/r1/signal/", {}, "name"),
    ("post", "/api/runs/r1/signal/", {"name": ""}, "name"),
    ("post", "/api/runs/r1/signal/", {"name": "go", "extra": 1}, "extra"),
    ("post", "/api/runs/r1/cancel/", {"reason": ["no"]}, "reason"),
    ("post", "/api/runs/r1/retry/", {"force": True}, "force"),
    ("get", "/api/runs/?status=exploded", None, "status"),
    ("get", "/api/workflows/?archived=maybe", None, "archived"),
]


@pytest.mark.parametrize("method,url,body,expected", BAD_REQUESTS,
                         ids=[f"{m} {u} {e or 'body'}" for m, u, _, e in BAD_REQUESTS])
def test_bad_request_body_is_400_with_the_field_path(api, method, url, body, expected):
    from django.utils import timezone

    api.post("/api/workflows/", definition(), format="json")
    Run.objects.create(id="r1", workflow="greet", version=1, status="running", created_at=timezone.now())
    if method == "get":
        response = api.get(url)
    else:
        response = getattr(api, method)(url, json.dumps(body), content_type="application/json")
    assert response.status_code == 400, response.content
    assert expected in errors_at(response), response.json()
    workflow = Workflow.objects.get(slug="greet")
    assert workflow.live_version_id is None and workflow.versions.count() == 1
