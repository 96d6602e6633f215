"""The definition's one JSON Schema (orchestrator.spec.definition_schema).

It is the single source for validation, the designer's forms and the docs: the examples fit it,
the committed copy (docs/workflow.schema.json) is the same text, the forms' fields are its
fields, and it agrees with `spec.validate` on what is wrong (validate says more: expressions,
topics, the graph).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from orchestrator import spec, steps

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
SCHEMA = spec.definition_schema()
VALIDATOR = Draft202012Validator(SCHEMA)
BASE = {"slug": "demo", "trigger": {"type": "manual"},
        "steps": [{"id": "a", "type": "transform", "config": {"output": {"x": 1}}}]}


def schema_errors(document) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(document)]


def spec_errors(document) -> list[str]:
    return [problem.path for problem in spec.errors(spec.validate(document))]


def test_it_is_a_draft_2020_12_schema_with_an_id_and_titles():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"] == spec.SCHEMA_ID and SCHEMA["title"]
    for name, prop in SCHEMA["$defs"]["trigger"]["properties"].items():
        assert "$ref" in prop or (prop.get("title") and prop.get("description")), name
    for name in ("id", "name", "timeout_seconds"):
        assert SCHEMA["$defs"]["step"]["properties"][name]["title"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_every_example_fits_the_schema(path):
    document = json.loads(path.read_text())
    assert schema_errors(document) == []
    assert spec_errors(document) == []


def test_the_committed_copy_is_the_schema():
    committed = (ROOT / spec.SCHEMA_FILE).read_text()
    assert committed == spec.schema_json(), (
        f"{spec.SCHEMA_FILE} is out of date: python -m orchestrator.spec > {spec.SCHEMA_FILE}")


def test_each_step_type_config_is_checked_by_its_own_schema():
    """if/then on the step type: an editor marks a bad config while it is typed."""
    for name, step_type in steps.REGISTRY.items():
        config_def = SCHEMA["$defs"][f"config_{name}"]
        assert "$schema" not in config_def
        assert {k: v for k, v in step_type.config_schema.items() if k not in ("$schema", "title")} == \
            {k: v for k, v in config_def.items() if k != "title"}
        if step_type.config_schema.get("additionalProperties") is False:
            document = copy.deepcopy(BASE)
            document["steps"] = [{"id": "a", "type": name, "config": {"no_such_field": 1}}]
            assert schema_errors(document), name
            assert "steps[0].config.no_such_field" in spec_errors(document), name
    http = {**BASE, "steps": [{"id": "a", "type": "http", "config": {"method": "FETCH", "url": "https://x"}}]}
    assert schema_errors(http) and "steps[0].config.method" in spec_errors(http)


# Documents both the schema and the validator refuse (the schema says less than the validator,
# never something else).
BAD = [
    {**BASE, "slug": "Not A Slug"},
    {**BASE, "name": ""},
    {**BASE, "unknown": 1},
    {**BASE, "$schema": 5},
    {**BASE, "trigger": {"type": "manual", "topic": "orders"}},
    {**BASE, "trigger": {"type": "kafka"}},
    {**BASE, "trigger": {"type": "kafka", "topic": "orders", "start_from": "newest"}},
    {**BASE, "trigger": {"type": "kafka", "topic": "orders", "max_runs_per_second": 0}},
    {**BASE, "trigger": {"type": "kafka", "topic": "orders", "max_runs_per_second": 100_001}},
    {**BASE, "trigger": {"type": "kafka", "topic": "orders", "window": {"type": "tumbling", "aggregates": {}}}},
    {**BASE, "trigger": {"type": "schedule"}},
    {**BASE, "trigger": {"type": "schedule", "cron": "* * * * *", "timezone": ""}},
    {**BASE, "trigger": {"type": "sometimes"}},
    {**BASE, "on_failure": {"workflow": "Bad Slug"}},
    {**BASE, "on_failure": {"workflow": "ok", "version": 0}},
    {**BASE, "input_schema": {"type": 5}},
    {**BASE, "input_schema": []},
    {**BASE, "steps": []},
    {**BASE, "steps": [{"id": "1a", "type": "transform"}]},
    {**BASE, "steps": [{"id": "a", "type": "teleport"}]},
    {**BASE, "steps": [{"id": "a", "type": "transform", "config": {"output": {}}, "retry": {"max_attempts": 0}}]},
    {**BASE, "steps": [{"id": "a", "type": "transform", "config": {"output": {}}, "retry": {"max_attempts": 101}}]},
    {**BASE, "steps": [{"id": "a", "type": "transform", "config": {"output": {}}, "retry": {"backoff_multiplier": 11}}]},
    {**BASE, "steps": [{"id": "a", "type": "transform", "config": {"output": {}}, "timeout_seconds": 0}]},
    {**BASE, "steps": [{"id": "a", "type": "transform", "config": {"output": {}}, "name": "x" * 201}]},
    {**BASE, "edges": [{"from": "a"}]},
    {**BASE, "layout": {"a": {"x": 1}}},
]


@pytest.mark.parametrize("document", BAD, ids=[json.dumps(d, sort_keys=True)[:90] for d in BAD])
def test_schema_and_validator_refuse_the_same_mistakes(document):
    assert schema_errors(document), "the schema accepts it"
    assert spec_errors(document), "the validator accepts it"


GOOD = [
    BASE,
    {**BASE, "$schema": "../docs/workflow.schema.json"},
    {**BASE, "$schema": "https://sluice.example.com/schema/workflow.json", "name": "Demo", "description": ""},
    {**BASE, "trigger": {"type": "kafka", "topic": "orders", "start_from": "earliest", "max_runs_per_second": 5,
                         "filter": "trigger.total > 1"}},
    {**BASE, "trigger": {"type": "schedule", "cron": "*/5 * * * *", "timezone": "Europe/Paris", "input": [1]}},
    {**BASE, "trigger": {"type": "webhook", "filter": "record.method == 'POST'"}},
    {**BASE, "on_failure": {"workflow": "alert", "version": "live"}},
    {**BASE, "input_schema": {"type": "object", "required": ["id"]}},
]


@pytest.mark.parametrize("document", GOOD, ids=[json.dumps(d, sort_keys=True)[:90] for d in GOOD])
def test_schema_and_validator_accept_the_same_documents(document):
    assert schema_errors(document) == []
    assert spec_errors(document) == []


def test_a_top_level_schema_key_is_accepted_and_ignored():
    with_schema = spec.parse({**BASE, "$schema": spec.SCHEMA_URL_PATH})
    assert with_schema == spec.parse(BASE)


# ---- the forms are made from the schema ---------------------------------------------------
def test_the_forms_fields_come_from_the_schema():
    from designer import forms, window_form

    defs = SCHEMA["$defs"]
    trigger = {f.key: f for f in forms.fields_for(forms.TRIGGER_SCHEMA, {}, "trigger", forms.TRIGGER_CONDITIONS)}
    for key, field in trigger.items():
        prop = defs["trigger"]["properties"][key]
        assert field.label == prop["title"] and field.help == prop["description"], key
        assert field.choices == list(prop.get("enum") or []), key
    assert trigger["start_from"].choices == list(spec.START_FROM)
    assert trigger["type"].choices == list(spec.TRIGGER_TYPES)
    assert forms.TRIGGER_SCHEMA["properties"]["max_runs_per_second"] == defs["trigger"]["properties"]["max_runs_per_second"]
    assert forms.TRIGGER_SCHEMA["properties"]["timezone"] == defs["trigger"]["properties"]["timezone"]
    for key in ("max_attempts", "backoff_seconds", "backoff_multiplier", "max_backoff_seconds"):
        assert forms.RETRY_SCHEMA["properties"][key] == defs["retry"]["properties"][key]
    for key in ("id", "name", "timeout_seconds"):
        assert forms.STEP_FIELDS_SCHEMA["properties"][key] == defs["step"]["properties"][key]
    for key, prop in window_form.WINDOW_FORM_SCHEMA["properties"].items():
        assert prop == defs["window"]["properties"][key]
    # Each trigger type's panel shows only fields that type takes.
    for kind, shown in forms.TRIGGER_FIELDS.items():
        assert set(shown) <= set(spec.TRIGGER_FIELDS[kind] + spec.COMMON_TRIGGER_FIELDS)


def test_the_forms_define_no_schema_of_their_own():
    for name in ("designer/forms.py", "designer/window_form.py"):
        source = (ROOT / name).read_text()
        assert not re.search(r'"(minimum|maximum|enum|title|description)": ', source), name


def test_cron_lines_are_checked_in_one_place():
    """orchestrator.spec.cron_problem: validation and the schedule trigger ask it, no one else."""
    checks = re.compile(r"croniter\.is_valid|croniter\(|CroniterBadDateError")
    found = {str(path.relative_to(ROOT)) for directory in ("orchestrator", "designer", "monitor", "sluice_cli")
             for path in (ROOT / directory).rglob("*.py") if "croniter.is_valid" in path.read_text()}
    assert found == {"orchestrator/spec.py"}
    assert checks.search((ROOT / "orchestrator/spec.py").read_text())


def test_the_schema_is_served_without_a_session(client, db):
    """GET /schema/workflow.json: what editors fetch for a `$schema` URL (no login, no data)."""
    response = client.get(spec.SCHEMA_URL_PATH)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/schema+json"
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response.content.decode() == (ROOT / spec.SCHEMA_FILE).read_text() == spec.schema_json()
    assert client.post(spec.SCHEMA_URL_PATH).status_code == 405
