"""spec.validate / spec.parse: every problem reported with its path, step id and code."""

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import spec

# The example of DESIGN.md section 4, verbatim.
DESIGN_EXAMPLE = json.loads("""
{
  "slug": "order-fulfilment",
  "name": "Order fulfilment",
  "trigger": {"type": "kafka", "topic": "orders", "filter": "trigger.total > 100"},
  "steps": [
    {"id": "check", "type": "transform", "config": {"output": {"ok": "{{ trigger.total > 0 }}"}}},
    {"id": "charge", "type": "http",
     "config": {"method": "POST", "url": "https://pay.example/charge", "json": {"id": "{{ trigger.id }}"}},
     "retry": {"max_attempts": 5, "backoff_seconds": 1, "backoff_multiplier": 2, "max_backoff_seconds": 60},
     "timeout_seconds": 10},
    {"id": "route", "type": "branch", "config": {"condition": "steps.charge.output.status == 200"}},
    {"id": "ship", "type": "kafka_produce", "config": {"topic": "shipments", "value": "{{ trigger }}"}},
    {"id": "refund", "type": "python", "config": {"handler": "shop.handlers.refund"}}
  ],
  "edges": [
    {"from": "check", "to": "charge"},
    {"from": "charge", "to": "route"},
    {"from": "route", "port": "true", "to": "ship"},
    {"from": "route", "port": "false", "to": "refund"}
  ],
  "layout": {"check": {"x": 40, "y": 80}}
}
""")


def example():
    return copy.deepcopy(DESIGN_EXAMPLE)


def two_steps(**first_step_fields):
    """A small valid definition; the first step takes the given fields."""
    first = {"id": "a", "type": "transform", "config": {"output": 1}}
    first.update(first_step_fields)
    return {
        "slug": "two",
        "trigger": {"type": "manual"},
        "steps": [first, {"id": "b", "type": "transform", "config": {"output": 2}}],
        "edges": [{"from": "a", "to": "b"}],
    }


def with_step(step, edges=None):
    definition = {"slug": "one", "trigger": {"type": "manual"}, "steps": [step]}
    if edges is not None:
        definition["edges"] = edges
    return definition


def mutate(change):
    definition = example()
    change(definition)
    return definition


def set_path(path, value):
    def change(definition):
        target = definition
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
    return change


def delete_path(path):
    def change(definition):
        target = definition
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]
    return change


def add_edge(edge):
    return lambda definition: definition["edges"].append(edge)


def add_step(step):
    return lambda definition: definition["steps"].append(step)


