"""designer.forms (schema -> side-panel fields and back) and designer.diff (version diff)."""

from __future__ import annotations

from django.http import QueryDict

from designer import forms
from designer.diff import changed_paths, diff_definitions
from orchestrator import steps

HTTP = steps.get("http")


def post(**fields) -> QueryDict:
    data = QueryDict(mutable=True)
    for key, value in fields.items():
        data[key.replace("__", ".")] = value
    return data


def test_each_schema_type_gets_its_widget():
    fields = {f.key: f for f in forms.fields_for(HTTP.config_schema, {}, "config", HTTP.condition_fields)}
    assert fields["method"].widget == "select" and "POST" in fields["method"].choices
    assert fields["url"].widget == "template" and fields["url"].required
    assert fields["headers"].widget == "json"
    assert fields["follow_redirects"].widget == "boolean"
    assert fields["timeout_seconds"].widget == "number"
    branch = steps.get("branch")
    condition = forms.fields_for(branch.config_schema, {}, "config", branch.condition_fields)[0]
    assert condition.widget == "condition"


def test_widget_rules_without_a_registry():
    assert forms.widget_for({"type": "integer"}, "n", ()) == "integer"
    assert forms.widget_for({"type": ["number", "null"]}, "n", ()) == "number"
    assert forms.widget_for({"type": ["string", "object"]}, "v", ()) == "json"
    assert forms.widget_for({"type": "string"}, "when", ("when",)) == "condition"
    assert forms.widget_for({"type": "string", "enum": ["a"]}, "x", ()) == "select"
    assert forms.widget_for({}, "anything", ()) == "json"


def test_plain_strings_are_text_and_only_declared_templates_are_templates():
    # A handler name or a topic is typed as it is: labelling it "template" would promise {{ }}.
    python = steps.get("python")
    handler = forms.fields_for(python.config_schema, {}, "config", python.condition_fields)[0]
    assert handler.key == "handler" and handler.widget == "text"
    wait = {f.key: f for f in forms.fields_for(steps.get("wait_for_event").config_schema, {}, "config")}
    assert wait["topic"].widget == "text" and wait["correlation"].widget == "template"
    assert forms.widget_for({"type": "string"}, "name", ()) == "text"
    assert forms.widget_for({"type": "string", "x-widget": "template"}, "url", ()) == "template"


def test_every_trigger_field_has_a_place_in_the_panel():
    assert forms.TRIGGER_FIELDS["webhook"] == ("filter",)
    assert set(forms.TRIGGER_FIELDS["kafka"]) == {"topic", "filter", "start_from", "max_runs_per_second"}
    assert set(forms.TRIGGER_FIELDS["schedule"]) == {"cron", "timezone", "input"}
    kafka = {f.key: f for f in forms.fields_for(forms.TRIGGER_SCHEMA, {}, "trigger", forms.TRIGGER_CONDITIONS,
                                                 only=("type",) + forms.TRIGGER_FIELDS["kafka"])}
    assert kafka["start_from"].widget == "select"
    assert kafka["start_from"].choices == ["published", "earliest", "latest"]
    assert kafka["start_from"].placeholder == "published" and not kafka["start_from"].required
    assert kafka["filter"].widget == "condition"
    schedule = {f.key: f for f in forms.fields_for(forms.TRIGGER_SCHEMA, {"input": {"report": "daily"}}, "trigger",
                                                    only=forms.TRIGGER_FIELDS["schedule"])}
    assert schedule["timezone"].widget == "text" and schedule["timezone"].placeholder == "UTC"
    assert schedule["input"].widget == "json" and '"report": "daily"' in schedule["input"].value


def test_defaults_are_placeholders_not_values():
    fields = {f.key: f for f in forms.fields_for(HTTP.config_schema, {"url": "https://x"}, "config")}
    assert fields["url"].value == "https://x"
    assert fields["method"].value == "" and fields["method"].placeholder == "GET"


