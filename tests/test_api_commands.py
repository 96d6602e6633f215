"""The API's command-line entry points: issue_token and load_examples."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from designer.models import Workflow
from orchestrator import spec
from orchestrator.messages import PublishedDefinition
from orchestrator.runtime import codec
from orchestrator.steps import REGISTRY
from tests.test_api_workflows import read_records

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()


# ---- issue_token -------------------------------------------------------------------------
def test_issue_token_prints_a_working_token_and_keeps_it(db):
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-not-used-123")
    key = run("issue_token", "ops")
    assert Token.objects.get(user=user).key == key and len(key) == 40
    assert run("issue_token", "ops") == key  # same token on a second call

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/workflows/").status_code == 200


def test_rotate_replaces_the_token_and_the_old_one_stops_working(db):
    get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-not-used-123")
    old = run("issue_token", "ops")
    new = run("issue_token", "ops", "--rotate")
    assert new != old
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {old}")
    assert client.get("/api/workflows/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Token {new}")
    assert client.get("/api/workflows/").status_code == 200


def test_issue_token_for_unknown_or_inactive_user_fails_clearly(db):
    with pytest.raises(CommandError, match="No user called 'ghost'"):
        run("issue_token", "ghost")
    get_user_model().objects.create_user("gone", password="pw-not-used-123", is_active=False)
    with pytest.raises(CommandError, match="inactive"):
        run("issue_token", "gone")
    assert Token.objects.count() == 0


# ---- examples ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_every_example_is_valid_and_uses_registered_step_types(path):
    data = json.loads(path.read_text())
    assert spec.validate(data) == []
    assert {step["type"] for step in data["steps"]} <= set(REGISTRY)
    assert data["slug"] == path.stem and data.get("description")


def test_there_are_enough_examples_to_show_the_product():
    slugs = {json.loads(p.read_text())["slug"] for p in EXAMPLES.glob("*.json")}
    assert {"hello", "order-fulfilment", "flaky-with-retries", "expense-approval"} <= slugs
    documents = [json.loads(p.read_text()) for p in EXAMPLES.glob("*.json")]
    kinds = {step["type"] for document in documents for step in document["steps"]}
    assert {"transform", "branch", "python", "kafka_produce", "approval", "fail", "lookup", "subworkflow", "foreach",
            "celery_task"} <= kinds
    assert any("window" in document["trigger"] for document in documents)
    assert any("on_failure" in document for document in documents)
    assert any("input_schema" in document for document in documents)


@pytest.mark.kafka
def test_load_examples_publishes_and_is_idempotent(kafka, db):
    count = len(list(EXAMPLES.glob("*.json")))
    first = run("load_examples", "--publish").splitlines()
    assert len(first) == count and all(": created (version 1), published" in line for line in first), first
    assert Workflow.objects.filter(live_version__number=1).count() == count

    record, _ = read_records(kafka.definitions, codec.decode_definition,
                             lambda value, _m: isinstance(value, PublishedDefinition) and value.slug == "hello")
    assert record.version == 1 and record.definition["steps"][1]["config"]["handler"] == "demo.echo"

    again = run("load_examples", "--publish").splitlines()
    assert all(": unchanged (version 1)" in line for line in again), again
    assert sum(w.versions.count() for w in Workflow.objects.all()) == count


def test_load_examples_updates_a_changed_example_and_reports_invalid_ones(db, tmp_path):
    hello = json.loads((EXAMPLES / "hello.json").read_text())
    (tmp_path / "hello.json").write_text(json.dumps(hello))
    assert run("load_examples", "--dir", str(tmp_path)) == "hello: created (version 1)"
    hello["name"] = "Hello again"
    (tmp_path / "hello.json").write_text(json.dumps(hello))
    assert run("load_examples", "--dir", str(tmp_path)) == "hello: updated (version 2)"
    assert Workflow.objects.get(slug="hello").name == "Hello again"

    # Someone edits the example in Sluice: reloading keeps their version.
    from designer import services

    edited = dict(hello, name="Our hello")
    services.save_version(Workflow.objects.get(slug="hello"), edited, None, message="tweaked")
    hello["name"] = "Hello from the file"
    (tmp_path / "hello.json").write_text(json.dumps(hello))
    assert run("load_examples", "--dir", str(tmp_path)) == (
        "hello: kept (version 3): edited in Sluice since it was loaded")
    assert Workflow.objects.get(slug="hello").name == "Our hello"

    broken = dict(hello, slug="broken")
    broken["steps"] = [dict(hello["steps"][0], type="teleport")]
    broken["edges"] = []
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(CommandError, match="invalid example definitions: broken"):
        run("load_examples", "--dir", str(tmp_path))
    assert not Workflow.objects.filter(slug="broken").exists()