# (name, definition, expected path, expected step_id, expected code)
MALFORMED = [
    ("slug missing", mutate(delete_path(["slug"])), "slug", None, "required"),
    ("slug uppercase", mutate(set_path(["slug"], "Order Fulfilment")), "slug", None, "invalid-slug"),
    ("slug too long", mutate(set_path(["slug"], "a" * 101)), "slug", None, "invalid-slug"),
    ("slug not a string", mutate(set_path(["slug"], 7)), "slug", None, "type"),
    ("name blank", mutate(set_path(["name"], "  ")), "name", None, "blank"),
    ("trigger missing", mutate(delete_path(["trigger"])), "trigger", None, "required"),
    ("trigger not an object", mutate(set_path(["trigger"], "kafka")), "trigger", None, "type"),
    ("trigger type unknown", mutate(set_path(["trigger", "type"], "email")), "trigger.type", None, "unknown-type"),
    ("kafka trigger without topic", mutate(delete_path(["trigger", "topic"])), "trigger.topic", None, "required"),
    ("kafka topic with spaces", mutate(set_path(["trigger", "topic"], "my orders")), "trigger.topic", None,
     "invalid-topic"),
    ("bad filter syntax", mutate(set_path(["trigger", "filter"], "trigger.total >")), "trigger.filter", None,
     "bad-expression"),
    ("filter names steps", mutate(set_path(["trigger", "filter"], "steps.check.output")), "trigger.filter", None,
     "unknown-name"),
    ("schedule without cron", mutate(set_path(["trigger"], {"type": "schedule"})), "trigger.cron", None, "required"),
    ("schedule with bad cron", mutate(set_path(["trigger"], {"type": "schedule", "cron": "61 * * * *"})),
     "trigger.cron", None, "bad-cron"),
    ("schedule with 6 fields", mutate(set_path(["trigger"], {"type": "schedule", "cron": "0 0 * * * *"})),
     "trigger.cron", None, "bad-cron"),
    ("schedule with bad timezone",
     mutate(set_path(["trigger"], {"type": "schedule", "cron": "0 * * * *", "timezone": "Mars/Olympus"})),
     "trigger.timezone", None, "bad-timezone"),
    ("steps missing", mutate(delete_path(["steps"])), "steps", None, "required"),
    ("steps not a list", mutate(set_path(["steps"], {"check": {}})), "steps", None, "type"),
    ("steps empty", {"slug": "x", "trigger": {"type": "manual"}, "steps": []}, "steps", None, "empty"),
    ("step not an object", mutate(set_path(["steps", 4], "refund")), "steps[4]", None, "type"),
    ("step id missing", mutate(delete_path(["steps", 4, "id"])), "steps[4].id", None, "required"),
    ("step id with hyphen", mutate(set_path(["steps", 4, "id"], "re-fund")), "steps[4].id", None, "invalid-id"),
    ("step id starting with digit", mutate(set_path(["steps", 4, "id"], "1refund")), "steps[4].id", None,
     "invalid-id"),
    ("duplicate step id", mutate(set_path(["steps", 4, "id"], "ship")), "steps[4].id", "ship", "duplicate-id"),
    ("step type unknown", mutate(set_path(["steps", 3, "type"], "kafka")), "steps[3].type", "ship", "unknown-type"),
    ("step type missing", mutate(delete_path(["steps", 0, "type"])), "steps[0].type", "check", "required"),
    ("config not an object", mutate(set_path(["steps", 1, "config"], "POST")), "steps[1].config", "charge", "type"),
    ("http url missing", mutate(delete_path(["steps", 1, "config", "url"])), "steps[1].config.url", "charge",
     "required"),
    ("http method not allowed", mutate(set_path(["steps", 1, "config", "method"], "FETCH")),
     "steps[1].config.method", "charge", "schema"),
    ("http header not a string", mutate(set_path(["steps", 1, "config", "headers"], {"X-Count": 3})),
     "steps[1].config.headers[\"X-Count\"]", "charge", "schema"),
    ("http expected_status bad item", mutate(set_path(["steps", 1, "config", "expected_status"], [200, "2xy"])),
     "steps[1].config.expected_status[1]", "charge", "schema"),
    ("http json and body both", mutate(set_path(["steps", 1, "config", "body"], "raw")), "steps[1].config.body",
     "charge", "invalid-config"),
    ("unknown config field", mutate(set_path(["steps", 1, "config", "verb"], "POST")), "steps[1].config.verb",
     "charge", "unknown-field"),
    ("bad template", mutate(set_path(["steps", 0, "config", "output"], {"ok": "{{ trigger.total > }}"})),
     "steps[0].config.output.ok", "check", "bad-template"),
    ("unclosed block", mutate(set_path(["steps", 0, "config", "output"], ["{% if trigger.a %}yes"])),
     "steps[0].config.output[0]", "check", "bad-template"),
    ("bad condition", mutate(set_path(["steps", 2, "config", "condition"], "steps.charge.output.status = 200")),
     "steps[2].config.condition", "route", "bad-expression"),
    ("condition with braces is not an expression",
     mutate(set_path(["steps", 2, "config", "condition"], "{{ steps.charge.output.ok }}")),
     "steps[2].config.condition", "route", "bad-expression"),
    ("unknown name in template", mutate(set_path(["steps", 3, "config", "value"], "{{ trigger_data }}")),
     "steps[3].config.value", "ship", "unknown-name"),
    ("reference to unknown step", mutate(set_path(["steps", 2, "config", "condition"], "steps.pay.output.ok")),
     "steps[2].config.condition", "route", "unknown-step"),
    ("reference by subscript to unknown step",
     mutate(set_path(["steps", 3, "config", "value"], "{{ steps['pay'].output }}")),
     "steps[3].config.value", "ship", "unknown-step"),
    ("branch without condition", mutate(set_path(["steps", 2, "config"], {})), "steps[2].config.condition", "route",
     "required"),
    ("delay with words", with_step({"id": "wait", "type": "delay", "config": {"seconds": "five"}}),
     "steps[0].config.seconds", "wait", "schema"),
    ("delay negative", with_step({"id": "wait", "type": "delay", "config": {"seconds": -1}}),
     "steps[0].config.seconds", "wait", "schema"),
    ("wait_for_event key expression uses trigger",
     with_step({"id": "w", "type": "wait_for_event",
                "config": {"topic": "paid", "correlation": "{{ trigger.id }}", "key_expression": "trigger.id"}}),
     "steps[0].config.key_expression", "w", "unknown-name"),
    ("python handler name with spaces", mutate(set_path(["steps", 4, "config", "handler"], "shop refund")),
     "steps[4].config.handler", "refund", "schema"),
    ("retry not an object", mutate(set_path(["steps", 1, "retry"], 5)), "steps[1].retry", "charge", "type"),
    ("retry max_attempts zero", mutate(set_path(["steps", 1, "retry", "max_attempts"], 0)),
     "steps[1].retry.max_attempts", "charge", "invalid-retry"),
    ("retry max_attempts too many", mutate(set_path(["steps", 1, "retry", "max_attempts"], 101)),
     "steps[1].retry.max_attempts", "charge", "invalid-retry"),
    ("retry max_attempts float", mutate(set_path(["steps", 1, "retry", "max_attempts"], 2.5)),
     "steps[1].retry.max_attempts", "charge", "invalid-retry"),
    ("retry negative backoff", mutate(set_path(["steps", 1, "retry", "backoff_seconds"], -1)),
     "steps[1].retry.backoff_seconds", "charge", "invalid-retry"),
    ("retry multiplier below one", mutate(set_path(["steps", 1, "retry", "backoff_multiplier"], 0.5)),
     "steps[1].retry.backoff_multiplier", "charge", "invalid-retry"),
    ("retry ceiling below backoff", mutate(set_path(["steps", 1, "retry", "max_backoff_seconds"], 0.5)),
     "steps[1].retry.max_backoff_seconds", "charge", "invalid-retry"),
    ("retry unknown field", mutate(set_path(["steps", 1, "retry", "retries"], 3)), "steps[1].retry.retries",
     "charge", "unknown-field"),
    ("timeout zero", mutate(set_path(["steps", 1, "timeout_seconds"], 0)), "steps[1].timeout_seconds", "charge",
     "invalid-timeout"),
    ("timeout as text", mutate(set_path(["steps", 1, "timeout_seconds"], "10")), "steps[1].timeout_seconds",
     "charge", "invalid-timeout"),
    ("edges not a list", mutate(set_path(["edges"], {"check": "charge"})), "edges", None, "type"),
    ("edge not an object", mutate(set_path(["edges", 1], ["charge", "route"])), "edges[1]", None, "type"),
    ("edge without to", mutate(delete_path(["edges", 0, "to"])), "edges[0].to", "check", "required"),
    ("edge without from", mutate(delete_path(["edges", 0, "from"])), "edges[0].from", "charge", "required"),
    ("dangling edge target", mutate(set_path(["edges", 0, "to"], "pay")), "edges[0].to", "check", "unknown-step"),
    ("dangling edge source", mutate(set_path(["edges", 0, "from"], "start")), "edges[0].from", "charge",
     "unknown-step"),
    ("port unknown for branch", mutate(set_path(["edges", 2, "port"], "yes")), "edges[2].port", "route",
     "unknown-port"),
    ("branch edge without port", mutate(delete_path(["edges", 3, "port"])), "edges[3].port", "route", "required"),
    ("port on a single-port step", mutate(set_path(["edges", 0, "port"], "true")), "edges[0].port", "check",
     "unknown-port"),
    ("duplicate edge", mutate(add_edge({"from": "check", "to": "charge"})), "edges[4]", "check", "duplicate-edge"),
    ("self loop", mutate(add_edge({"from": "charge", "to": "charge"})), "edges[4]", "charge", "self-loop"),
    ("cycle", mutate(add_edge({"from": "route", "port": "true", "to": "check"})), "edges[4]", "check", "cycle"),
    ("layout not an object", mutate(set_path(["layout"], [1, 2])), "layout", None, "type"),
    ("layout position without numbers", mutate(set_path(["layout", "check"], {"x": "40"})), "layout.check", "check",
     "type"),
    # Names are whole matches: `$` in a pattern would accept a trailing newline.
    ("slug with a trailing newline", mutate(set_path(["slug"], "order-fulfilment\n")), "slug", None, "invalid-slug"),
    ("step id with a trailing newline", mutate(set_path(["steps", 4, "id"], "refund\n")), "steps[4].id", None,
     "invalid-id"),
    ("trigger topic with a trailing newline", mutate(set_path(["trigger", "topic"], "orders\n")), "trigger.topic",
     None, "invalid-topic"),
    ("wait topic with a trailing newline",
     with_step({"id": "w", "type": "wait_for_event",
                "config": {"topic": "paid\n", "correlation": "{{ trigger.id }}", "key_expression": "event.id"}}),
     "steps[0].config.topic", "w", "invalid-topic"),
    ("approval signal with a trailing newline",
     with_step({"id": "ok", "type": "approval", "config": {"signal": "approve\n"}}), "steps[0].config.signal", "ok",
     "schema"),
    ("produce topic that is not a topic name", mutate(set_path(["steps", 3, "config", "topic"], "ship ments")),
     "steps[3].config.topic", "ship", "invalid-topic"),
    # Sluice's own topics are never a workflow's.
    ("trigger on a Sluice topic", mutate(set_path(["trigger", "topic"], "wf.runs")), "trigger.topic", None,
     "reserved-topic"),
    ("produce to a Sluice topic", mutate(set_path(["steps", 3, "config", "topic"], "wf.runs")),
     "steps[3].config.topic", "ship", "reserved-topic"),
    ("produce to a templated Sluice topic", mutate(set_path(["steps", 3, "config", "topic"], "wf.{{ trigger.t }}")),
     "steps[3].config.topic", "ship", "reserved-topic"),
    ("wait on a Sluice topic",
     with_step({"id": "w", "type": "wait_for_event",
                "config": {"topic": "wf.history", "correlation": "{{ trigger.id }}", "key_expression": "event.id"}}),
     "steps[0].config.topic", "w", "reserved-topic"),
    # Unknown fields are refused everywhere.
    ("unknown top-level field", mutate(set_path(["owner"], "ops")), "owner", None, "unknown-field"),
    ("unknown trigger block", mutate(set_path(["trigger", "batching"], {"every": "5m"})), "trigger.batching", None,
     "unknown-field"),
    ("topic on a manual trigger", mutate(set_path(["trigger"], {"type": "manual", "topic": "orders"})),
     "trigger.topic", None, "unknown-field"),
    ("cron on a webhook trigger", mutate(set_path(["trigger"], {"type": "webhook", "cron": "* * * * *"})),
     "trigger.cron", None, "unknown-field"),
    ("unknown start_from", mutate(set_path(["trigger", "start_from"], "yesterday")), "trigger.start_from", None,
     "schema"),
    ("unknown step field", mutate(set_path(["steps", 1, "retries"], 3)), "steps[1].retries", "charge",
     "unknown-field"),
    ("unknown edge field", mutate(set_path(["edges", 0, "label"], "go")), "edges[0].label", None, "unknown-field"),
    ("unknown layout field", mutate(set_path(["layout", "check"], {"x": 1, "y": 2, "z": 3})), "layout.check.z",
     "check", "unknown-field"),
    # A cron line that can never fire.
    ("cron on 30 February", mutate(set_path(["trigger"], {"type": "schedule", "cron": "0 0 30 2 *"})),
     "trigger.cron", None, "bad-cron"),
    ("cron on 31 April", mutate(set_path(["trigger"], {"type": "schedule", "cron": "0 0 31 4 *"})),
     "trigger.cron", None, "bad-cron"),
    # Numbers that become timers stay within days.
    ("retry backoff of 1e308", mutate(set_path(["steps", 1, "retry"], {"backoff_seconds": 1e308,
                                                                        "max_backoff_seconds": 1e308})),
     "steps[1].retry.backoff_seconds", "charge", "invalid-retry"),
    ("retry ceiling of 1e308", mutate(set_path(["steps", 1, "retry", "max_backoff_seconds"], 1e308)),
     "steps[1].retry.max_backoff_seconds", "charge", "invalid-retry"),
    ("retry multiplier of 1e308", mutate(set_path(["steps", 1, "retry", "backoff_multiplier"], 1e308)),
     "steps[1].retry.backoff_multiplier", "charge", "invalid-retry"),
    ("timeout of 1e308", mutate(set_path(["steps", 1, "timeout_seconds"], 1e308)), "steps[1].timeout_seconds",
     "charge", "invalid-timeout"),
    ("timeout of infinity", mutate(set_path(["steps", 1, "timeout_seconds"], float("inf"))),
     "steps[1].timeout_seconds", "charge", "bad-number"),
    ("delay of 1e308", with_step({"id": "wait", "type": "delay", "config": {"seconds": 1e308}}),
     "steps[0].config.seconds", "wait", "schema"),
    ("wait timeout of 1e12",
     with_step({"id": "w", "type": "wait_for_event",
                "config": {"topic": "paid", "correlation": "{{ trigger.id }}", "key_expression": "event.id",
                           "timeout_seconds": 1e12}}),
     "steps[0].config.timeout_seconds", "w", "schema"),
    ("approval timeout of 1e308", with_step({"id": "ok", "type": "approval", "config": {"timeout_seconds": 1e308}}),
     "steps[0].config.timeout_seconds", "ok", "schema"),
    # Text that cannot be stored or sent (lone surrogates), names too long.
    ("lone surrogate in the slug", mutate(set_path(["slug"], "order\ud800")), "slug", None, "bad-text"),
    ("lone surrogate in a step name", mutate(set_path(["steps", 0, "name"], "Check \udfff")), "steps[0].name",
     "check", "bad-text"),
    ("lone surrogate in a config key", mutate(set_path(["steps", 0, "config", "output"], {"\ud83d": 1})),
     "steps[0].config.output[\"\\ud83d\"]", "check", "bad-text"),
    ("step name too long", mutate(set_path(["steps", 0, "name"], "n" * 201)), "steps[0].name", "check", "too-long"),
]