def test_read_section_parses_types_and_keeps_old_value_on_bad_input():
    fields = forms.fields_for(HTTP.config_schema, {}, "config", HTTP.condition_fields)
    old = {"url": "https://old", "headers": {"a": "1"}}
    values = forms.read_section(fields, post(**{
        "config__url": "https://api.example.com/{{ trigger.id }}", "config__method": "POST",
        "config__headers": "{not json", "config__timeout_seconds": "2.5",
        "config__follow_redirects": "on", "config__follow_redirects__present": "1",
    }), HTTP.config_schema, old)
    assert values["url"] == "https://api.example.com/{{ trigger.id }}"
    assert values["method"] == "POST" and values["timeout_seconds"] == 2.5 and values["follow_redirects"] is True
    assert values["headers"] == {"a": "1"}  # unreadable JSON keeps the old headers
    by_key = {f.key: f for f in fields}
    assert by_key["headers"].errors and "not valid JSON" in by_key["headers"].errors[0]
    assert by_key["headers"].value == "{not json"  # what the user typed stays in the box


def test_read_section_reports_schema_errors_on_the_field():
    fields = forms.fields_for(forms.RETRY_SCHEMA, {}, "retry")
    forms.read_section(fields, post(retry__max_attempts="0", retry__backoff_seconds="abc"), forms.RETRY_SCHEMA, {})
    by_key = {f.key: f for f in fields}
    assert by_key["backoff_seconds"].errors == ["Backoff (seconds) must be a number"]
    assert by_key["max_attempts"].errors and "minimum" in by_key["max_attempts"].errors[0].lower()


def test_missing_required_field_is_reported_on_it():
    fields = forms.fields_for(HTTP.config_schema, {}, "config")
    values = forms.read_section(fields, post(config__url=""), HTTP.config_schema, {})
    assert "url" not in values
    assert {f.key: f for f in fields}["url"].errors == ["This field is required"]


def test_context_names_list_upstream_steps_only():
    definition = {
        "trigger": {"type": "kafka", "topic": "orders"},
        "steps": [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "d", "to": "c"}],
    }
    assert forms.context_names(definition, "c") == [
        "trigger", "record", "run", "steps.a.output", "steps.b.output", "steps.d.output", "secret('NAME')"]
    assert forms.context_names(definition, "a") == ["trigger", "record", "run", "secret('NAME')"]
    # A webhook's filter sees the request as `record`; its steps do not.
    webhook = {**definition, "trigger": {"type": "webhook"}}
    assert forms.context_names(webhook, None) == ["trigger", "record", "run", "secret('NAME')"]
    assert "record" not in forms.context_names(webhook, "a")
    manual = {**definition, "trigger": {"type": "manual"}}
    assert "record" not in forms.context_names(manual, "b")


def test_diff_names_added_removed_and_changed_fields():
    old = {
        "slug": "s", "name": "One", "trigger": {"type": "manual"},
        "steps": [{"id": "a", "type": "http", "config": {"url": "https://a", "method": "GET"}},
                  {"id": "gone", "type": "fail", "config": {}}],
        "edges": [{"from": "a", "to": "gone"}], "layout": {"a": {"x": 0, "y": 0}},
    }
    new = {
        "slug": "s", "name": "Two", "trigger": {"type": "kafka", "topic": "t"},
        "steps": [{"id": "a", "type": "http", "config": {"url": "https://b", "method": "GET"},
                   "retry": {"max_attempts": 3}},
                  {"id": "new", "type": "branch", "config": {"condition": "true"}}],
        "edges": [{"from": "a", "to": "new"}, {"from": "new", "to": "a", "port": "false"}],
        "layout": {"a": {"x": 10, "y": 0}},
    }
    diff = diff_definitions(old, new)
    assert diff.steps_added == ["new"] and diff.steps_removed == ["gone"]
    assert [(c.id, c.fields) for c in diff.steps_changed] == [("a", ["config.url", "retry"])]
    assert diff.edges_added == ["a → new", "new → a [false]"] and diff.edges_removed == ["a → gone"]
    assert diff.trigger_fields == ["topic", "type"] and diff.workflow_fields == ["name"]
    assert diff.layout_changed and not diff.is_empty
    assert diff_definitions(new, new).is_empty


def test_changed_paths_recurses_into_objects_only():
    assert changed_paths({"a": {"b": 1, "c": [1]}}, {"a": {"b": 2, "c": [1, 2]}}) == ["a.b", "a.c"]
    assert changed_paths({"x": 1}, {}) == ["x"]