@pytest.mark.parametrize("definition, path, step_id, code",
                         [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_malformed_definition_reports_the_exact_field(definition, path, step_id, code):
    problems = spec.validate(definition)
    errors = spec.errors(problems)
    matching = [p for p in errors if p.path == path and p.code == code]
    assert matching, f"no {code} error at {path}; got {[p.as_dict() for p in problems]}"
    assert matching[0].step_id == step_id
    assert matching[0].message
    with pytest.raises(spec.InvalidDefinition) as raised:
        spec.parse(definition)
    assert any(p.path == path for p in raised.value.problems)


def test_every_code_the_validator_emits_is_documented():
    import pathlib
    import re

    source = pathlib.Path(spec.__file__).read_text()
    emitted = set(re.findall(r'code="([a-z-]+)"', source))
    assert emitted and emitted <= spec.PROBLEM_CODES
    assert {case[4] for case in MALFORMED} <= spec.PROBLEM_CODES


def test_there_are_at_least_thirty_distinct_malformed_cases():
    assert len({case[0] for case in MALFORMED}) >= 30
    assert len({json.dumps(case[1], sort_keys=True) for case in MALFORMED}) == len(MALFORMED)


@pytest.mark.parametrize("value", [None, [], "definition", 3, True])
def test_a_definition_that_is_not_an_object(value):
    problems = spec.validate(value)
    assert [(p.path, p.code) for p in problems] == [("", "not-an-object")]


def test_design_example_is_valid_and_parses():
    assert spec.validate(example()) == []
    workflow = spec.parse(example())
    assert workflow.slug == "order-fulfilment"
    assert list(workflow.steps) == ["check", "charge", "route", "ship", "refund"]
    assert workflow.roots == ["check"]
    assert workflow.steps["charge"].retry.max_attempts == 5
    assert workflow.steps["charge"].retry.delay_after(3) == 4
    assert workflow.steps["charge"].timeout_seconds == 10
    assert [(e.source, e.port, e.target) for e in workflow.outgoing["route"]] == [
        ("route", "true", "ship"), ("route", "false", "refund")]
    assert workflow.trigger.topic == "orders" and workflow.trigger.filter == "trigger.total > 100"


def test_every_problem_is_reported_not_only_the_first():
    definition = example()
    definition["slug"] = "Bad"
    definition["steps"][1]["config"]["method"] = "FETCH"
    definition["steps"][2]["config"]["condition"] = "steps.nothing.output"
    definition["edges"].append({"from": "ship", "to": "ghost"})
    paths = {p.path for p in spec.errors(spec.validate(definition))}
    assert {"slug", "steps[1].config.method", "steps[2].config.condition", "edges[4].to"} <= paths


def test_edge_to_a_step_with_an_invalid_id_points_at_that_step():
    definition = example()
    definition["steps"][4]["id"] = "re-fund"
    definition["edges"][3]["to"] = "re-fund"
    problems = {p.path: p for p in spec.errors(spec.validate(definition))}
    assert problems["steps[4].id"].code == "invalid-id"
    assert problems["edges[3].to"].code == "unknown-step"
    assert "steps[4]" in problems["edges[3].to"].message and "dangling" not in problems["edges[3].to"].message


def test_cycle_message_names_every_step_in_order():
    definition = example()
    definition["edges"].append({"from": "route", "port": "true", "to": "charge"})
    cycles = [p for p in spec.validate(definition) if p.code == "cycle"]
    assert len(cycles) == 1
    assert "charge -> route -> charge" in cycles[0].message


def test_long_cycle_in_a_long_chain_does_not_recurse():
    steps = [{"id": f"s{i}", "type": "transform", "config": {"output": i}} for i in range(3000)]
    edges = [{"from": f"s{i}", "to": f"s{i + 1}"} for i in range(2999)] + [{"from": "s2999", "to": "s0"}]
    problems = spec.validate({"slug": "long", "trigger": {"type": "manual"}, "steps": steps, "edges": edges})
    assert [(p.code, p.path) for p in spec.errors(problems)] == [("cycle", "edges[2999]")]


def test_orphan_step_is_a_warning_and_still_parses():
    definition = example()
    definition["steps"].append({"id": "lonely", "type": "transform", "config": {"output": 1}})
    problems = spec.validate(definition)
    assert [(p.path, p.step_id, p.code, p.severity) for p in problems] == [
        ("steps[5]", "lonely", "unreachable", "warning")]
    assert "lonely" in spec.parse(definition).roots


def test_single_step_without_edges_is_fine():
    assert spec.validate(with_step({"id": "only", "type": "transform", "config": {"output": 1}})) == []


def test_joins_from_two_branches_are_allowed():
    definition = example()
    definition["steps"].append({"id": "notify", "type": "transform", "config": {"output": "done"}})
    definition["edges"] += [{"from": "ship", "to": "notify"}, {"from": "refund", "to": "notify"}]
    assert spec.validate(definition) == []
    assert len(spec.parse(definition).incoming["notify"]) == 2


def test_reading_a_step_that_does_not_run_before_is_a_warning():
    definition = example()
    definition["steps"][0]["config"]["output"] = "{{ steps.ship.output }}"
    problems = spec.validate(definition)
    assert [(p.path, p.step_id, p.code, p.severity) for p in problems] == [
        ("steps[0].config.output", "check", "not-upstream", "warning")]


def test_secret_in_an_engine_step_is_a_warning_but_fine_in_a_worker_step():
    definition = example()
    definition["steps"][1]["config"]["headers"] = {"Authorization": "Bearer {{ secret('PAY_TOKEN') }}"}
    assert spec.validate(definition) == []
    definition["steps"][3]["config"]["value"] = {"token": "{{ secret('PAY_TOKEN') }}"}
    problems = spec.validate(definition)
    assert [(p.path, p.code, p.severity) for p in problems] == [
        ("steps[3].config.value.token", "secret-not-resolved", "warning")]


def test_layout_entry_for_a_deleted_step_is_a_warning_but_an_unknown_field_is_an_error():
    definition = example()
    definition["layout"]["deleted_step"] = {"x": 1, "y": 2}
    assert [(p.path, p.code, p.severity) for p in spec.validate(definition)] == [
        ("layout.deleted_step", "unknown-step", "warning")]
    spec.parse(definition)
    definition["owner"] = "ops"
    assert ("owner", "unknown-field", "error") in {(p.path, p.code, p.severity) for p in spec.validate(definition)}


def test_template_loop_variables_are_not_unknown_names():
    definition = with_step({"id": "t", "type": "transform", "config": {
        "output": "{% for item in trigger['items'] %}{{ loop.index }}:{{ item.sku }} {% endfor %}"}})
    assert spec.validate(definition) == []


def test_wait_for_event_key_expression_sees_event_and_record():
    definition = with_step({"id": "w", "type": "wait_for_event", "config": {
        "topic": "payments", "correlation": "{{ trigger.order_id }}",
        "key_expression": "event.order_id or record.key", "timeout_seconds": 60}})
    assert spec.validate(definition) == []


def test_problem_as_dict_has_the_api_shape():
    problem = spec.validate(mutate(set_path(["steps", 3, "type"], "kafka")))[0]
    assert problem.as_dict() == {"path": "steps[3].type", "step_id": "ship", "code": "unknown-type",
                                 "message": problem.message, "severity": "error"}
    assert "transform" in problem.message and "wait_for_event" in problem.message


def test_a_hostile_constant_expression_does_not_hang_validation():
    definition = with_step({"id": "t", "type": "transform", "config": {"output": "{{ 9 ** 9999999 }}"}})
    assert spec.validate(definition) == []  # syntactically fine; refused when evaluated


# ---- property tests --------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(["slug", "name", "trigger", "steps", "edges", "layout", "id", "type", "config",
                               "from", "to", "port", "retry", "filter", "topic", "cron", "output", "condition"])
shaped_values = st.recursive(
    json_values | st.sampled_from(["transform", "branch", "http", "a", "b", "{{ x }}", "{% if %}", "true", "out"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(field_names, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shaped_values)
def test_validate_never_raises_and_always_returns_problems(data):
    problems = spec.validate(data)
    assert all(isinstance(p, spec.Problem) and p.severity in ("error", "warning") for p in problems)
    if not spec.errors(problems):
        spec.parse(data)  # whatever validates must build


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_random_dags_are_valid_and_a_back_edge_is_always_a_cycle(data):
    count = data.draw(st.integers(min_value=2, max_value=12))
    ids = [f"s{i}" for i in range(count)]
    pairs = data.draw(st.sets(st.tuples(st.integers(0, count - 1), st.integers(0, count - 1))
                              .filter(lambda pair: pair[0] < pair[1]), min_size=1, max_size=30))
    connected = {i for pair in pairs for i in pair}
    steps = [{"id": ids[i], "type": "transform", "config": {"output": i}} for i in sorted(connected)]
    edges = [{"from": ids[a], "to": ids[b]} for a, b in sorted(pairs)]
    definition = {"slug": "dag", "trigger": {"type": "manual"}, "steps": steps, "edges": edges}
    assert spec.validate(definition) == []
    a, b = data.draw(st.sampled_from(sorted(pairs)))
    definition["edges"].append({"from": ids[b], "to": ids[a]})
    cycles = [p for p in spec.validate(definition) if p.code == "cycle"]
    assert cycles
    edge_set = {(e["from"], e["to"]) for e in definition["edges"]}
    for cycle in cycles:
        named = cycle.message.split(": ", 1)[1].split(" (")[0].split(" -> ")
        hops = list(zip(named, named[1:]))
        # A real closed walk of the graph, through the back edge (the only way to go back).
        assert named[0] == named[-1] and all(hop in edge_set for hop in hops)
        assert (ids[b], ids[a]) in hops
        index = int(cycle.path[len("edges["):-1])
        assert (definition["edges"][index]["from"], definition["edges"][index]["to"]) in hops


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, prefix + (index,))


EXAMPLE_PATHS = [path for path in _paths(DESIGN_EXAMPLE) if path]
REPLACEMENTS = [None, 0, -1, 1.5, "", "x", "{{", "{{ steps.nope.output }}", "{% for %}", [], {}, [1], {"a": 1},
                True, "true", "out", "check", "re-fund", "route", "false", "ship", "charge"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(EXAMPLE_PATHS), st.sampled_from(REPLACEMENTS), st.booleans()),
                min_size=1, max_size=4))
def test_edited_example_either_reports_problems_or_builds_a_consistent_spec(edits):
    definition = example()
    for path, replacement, delete in edits:
        target = definition
        try:
            for part in path[:-1]:
                target = target[part]
            if delete and isinstance(target, dict):
                del target[path[-1]]
            else:
                target[path[-1]] = copy.deepcopy(replacement)
        except (KeyError, IndexError, TypeError):
            pass
    problems = spec.validate(definition)
    if not spec.errors(problems):
        workflow = spec.parse(definition)
        assert all(edge.source in workflow.steps and edge.target in workflow.steps for edge in workflow.edges)
        assert all(isinstance(step.config, dict) for step in workflow.steps.values())


def nested(depth, leaf="{{ trigger.x }}"):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [900, 5000])
def test_deeply_nested_config_is_refused_without_recursion_errors(depth):
    definition = with_step({"id": "deep", "type": "transform", "config": {"output": nested(depth)}})
    problems = spec.validate(definition)
    assert [(p.code, p.step_id) for p in problems] == [("too-deep", "deep")]
    # The path names where the limit is crossed: output plus MAX_JSON_DEPTH - 4 list levels
    # (the document, steps, the step and config are the first four).
    assert problems[0].path == "steps[0].config.output" + "[0]" * (spec.MAX_JSON_DEPTH - 4)
    assert "100 levels" in problems[0].message


def test_nesting_up_to_the_limit_is_fine():
    definition = with_step({"id": "deep", "type": "transform", "config": {"output": nested(spec.MAX_JSON_DEPTH - 5)}})
    assert spec.errors(spec.validate(definition)) == []


DEEP_EXPRESSIONS = [
    ("5,000 parentheses", "branch", "condition", "(" * 5000 + "trigger.x" + ")" * 5000, "bad-expression"),
    ("5,000 nots", "branch", "condition", "not " * 5000 + "trigger.x", "bad-expression"),
    ("2,000 nested ifs", "transform", "output", "{% if trigger.x %}" * 2000 + "y" + "{% endif %}" * 2000,
     "bad-template"),
    ("5,000 parentheses in a template", "transform", "output", "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
     "bad-template"),
    ("5,000 nots in a trigger filter", None, "filter", "not " * 5000 + "trigger.x", "bad-expression"),
]


@pytest.mark.parametrize("step_type, field, text, code", [case[1:] for case in DEEP_EXPRESSIONS],
                         ids=[case[0] for case in DEEP_EXPRESSIONS])
def test_deeply_nested_expressions_are_a_problem_on_their_field(step_type, field, text, code):
    if step_type is None:
        definition = mutate(set_path(["trigger", field], text))
        path, step_id = f"trigger.{field}", None
    else:
        definition = with_step({"id": "deep", "type": step_type, "config": {field: text}})
        path, step_id = f"steps[0].config.{field}", "deep"
    problems = spec.errors(spec.validate(definition))
    assert [(p.path, p.step_id, p.code) for p in problems] == [(path, step_id, code)]


def test_reserved_topics_follow_the_configured_prefix():
    definition = mutate(set_path(["trigger", "topic"], "wf.runs"))
    assert spec.errors(spec.validate(definition, topic_prefix="prod.")) == []
    definition["trigger"]["topic"] = "prod.history"
    assert [p.code for p in spec.errors(spec.validate(definition, topic_prefix="prod."))] == ["reserved-topic"]
    # Without a prefix, Sluice's bare topic names are what is reserved.
    definition["trigger"]["topic"] = "runs"
    assert [p.code for p in spec.errors(spec.validate(definition, topic_prefix=""))] == ["reserved-topic"]
    definition["trigger"]["topic"] = "tasks.default"
    assert [p.code for p in spec.errors(spec.validate(definition, topic_prefix=""))] == ["reserved-topic"]
    definition["trigger"]["topic"] = "orders"
    assert spec.errors(spec.validate(definition, topic_prefix="")) == []


def test_every_trigger_field_the_runtime_reads_is_known():
    for trigger in ({"type": "kafka", "topic": "orders", "filter": "trigger.ok", "start_from": "earliest"},
                    {"type": "schedule", "cron": "0 * * * *", "timezone": "Europe/Paris", "input": {"a": 1}},
                    {"type": "webhook", "filter": "trigger.ok"}, {"type": "manual"}):
        assert spec.errors(spec.validate(mutate(set_path(["trigger"], trigger)))) == [], trigger


def test_retry_delay_never_overflows():
    policy = spec.RetryPolicy(max_attempts=100, backoff_seconds=86400, backoff_multiplier=10,
                              max_backoff_seconds=86400)
    assert policy.delay_after(100) == 86400
    assert spec.RetryPolicy(backoff_multiplier=1e308, max_backoff_seconds=5).delay_after(3) == 5


def test_null_optional_parts_build():
    definition = example()
    definition.update(edges=None, layout=None, description=None)
    definition["edges"] = None
    definition["steps"] = [definition["steps"][0]]
    definition["steps"][0].update(name=None, retry=None, timeout_seconds=None)
    workflow = spec.parse(definition)
    assert workflow.edges == () and workflow.description == "" and workflow.steps["check"].name == ""
