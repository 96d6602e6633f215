"""The workflow definition: parse and validate (pure: no Django, no Kafka).

The JSON format is the public contract of DESIGN.md section 4. `validate(data)` returns every
problem found, each naming the field path (`steps[1].config.url`) and the step id it concerns,
so the designer can mark the node and the API can answer 400 with all of them at once.
`parse(data)` returns a WorkflowSpec or raises InvalidDefinition carrying those problems.

`definition_schema()` is the document's one JSON Schema (Draft 2020-12): the single source of
each field's type, enum, bounds, title and description, from which the designer's forms, the
OpenAPI document, GET /schema/workflow.json and docs/workflow.schema.json are made. The checks
here apply everything it says, with messages that name the field, and what a schema cannot
say beside it: expressions, topics, cron lines, and the graph (cycles, dangling edges, ports,
reachability). A top-level `$schema` (where an editor finds the schema) is accepted and ignored.

Problems have a severity: errors make a definition invalid; warnings (an orphan step, a layout
entry for a deleted step, a reference to a step that does not run before, secret() where no
worker resolves it, a filter on a trigger that has nothing to filter) are reported but `parse`
accepts them. Unknown fields are errors wherever they appear: a misspelt or not-yet-supported
block must never be accepted and silently ignored.

Names (slug, step id, topic) are checked with full matches (`re.fullmatch`: `$` would also
match before a trailing newline). Sluice's own topics (the configured prefix, `wf.` by default)
are never a workflow's topic: pass the installation's prefix as `topic_prefix`. Before any
other check the whole document is walked once for what would break storing or sending it
(nesting deeper than MAX_JSON_DEPTH, lone surrogates, NUL characters, non-finite numbers); such a document
gets only those problems, so no later check ever recurses into it.

Codes, for clients that react to a kind of problem rather than to its text:
  not-an-object, required, type, blank, too-long, unknown-field, invalid-slug, unknown-type,
  invalid-topic, reserved-topic, bad-cron, bad-timezone, empty, invalid-id, duplicate-id,
  schema, invalid-config, bad-template, bad-expression, unknown-name, unknown-step,
  invalid-retry, invalid-timeout, unknown-port, duplicate-edge, self-loop, cycle, ignored,
  secret-not-resolved, not-upstream, unreachable, too-deep, bad-text, bad-number.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

# The fields of each trigger type besides `type` and `filter` (accepted on every type, ignored
# with a warning where there is no event to filter). The one list to extend for a new field.
TRIGGER_FIELDS: dict[str, tuple[str, ...]] = {
    "manual": (),
    "kafka": ("topic", "start_from", "window", "max_runs_per_second"),
    "schedule": ("cron", "timezone", "input"),
    "webhook": (),
}
TRIGGER_TYPES = tuple(TRIGGER_FIELDS)
COMMON_TRIGGER_FIELDS = ("type", "filter")
# Where a Kafka trigger starts reading a topic it has not read before.
START_FROM = ("published", "earliest", "latest")
WINDOW_OPS = ("count", "sum", "min", "max", "avg", "collect", "count_distinct")
WINDOW_TYPES = ("tumbling", "hopping", "session")
# Trigger fields a trigger of a type that takes them cannot do without.
REQUIRED_TRIGGER_FIELDS = ("topic", "cron")
# JSON Schemas of the parts that are pure structure (the window's is WINDOW_SCHEMA, built with
# the document's schema below); expressions, templates and topics in them are checked beside
# (they need the expression parser and the topic rules).
ON_FAILURE_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["workflow"],
    "properties": {"workflow": {"type": "string", "pattern": r"^[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?$"},
                   "version": {"anyOf": [{"const": "live"}, {"type": "integer", "minimum": 1}]}},
}
MAX_RUNS_PER_SECOND_SCHEMA = {"type": "number", "exclusiveMinimum": 0, "maximum": 100_000}
# Top-level fields of a definition, of a step and of an edge (unknown ones are errors).
# `$schema` is for editors (where to find docs/workflow.schema.json): accepted, and ignored.
DOCUMENT_FIELDS = ("$schema", "slug", "name", "description", "trigger", "steps", "edges", "layout", "on_failure",
                   "input_schema")
STEP_FIELDS = ("id", "type", "name", "description", "config", "retry", "timeout_seconds")
EDGE_FIELDS = ("from", "to", "port")
LAYOUT_FIELDS = ("x", "y")
RETRY_FIELDS = ("max_attempts", "backoff_seconds", "backoff_multiplier", "max_backoff_seconds")

# Bounds on numbers that become timers: a mistyped 1e308 must not reach the engine's clock.
DAY_SECONDS = 24 * 3600
MAX_BACKOFF_SECONDS = DAY_SECONDS  # one retry waits at most a day
MAX_BACKOFF_MULTIPLIER = 10
MAX_ATTEMPTS = 100
# Names of workflows and steps (shown in lists and on the canvas).
MAX_NAME_LENGTH = 200
# Step timeouts, delays and waits: at most 366 days (longer is a unit mistake; use a schedule).
MAX_TIMER_SECONDS = 366 * DAY_SECONDS
# JSON nested deeper than this is refused (definitions, run input): real documents stay far
# below it, and every recursive consumer (copying, rendering, encoders) stays far from
# Python's recursion limit.
MAX_JSON_DEPTH = 100
# Sluice's own topics start with this prefix unless the installation configures another.
DEFAULT_TOPIC_PREFIX = "wf."
# Sluice's topic names after the prefix; with an empty prefix these names are what is reserved.
OWN_TOPIC_NAMES = ("definitions", "runs", "state", "history", "waits", "heartbeats", "dlq", "windows")

PROBLEM_CODES = frozenset("""
    not-an-object required type blank too-long unknown-field invalid-slug unknown-type
    invalid-topic reserved-topic bad-cron bad-timezone empty invalid-id duplicate-id schema
    invalid-config bad-template bad-expression unknown-name unknown-step invalid-retry
    invalid-timeout unknown-port duplicate-edge self-loop cycle ignored secret-not-resolved
    not-upstream unreachable too-deep bad-text bad-number
""".split())
ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    path: str  # "steps[1].config.url", "edges[0].to", "trigger.filter", "" for the whole document
    message: str
    step_id: str | None = None
    code: str = "invalid"
    # "error" blocks saving as valid and publishing; "warning" is shown but accepted.
    severity: str = ERROR

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "step_id": self.step_id,
            "code": self.code,
            "message": self.message,
            "severity": self.severity,
        }


class InvalidDefinition(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(f"{p.path or '(definition)'}: {p.message}" for p in problems[:5]))


def errors(problems: list[Problem]) -> list[Problem]:
    """The problems that make a definition invalid (warnings left out)."""
    return [problem for problem in problems if problem.severity == ERROR]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    backoff_seconds: float = 1.0
    backoff_multiplier: float = 2.0
    max_backoff_seconds: float = 300.0

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based) before the next one."""
        try:
            delay = self.backoff_seconds * (self.backoff_multiplier ** (attempt - 1))
        except OverflowError:  # the ceiling applies long before a float runs out
            delay = math.inf
        return min(delay, self.max_backoff_seconds)


@dataclass(frozen=True)
class Step:
    id: str
    type: str
    config: dict = field(default_factory=dict)
    name: str = ""
    retry: RetryPolicy = RetryPolicy()
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class Edge:
    source: str  # "from" in JSON
    target: str  # "to" in JSON
    port: str = "out"


@dataclass(frozen=True)
class Trigger:
    type: str = "manual"
    topic: str | None = None  # kafka
    filter: str | None = None  # kafka: condition over `trigger` and `record`
    cron: str | None = None  # schedule
    config: dict = field(default_factory=dict)  # anything else the trigger type takes


@dataclass(frozen=True)
class WorkflowSpec:
    slug: str
    name: str
    trigger: Trigger
    steps: dict[str, Step]  # in definition order
    edges: tuple[Edge, ...]
    description: str = ""
    layout: dict = field(default_factory=dict)
    # {"workflow": slug, "version": "live" | N}: started with the failure when a run fails.
    on_failure: dict | None = None
    # JSON Schema the input of a run started by hand, API or webhook must match.
    input_schema: dict | None = None
    # Derived graph indexes, filled by parse().
    incoming: dict[str, tuple[Edge, ...]] = field(default_factory=dict)
    outgoing: dict[str, tuple[Edge, ...]] = field(default_factory=dict)

    @property
    def roots(self) -> list[str]:
        return [step_id for step_id in self.steps if not self.incoming.get(step_id)]


def validate(data: Any, topic_prefix: str = DEFAULT_TOPIC_PREFIX) -> list[Problem]:
    """Every problem in `data`, errors and warnings, in document order; no errors means valid.

    `topic_prefix` is the installation's prefix of Sluice's own topics (settings.SLUICE_TOPIC_PREFIX):
    no trigger, wait or produce step may name a topic under it.
    """
    if not isinstance(data, dict):
        return [Problem("", f"a workflow definition must be a JSON object, not {_kind(data)}", code="not-an-object")]
    unfit = json_problems(data)
    if unfit:
        return [Problem(path, message, _step_id_at(data, path), code) for path, message, code in unfit]
    checker = _Checker(data, topic_prefix)
    checker.run()
    return checker.problems


def parse(data: Any, topic_prefix: str = DEFAULT_TOPIC_PREFIX) -> WorkflowSpec:
    """A validated WorkflowSpec, or InvalidDefinition with every error (warnings are accepted)."""
    problems = errors(validate(data, topic_prefix))
    if problems:
        raise InvalidDefinition(problems)
    return build(data)


def build(data: dict) -> WorkflowSpec:
    """Construct the spec from an already validated document."""
    steps: dict[str, Step] = {}
    for raw in data["steps"]:
        retry = raw.get("retry") or {}
        steps[raw["id"]] = Step(
            id=raw["id"],
            type=raw["type"],
            config=raw.get("config") or {},
            name=raw.get("name") or "",
            retry=RetryPolicy(**retry),
            timeout_seconds=raw.get("timeout_seconds"),
        )
    edges = tuple(Edge(e["from"], e["to"], e.get("port") or "out") for e in data.get("edges") or [])
    incoming: dict[str, list[Edge]] = {step_id: [] for step_id in steps}
    outgoing: dict[str, list[Edge]] = {step_id: [] for step_id in steps}
    for edge in edges:
        incoming[edge.target].append(edge)
        outgoing[edge.source].append(edge)
    raw_trigger = dict(data.get("trigger") or {"type": "manual"})
    trigger = Trigger(
        type=raw_trigger.pop("type", "manual"),
        topic=raw_trigger.pop("topic", None),
        filter=raw_trigger.pop("filter", None),
        cron=raw_trigger.pop("cron", None),
        config=raw_trigger,
    )
    return WorkflowSpec(
        slug=data["slug"],
        name=data.get("name") or data["slug"],
        description=data.get("description") or "",
        trigger=trigger,
        steps=steps,
        edges=edges,
        layout=data.get("layout") or {},
        on_failure=data.get("on_failure") or None,
        input_schema=data.get("input_schema") or None,
        incoming={k: tuple(v) for k, v in incoming.items()},
        outgoing={k: tuple(v) for k, v in outgoing.items()},
    )


# ---- names and topics --------------------------------------------------------------------
# Always used with fullmatch (see the module docstring).
# Lowercase words joined by hyphens: the slug is part of URLs and Kafka keys (`slug@version`).
SLUG_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?")
# Identifiers, so expressions can write `steps.<id>.output` without quoting.
STEP_ID_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
TOPIC_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,249}")


def is_slug(value: Any) -> bool:
    return isinstance(value, str) and SLUG_PATTERN.fullmatch(value) is not None


def is_step_id(value: Any) -> bool:
    return isinstance(value, str) and STEP_ID_PATTERN.fullmatch(value) is not None


def is_topic_name(value: Any) -> bool:
    return isinstance(value, str) and TOPIC_PATTERN.fullmatch(value) is not None and value not in (".", "..")


def reserved_topic(topic: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> bool:
    """Whether `topic` is (or could be) one of Sluice's own topics under `prefix`."""
    if prefix:
        return topic.startswith(prefix)
    return topic in OWN_TOPIC_NAMES or topic.startswith("tasks.")


def topic_problem(value: Any, prefix: str = DEFAULT_TOPIC_PREFIX, templated: bool = False) -> tuple[str, str] | None:
    """(code, message) when `value` may not be a workflow's topic, else None.

    With `templated`, a template is accepted (it renders at run time, where the runner checks
    the result again) unless its fixed beginning already names a reserved topic.
    """
    if templated and isinstance(value, str) and ("{{" in value or "{%" in value):
        literal = re.split(r"\{[{%]", value, maxsplit=1)[0]
        if literal.strip() != literal or not re.fullmatch(r"[A-Za-z0-9._-]*", literal):
            return "invalid-topic", f"{value!r}: a topic name holds only letters, digits, '.', '_' and '-'"
        if prefix and literal.startswith(prefix):
            return "reserved-topic", (f"{value!r} names one of Sluice's own topics ({prefix}...): workflows "
                                      "read and write their own topics only")
        return None
    if not is_topic_name(value):
        return "invalid-topic", f"{value!r} is not a Kafka topic name (1 to 249 letters, digits, '.', '_', '-')"
    if reserved_topic(value, prefix):
        shown = f"{prefix}..." if prefix else ", ".join(OWN_TOPIC_NAMES)
        return "reserved-topic", (f"{value!r} is one of Sluice's own topics ({shown}): workflows read and write "
                                  "their own topics only")
    return None


# ---- cron lines and time zones (the schedule trigger) --------------------------------------
# The one place they are checked: validation here, and orchestrator/schedules.py before it
# makes a beat entry, ask these two.
def cron_problem(cron: Any) -> tuple[str, str] | None:
    """(code, message) when `cron` is not a cron line that fires (five fields), else None."""
    from croniter import CroniterBadDateError, croniter

    if cron in (None, ""):
        return "required", "required: a cron expression such as '*/5 * * * *'"
    if not isinstance(cron, str):
        return "type", f"must be a string, not {_kind(cron)}"
    if len(cron.split()) != 5:
        return "bad-cron", f"{cron!r} must have 5 fields: minute hour day-of-month month day-of-week"
    if not croniter.is_valid(cron):
        return "bad-cron", f"{cron!r} is not a valid cron expression"
    try:
        croniter(cron).get_next(float)
    except CroniterBadDateError:
        return "bad-cron", f"{cron!r} never fires (no such date, e.g. 30 February)"
    return None


def timezone_problem(timezone: Any) -> str | None:
    """Why `timezone` is not an IANA time zone name, or None."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        if not isinstance(timezone, str) or not timezone:
            raise ValueError
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{timezone!r} is not a time zone name such as 'Europe/Paris'"
    return None


# ---- what every stored or sent JSON document must be ---------------------------------------
def json_problems(value: Any, path: str = "", max_depth: int = MAX_JSON_DEPTH, limit: int = 20) -> list[tuple[str, str, str]]:
    """(path, message, code) for what would break storing or sending `value` as JSON.

    Nesting deeper than `max_depth`, strings or keys with lone surrogates (not encodable as
    UTF-8: the database and Kafka refuse them) or NUL characters (PostgreSQL refuses them), and
    numbers that are not finite. Walked
    without recursion, so any depth is safe to check; at most `limit` problems.
    """
    found: list[tuple[str, str, str]] = []
    pending: list[tuple[str, Any, int]] = [(path, value, 0)]
    while pending and len(found) < limit:
        where, item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth >= max_depth:
                found.append((where, f"nested more than {max_depth} levels deep", "too-deep"))
                continue
            if isinstance(item, dict):
                children = []
                for key, child in item.items():
                    if not isinstance(key, str):
                        key = str(key)
                    why = _bad_text(key)
                    if why:
                        found.append((join_path(where, key), f"the key is {why}", "bad-text"))
                        continue
                    children.append((join_path(where, key), child, depth + 1))
            else:
                children = [(join_path(where, index), child, depth + 1) for index, child in enumerate(item)]
            pending.extend(reversed(children))
        elif isinstance(item, str):
            why = _bad_text(item)
            if why:
                found.append((where, why, "bad-text"))
        elif isinstance(item, float) and not math.isfinite(item):
            found.append((where, "numbers must be finite (no NaN or infinity)", "bad-number"))
    return found


def _bad_text(text: str) -> str | None:
    """Why `text` cannot be stored (PostgreSQL refuses NUL in text and jsonb), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid Unicode text (a lone surrogate)"
    if "\x00" in text:
        return "holds a NUL character, which cannot be stored"
    return None


def _step_id_at(data: dict, path: str) -> str | None:
    """The id of the step a path such as `steps[2].config.x` lies in, when it has a valid one."""
    match = re.match(r"steps\[(\d+)\]", path)
    steps = data.get("steps")
    if not match or not isinstance(steps, list) or int(match.group(1)) >= len(steps):
        return None
    step = steps[int(match.group(1))]
    step_id = step.get("id") if isinstance(step, dict) else None
    return step_id if is_step_id(step_id) else None


# ---- the document's JSON Schema ----------------------------------------------------------
# The one JSON Schema of a definition (Draft 2020-12): what the REST API documents, what the
# designer's side-panel forms are made from (designer/forms.py takes each field's type, enum,
# bounds, title and description from here), what /schema/workflow.json serves and what
# docs/workflow.schema.json holds for editors. `validate` checks everything it says, and more:
# what JSON Schema cannot say (expressions, topics under Sluice's prefix, cron lines that never
# fire, the graph: cycles, dangling edges, ports, reachability) is checked beside it, below.
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "urn:sluice:schema:workflow-definition"
# Where the web serves it (designer/urls.py) and where the repository keeps a copy.
SCHEMA_URL_PATH = "/schema/workflow.json"
SCHEMA_FILE = "docs/workflow.schema.json"


def _seconds(maximum: float, title: str, description: str, exclusive: bool = True, **extra) -> dict:
    low = {"exclusiveMinimum": 0} if exclusive else {"minimum": 0}
    return {"type": "number", **low, "maximum": maximum, "title": title, "description": description, **extra}


def _window_schema() -> dict:
    week = 7 * DAY_SECONDS
    return {
        "type": "object",
        "title": "Window",
        "description": "Aggregate records over time windows: one run per closed window (and key), whose input "
                       "holds key, window_start, window_end and the aggregates",
        "additionalProperties": False,
        "required": ["type", "aggregates"],
        "properties": {
            "type": {"enum": list(WINDOW_TYPES), "title": "Window",
                     "description": "tumbling: back-to-back windows of a fixed size; hopping: windows of a fixed "
                                    "size that start every `advance` seconds (a record counts in each that covers "
                                    "it); session: records closer than the gap form one window"},
            "size_seconds": _seconds(week, "Size (seconds)", "How long each window lasts"),
            "advance_seconds": _seconds(week, "Advance (seconds)", "How often a new window starts (at most the size)"),
            "gap_seconds": _seconds(week, "Gap (seconds)", "A session ends after this long without a record for its key"),
            "grace_seconds": _seconds(DAY_SECONDS, "Grace (seconds)",
                                      "How long after its end a window waits for records that are late; later ones "
                                      "are dropped and counted", exclusive=False, default=0),
            "key": {"type": "string", "minLength": 1, "maxLength": 2000, "title": "Key", "x-widget": "template",
                    "description": "What the windows are kept per, e.g. {{ trigger.user }} (default: the record key)"},
            "aggregates": {
                "type": "object", "minProperties": 1, "maxProperties": 50, "title": "Aggregates",
                "description": "Fields of the window run's input, each an aggregate of the window's records",
                "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                                  "not": {"enum": ["key", "window_start", "window_end"]}},
                "additionalProperties": {
                    "type": "object", "additionalProperties": False, "required": ["op"],
                    "properties": {
                        "op": {"enum": list(WINDOW_OPS), "title": "Operation"},
                        "of": {"type": "string", "minLength": 1, "title": "Of",
                               "description": "Expression over `trigger` and `record` (every op but count)"},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "title": "Limit",
                                  "description": "collect: at most this many values"}},
                    "if": {"properties": {"op": {"not": {"const": "count"}}}},
                    "then": {"required": ["of"]},
                },
            },
            "emit_topic": {"type": "string", "title": "Emit topic", "x-widget": "text",
                           "description": "Also write each closed window's result to this topic, keyed by the window "
                                          "key (optional)"},
        },
        "allOf": [
            {"if": {"properties": {"type": {"const": "tumbling"}}}, "then": {"required": ["size_seconds"]}},
            {"if": {"properties": {"type": {"const": "hopping"}}}, "then": {"required": ["size_seconds", "advance_seconds"]}},
            {"if": {"properties": {"type": {"const": "session"}}}, "then": {"required": ["gap_seconds"]}},
        ],
    }


WINDOW_SCHEMA = _window_schema()


def _trigger_schema() -> dict:
    """The trigger: every field once (in the order the designer's panel shows them), and per
    trigger type (if/then) which fields it takes and which it needs."""
    properties = {
        "type": {"type": "string", "enum": list(TRIGGER_TYPES), "title": "Trigger",
                 "description": "How runs start: by hand (manual), from records on a Kafka topic (kafka), on a cron "
                                "schedule (schedule) or from an HTTP call (webhook)"},
        "topic": {"type": "string", "pattern": f"^{TOPIC_PATTERN.pattern}$", "title": "Topic", "x-widget": "text",
                  "description": "Kafka topic whose records start runs"},
        "filter": {"type": "string", "title": "Filter",
                   "description": "Only events for which this condition is true start a run: trigger is the "
                                  "record's value or the request's body, record the record or the request"},
        "start_from": {"type": "string", "enum": list(START_FROM), "default": START_FROM[0], "title": "Start from",
                       "description": "Which records start runs: those produced after this version was published "
                                      "(default), every record on the topic (earliest), or only records produced "
                                      "once a runner starts reading the topic (latest)"},
        "max_runs_per_second": {**MAX_RUNS_PER_SECOND_SCHEMA, "title": "Max runs per second",
                                "description": "At most this many runs start per second (bursts of one second's "
                                               "worth), also while a backlog drains after a pause. Empty: no limit"},
        "cron": {"type": "string", "minLength": 1, "title": "Schedule (cron)", "x-widget": "text",
                 "description": "Five fields: minute hour day-of-month month day-of-week, e.g. */15 8-18 * * 1-5"},
        "timezone": {"type": "string", "minLength": 1, "default": "UTC", "title": "Time zone", "x-widget": "text",
                     "description": "The zone the cron line is read in (IANA name such as Europe/Paris), "
                                    "with its daylight-saving changes"},
        "input": {"title": "Input", "x-widget": "json", "default": {},
                  "description": "Each scheduled run's input (trigger in expressions)"},
        "window": {"$ref": "#/$defs/window"},
    }
    conditions = []
    for kind, fields in TRIGGER_FIELDS.items():
        then: dict = {"propertyNames": {"enum": list(COMMON_TRIGGER_FIELDS + fields)}}
        needed = [name for name in fields if name in REQUIRED_TRIGGER_FIELDS]
        if needed:
            then["required"] = needed
        conditions.append({"if": {"properties": {"type": {"const": kind}}, "required": ["type"]}, "then": then})
    return {"type": "object", "title": "Trigger", "description": "How runs of this workflow start",
            "required": ["type"], "additionalProperties": False, "properties": properties, "allOf": conditions}


def _retry_schema() -> dict:
    seconds = f"From 0 to {MAX_BACKOFF_SECONDS} (a day)"
    return {
        "type": "object", "additionalProperties": False, "title": "Retry",
        "description": "How often a failed attempt is tried again, and how long to wait between attempts",
        "properties": {
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS, "title": "Max attempts",
                             "description": f"Attempts in all, the first included (1 to {MAX_ATTEMPTS})"},
            "backoff_seconds": {"type": "number", "minimum": 0, "maximum": MAX_BACKOFF_SECONDS,
                                "title": "Backoff (seconds)", "description": f"Wait before the second attempt. {seconds}"},
            "backoff_multiplier": {"type": "number", "minimum": 1, "maximum": MAX_BACKOFF_MULTIPLIER,
                                   "title": "Backoff multiplier",
                                   "description": f"Each later wait is the one before times this (1 to "
                                                  f"{MAX_BACKOFF_MULTIPLIER})"},
            "max_backoff_seconds": {"type": "number", "minimum": 0, "maximum": MAX_BACKOFF_SECONDS,
                                    "title": "Max backoff (seconds)",
                                    "description": f"No wait is longer than this. {seconds}"},
        },
    }


def _step_schema(step_types: dict) -> dict:
    by_type = []
    for name in step_types:
        then: dict = {"properties": {"config": {"$ref": f"#/$defs/config_{name}"}}}
        by_type.append({"if": {"properties": {"type": {"const": name}}, "required": ["type"]}, "then": then})
    return {
        "type": "object", "additionalProperties": False, "required": ["id", "type"], "title": "Step",
        "properties": {
            "id": {"type": "string", "pattern": f"^{STEP_ID_PATTERN.pattern}$", "title": "Step id", "x-widget": "text",
                   "description": "Other steps read this step's output as steps.<id>.output"},
            "type": {"type": "string", "enum": list(step_types), "title": "Step type",
                     "description": "What the step does; its config follows the type's schema"},
            "name": {"type": "string", "maxLength": MAX_NAME_LENGTH, "title": "Display name", "x-widget": "text",
                     "description": "Shown on the canvas instead of the step id"},
            "description": {"type": "string", "title": "Description"},
            "config": {"type": "object", "title": "Configuration",
                       "description": "As the step type's config schema (also GET /api/step-types/)"},
            "retry": {"$ref": "#/$defs/retry"},
            "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMER_SECONDS,
                                "title": "Timeout (seconds)",
                                "description": "An attempt still running after this long fails (at most 366 days)"},
        },
        "allOf": by_type,
    }


def _config_schema(step_type: Any) -> dict:
    """A step type's config schema as a part of the document's ($schema only at the root)."""
    schema = {key: value for key, value in step_type.config_schema.items() if key != "$schema"}
    schema.setdefault("title", f"{step_type.name} config")
    return schema


def definition_schema() -> dict:
    """The JSON Schema (Draft 2020-12) of a definition document; a fresh copy on every call."""
    from . import steps as step_types

    text = {"type": "string"}
    defs = {
        "trigger": _trigger_schema(),
        "window": _window_schema(),
        "step": _step_schema(step_types.REGISTRY),
        "retry": _retry_schema(),
        "edge": {"type": "object", "additionalProperties": False, "required": ["from", "to"], "title": "Edge",
                 "properties": {"from": {**text, "title": "From", "description": "The id of the step it leaves"},
                                "to": {**text, "title": "To", "description": "The id of the step it enters"},
                                "port": {**text, "title": "Port", "default": "out",
                                         "description": "The output port of the `from` step (branch: true/false)"}}},
        "position": {"type": "object", "additionalProperties": False, "required": list(LAYOUT_FIELDS),
                     "properties": {axis: {"type": "number"} for axis in LAYOUT_FIELDS}},
        "on_failure": {**ON_FAILURE_SCHEMA, "title": "On failure",
                       "description": "A workflow started with the failure when a run of this one fails",
                       "properties": {
                           "workflow": {**ON_FAILURE_SCHEMA["properties"]["workflow"], "title": "Workflow",
                                        "description": "Slug of the workflow to start"},
                           "version": {**ON_FAILURE_SCHEMA["properties"]["version"], "title": "Version",
                                       "description": '"live" (default) or a version number'}}},
    }
    for name, step_type in step_types.REGISTRY.items():
        defs[f"config_{name}"] = _config_schema(step_type)
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        "title": "Sluice workflow definition",
        "description": "A workflow: its trigger, its steps and the edges between them (DESIGN.md section 4). "
                       "Expressions, topics and the graph are checked beyond this schema by `sluice validate` "
                       "and the server.",
        "type": "object", "additionalProperties": False, "required": ["slug", "trigger", "steps"],
        "properties": {
            "$schema": {"type": "string", "title": "Schema",
                        "description": "Where editors find this schema (a URL or a path); ignored by Sluice"},
            "slug": {"type": "string", "pattern": f"^{SLUG_PATTERN.pattern}$", "title": "Slug",
                     "description": "Lowercase letters, digits and hyphens: the workflow's name in URLs and Kafka keys"},
            "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH, "pattern": r"\S", "title": "Name",
                     "description": "Shown in lists (the slug when left out)"},
            "description": {**text, "title": "Description"},
            "trigger": {"$ref": "#/$defs/trigger"},
            "steps": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/step"}, "title": "Steps"},
            "edges": {"type": "array", "items": {"$ref": "#/$defs/edge"}, "title": "Edges",
                      "description": "A step runs when every incoming edge is satisfied; the graph is acyclic"},
            "layout": {"type": "object", "additionalProperties": {"$ref": "#/$defs/position"}, "title": "Layout",
                       "description": "Where the designer draws each step: step id -> {x, y}"},
            "on_failure": {"$ref": "#/$defs/on_failure"},
            "input_schema": {"type": "object", "$ref": SCHEMA_DIALECT, "title": "Input schema",
                             "description": "A JSON Schema (Draft 2020-12) the input of runs started by hand, API "
                                            "or webhook must match"},
        },
        "$defs": defs,
    }


def schema_json() -> str:
    """The schema as served and as committed in docs/workflow.schema.json (stable text)."""
    return json.dumps(definition_schema(), indent=2, ensure_ascii=False) + "\n"


# ---- validation ----------------------------------------------------------------------------
TRIGGER_FILTER_NAMES = ("trigger", "record")
FILTERED_TRIGGERS = ("kafka", "webhook")
MAX_MESSAGE = 300


def _kind(value: Any) -> str:
    """A JSON reader's name for a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def join_path(base: str, part: Any) -> str:
    """`steps` + 1 -> `steps[1]`; `config` + "url" -> `config.url`; odd keys are quoted."""
    if isinstance(part, int):
        return f"{base}[{part}]"
    part = str(part)
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
        return f"{base}.{part}" if base else part
    return f"{base}[{json.dumps(part)}]"


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


class _Checker:
    """One validation pass over a definition; collects problems instead of stopping."""

    def __init__(self, data: dict, topic_prefix: str = DEFAULT_TOPIC_PREFIX):
        from . import steps as step_types

        self.data = data
        self.topic_prefix = topic_prefix
        self.registry = step_types.REGISTRY
        self.problems: list[Problem] = []
        # Valid, unique step ids -> (index in steps, step type or None when unknown).
        self.step_index: dict[str, int] = {}
        # Every string id as written, valid or not, so edges to a step with a bad id say so.
        self.written_ids: dict[str, int] = {}
        self.step_type: dict[str, Any] = {}
        # steps.<id> references found in configs, checked against the graph at the end:
        # (referring step, referenced id, path).
        self.references: list[tuple[str, str, str]] = []
        # Edges that connect two known steps: (edge index, from, port, to).
        self.graph_edges: list[tuple[int, str, str, str]] = []

    def error(self, path: str, message: str, step_id: str | None = None, code: str = "invalid") -> None:
        self.problems.append(Problem(path, _short(message), step_id, code, ERROR))

    def warning(self, path: str, message: str, step_id: str | None = None, code: str = "invalid") -> None:
        self.problems.append(Problem(path, _short(message), step_id, code, WARNING))

    def run(self) -> None:
        self.check_document()
        self.check_trigger()
        self.check_on_failure()
        self.check_input_schema()
        self.collect_step_ids()
        self.check_steps()
        self.check_edges()
        self.check_graph()
        self.check_layout()

    # ---- document ----
    def check_document(self) -> None:
        data = self.data
        for key in data:
            if key not in DOCUMENT_FIELDS:
                self.error(join_path("", key), f"unknown field {key!r}; fields are: {', '.join(DOCUMENT_FIELDS)}",
                           code="unknown-field")
        slug = data.get("slug")
        if slug is None:
            self.error("slug", "required: a short name such as order-fulfilment", code="required")
        elif not isinstance(slug, str):
            self.error("slug", f"must be a string, not {_kind(slug)}", code="type")
        elif not is_slug(slug):
            self.error("slug", f"{slug!r} is not a valid slug: use lowercase letters, digits and hyphens "
                               "(not at the start or end), at most 100 characters", code="invalid-slug")
        name = data.get("name")
        if name is not None:
            if not isinstance(name, str):
                self.error("name", f"must be a string, not {_kind(name)}", code="type")
            elif not name.strip():
                self.error("name", "must not be blank (leave it out to use the slug)", code="blank")
            elif len(name) > MAX_NAME_LENGTH:
                self.error("name", f"is {len(name)} characters long; at most {MAX_NAME_LENGTH}", code="too-long")
        description = data.get("description")
        if description is not None and not isinstance(description, str):
            self.error("description", f"must be a string, not {_kind(description)}", code="type")
        if "$schema" in data and not isinstance(data["$schema"], str):
            self.error('["$schema"]', f"must be a string (where editors find the schema), not {_kind(data['$schema'])}",
                       code="type")

    # ---- trigger ----
    def check_trigger(self) -> None:
        trigger = self.data.get("trigger")
        if trigger is None:
            self.error("trigger", 'required: how runs start, e.g. {"type": "manual"}', code="required")
            return
        if not isinstance(trigger, dict):
            self.error("trigger", f"must be an object, not {_kind(trigger)}", code="type")
            return
        kind = trigger.get("type")
        if kind is None:
            self.error("trigger.type", f"required: one of {', '.join(TRIGGER_TYPES)}", code="required")
        elif not isinstance(kind, str) or kind not in TRIGGER_TYPES:
            self.error("trigger.type", f"unknown trigger type {kind!r}; use one of {', '.join(TRIGGER_TYPES)}",
                       code="unknown-type")
        else:
            allowed = COMMON_TRIGGER_FIELDS + TRIGGER_FIELDS[kind]
            for key in trigger:
                if key not in allowed:
                    self.error(join_path("trigger", key),
                               f"unknown field {key!r} for a {kind} trigger; its fields are: {', '.join(allowed)}",
                               code="unknown-field")
        if kind == "kafka":
            topic = trigger.get("topic")
            if topic in (None, ""):
                self.error("trigger.topic", "required: the Kafka topic whose records start runs", code="required")
            else:
                self.check_topic("trigger.topic", topic, None, templated=False)
            start_from = trigger.get("start_from")
            if start_from is not None and start_from not in START_FROM:
                self.error("trigger.start_from", f"must be one of {', '.join(START_FROM)}, not {start_from!r}",
                           code="schema")
            if "max_runs_per_second" in trigger:
                self.check_schema("trigger.max_runs_per_second", trigger["max_runs_per_second"],
                                  MAX_RUNS_PER_SECOND_SCHEMA)
            if "window" in trigger:
                self.check_window(trigger["window"])
        if kind == "schedule":
            self.check_cron(trigger.get("cron"))
            timezone = trigger.get("timezone")
            if timezone is not None:
                self.check_timezone(timezone)
        filter_expression = trigger.get("filter")
        if filter_expression not in (None, ""):
            if not isinstance(filter_expression, str):
                self.error("trigger.filter", f"must be an expression string, not {_kind(filter_expression)}", code="type")
            else:
                self.check_expression("trigger.filter", filter_expression, TRIGGER_FILTER_NAMES, None)
                if kind in TRIGGER_TYPES and kind not in FILTERED_TRIGGERS:
                    self.warning("trigger.filter", f"a {kind} trigger has no incoming event to filter; the filter is ignored",
                                 code="ignored")

    def check_schema(self, path: str, value: Any, schema: dict, step_id: str | None = None) -> bool:
        """Errors for `value` against a JSON Schema fragment, at their paths; True if none."""
        from jsonschema import Draft202012Validator

        errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
        for error in errors:
            location = path
            for part in error.absolute_path:
                location = join_path(location, part)
            self.error(location, _short(error.message), step_id, code="schema")
        return not errors

    def check_window(self, window: Any) -> None:
        if not self.check_schema("trigger.window", window, WINDOW_SCHEMA):
            return
        if window.get("key"):
            self.check_templates("trigger.window.key", window["key"], TRIGGER_FILTER_NAMES, None, None)
        for name, aggregate in window["aggregates"].items():
            if aggregate.get("of"):
                self.check_expression(join_path(join_path("trigger.window.aggregates", name), "of"), aggregate["of"],
                                      TRIGGER_FILTER_NAMES, None)
        if window["type"] == "hopping" and window["advance_seconds"] > window["size_seconds"]:
            self.error("trigger.window.advance_seconds", "must not be longer than size_seconds (windows would miss "
                                                         "records between them)", code="schema")
        if window.get("emit_topic") not in (None, ""):
            self.check_topic("trigger.window.emit_topic", window["emit_topic"], None, templated=False)

    def check_on_failure(self) -> None:
        if self.data.get("on_failure") is not None:
            self.check_schema("on_failure", self.data["on_failure"], ON_FAILURE_SCHEMA)

    def check_input_schema(self) -> None:
        schema = self.data.get("input_schema")
        if schema is None:
            return
        from jsonschema import Draft202012Validator, SchemaError

        if not isinstance(schema, dict):
            self.error("input_schema", f"must be a JSON Schema object, not {_kind(schema)}", code="type")
            return
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            location = "input_schema"
            for part in exc.absolute_path:
                location = join_path(location, part)
            self.error(location, f"not a valid JSON Schema: {_short(exc.message)}", code="schema")
        if "$ref" in json.dumps(schema) and '"$ref": "#' not in json.dumps(schema):
            self.error("input_schema", "may only refer inside itself ($ref to #...): no remote schemas",
                       code="schema")

    def check_cron(self, cron: Any) -> None:
        problem = cron_problem(cron)
        if problem is not None:
            code, message = problem
            self.error("trigger.cron", message, code=code)

    def check_timezone(self, timezone: Any) -> None:
        problem = timezone_problem(timezone)
        if problem is not None:
            self.error("trigger.timezone", problem, code="bad-timezone")

    # ---- steps ----
    def collect_step_ids(self) -> None:
        """First pass, so expressions and edges can refer to steps defined later."""
        steps = self.data.get("steps")
        if not isinstance(steps, list):
            return
        for index, raw in enumerate(steps):
            if not isinstance(raw, dict):
                continue
            step_id = raw.get("id")
            if isinstance(step_id, str):
                self.written_ids.setdefault(step_id, index)
            if is_step_id(step_id) and step_id not in self.step_index:
                self.step_index[step_id] = index
                type_name = raw.get("type")
                self.step_type[step_id] = self.registry.get(type_name) if isinstance(type_name, str) else None

    def check_steps(self) -> None:
        steps = self.data.get("steps")
        if steps is None:
            self.error("steps", "required: a list of steps", code="required")
            return
        if not isinstance(steps, list):
            self.error("steps", f"must be a list of steps, not {_kind(steps)}", code="type")
            return
        if not steps:
            self.error("steps", "a workflow needs at least one step", code="empty")
            return
        for index, raw in enumerate(steps):
            self.check_step(index, raw)

    def check_step(self, index: int, raw: Any) -> None:
        path = join_path("steps", index)
        if not isinstance(raw, dict):
            self.error(path, f"a step must be an object, not {_kind(raw)}", code="type")
            return
        step_id = raw.get("id")
        # Problems carry the id only when it names this step and no other.
        own_id = step_id if isinstance(step_id, str) and self.step_index.get(step_id) == index else None
        if step_id is None or step_id == "":
            self.error(join_path(path, "id"), "required: a unique id such as charge_card", code="required")
        elif not isinstance(step_id, str):
            self.error(join_path(path, "id"), f"must be a string, not {_kind(step_id)}", code="type")
        elif not is_step_id(step_id):
            self.error(join_path(path, "id"), f"{step_id!r} is not a valid step id: use letters, digits and "
                       "underscores, not starting with a digit, at most 64 (so steps.<id>.output works)",
                       code="invalid-id")
        elif own_id is None:
            self.error(join_path(path, "id"), f"duplicate step id {step_id!r} (also steps[{self.step_index[step_id]}])",
                       step_id=step_id, code="duplicate-id")
        for key in raw:
            if key not in STEP_FIELDS:
                self.error(join_path(path, key), f"unknown step field {key!r}; fields are: {', '.join(STEP_FIELDS)}",
                           own_id, code="unknown-field")
        for text_field in ("name", "description"):
            text = raw.get(text_field)
            if text is not None and not isinstance(text, str):
                self.error(join_path(path, text_field), f"must be a string, not {_kind(text)}", own_id, code="type")
            elif text_field == "name" and text is not None and len(text) > MAX_NAME_LENGTH:
                self.error(join_path(path, text_field), f"is {len(text)} characters long; at most {MAX_NAME_LENGTH}", own_id,
                           code="too-long")

        type_name = raw.get("type")
        step_type = None
        if type_name is None:
            self.error(join_path(path, "type"), f"required: one of {', '.join(self.registry)}", own_id, code="required")
        elif not isinstance(type_name, str) or type_name not in self.registry:
            self.error(join_path(path, "type"), f"unknown step type {type_name!r}; types are: {', '.join(self.registry)}",
                       own_id, code="unknown-type")
        else:
            step_type = self.registry[type_name]

        config = raw.get("config")
        config_path = join_path(path, "config")
        if config is None:
            config = {}
        if not isinstance(config, dict):
            self.error(config_path, f"must be an object, not {_kind(config)}", own_id, code="type")
        elif step_type is not None:
            self.check_config(config_path, config, step_type, own_id)
            self.check_config_expressions(config_path, config, step_type, own_id)
            for topic_field in step_type.topic_fields:
                topic = config.get(topic_field)
                if isinstance(topic, str) and topic:
                    # A template field may render its topic at run time (the runner checks that).
                    widget = step_type.config_schema.get("properties", {}).get(topic_field, {}).get("x-widget")
                    self.check_topic(join_path(config_path, topic_field), topic, own_id, templated=widget == "template")

        self.check_retry(path, raw.get("retry"), step_type, own_id)
        timeout = raw.get("timeout_seconds")
        if timeout is not None and (not _is_number(timeout) or not 0 < timeout <= MAX_TIMER_SECONDS):
            self.error(join_path(path, "timeout_seconds"),
                       f"must be a number of seconds > 0 and at most {MAX_TIMER_SECONDS} (366 days), not {timeout!r}",
                       own_id, code="invalid-timeout")

    def check_topic(self, path: str, topic: Any, step_id: str | None, templated: bool) -> None:
        problem = topic_problem(topic, self.topic_prefix, templated)
        if problem is not None:
            code, message = problem
            self.error(path, message, step_id, code=code)

    def check_config(self, config_path: str, config: dict, step_type: Any, step_id: str | None) -> None:
        validator = _validator(step_type)
        for error in sorted(validator.iter_errors(config), key=lambda e: [str(part) for part in e.absolute_path]):
            location = config_path
            for part in error.absolute_path:
                location = join_path(location, part)
            if error.validator == "required":
                missing = [name for name in error.validator_value if isinstance(error.instance, dict)
                           and name not in error.instance and f"{name!r} is a required property" == error.message]
                for name in missing:
                    title = error.schema.get("properties", {}).get(name, {}).get("title", name)
                    self.error(join_path(location, name), f"required: {title}", step_id, code="required")
            elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
                known = error.schema.get("properties", {})
                for name in error.instance:
                    if name not in known:
                        self.error(join_path(location, name),
                                   f"unknown field {name!r}; fields are: {', '.join(known) or 'none'}",
                                   step_id, code="unknown-field")
            elif error.validator in ("anyOf", "oneOf") and error.context:
                reasons = "; or ".join(dict.fromkeys(sub.message for sub in error.context))
                self.error(location, f"{error.instance!r} does not fit: {reasons}", step_id, code="schema")
            else:
                self.error(location, error.message, step_id, code="schema")
        for field_path, message in step_type.check_config(config):
            self.error(f"{config_path}.{field_path}" if not field_path.startswith("[") else config_path + field_path,
                       message, step_id, code="invalid-config")

    def check_config_expressions(self, config_path: str, config: dict, step_type: Any, step_id: str | None) -> None:
        for key, value in config.items():
            names = step_type.names_for(key)
            path = join_path(config_path, key)
            if key in step_type.condition_fields:
                if isinstance(value, str) and value.strip():
                    self.check_expression(path, value, names, step_id, step_type)
            else:
                self.check_templates(path, value, names, step_id, step_type)

    def check_templates(self, path: str, value: Any, names: tuple, step_id: str | None, step_type: Any) -> None:
        """Check every template string inside `value` (walked without recursion: JSON may be deep)."""
        from . import expressions

        pending = [(path, value)]
        while pending:
            path, value = pending.pop()
            if isinstance(value, dict):
                pending.extend(reversed([(join_path(path, key), item) for key, item in value.items()]))
            elif isinstance(value, list):
                pending.extend(reversed([(join_path(path, index), item) for index, item in enumerate(value)]))
            elif expressions.is_template(value):
                try:
                    references = expressions.template_references(value)
                except expressions.ExpressionError as exc:
                    self.error(path, str(exc), step_id, code="bad-template")
                    continue
                except RecursionError:
                    self.error(path, "the template is nested too deeply", step_id, code="bad-template")
                    continue
                self.check_references(path, references, names, step_id, step_type)

    def check_expression(self, path: str, expression: str, names: tuple, step_id: str | None,
                         step_type: Any = None) -> None:
        from . import expressions

        try:
            references = expressions.expression_references(expression)
        except expressions.ExpressionError as exc:
            self.error(path, str(exc), step_id, code="bad-expression")
            return
        except RecursionError:
            self.error(path, "the expression is nested too deeply", step_id, code="bad-expression")
            return
        self.check_references(path, references, names, step_id, step_type)

    def check_references(self, path: str, references: Any, names: tuple, step_id: str | None, step_type: Any) -> None:
        for name in sorted(references.names):
            if name not in names:
                self.error(path, f"unknown name {name!r}; available here: {', '.join(names)}", step_id, code="unknown-name")
        if "secret" in references.names and "secret" in names and step_type is not None and step_type.runs_on != "worker":
            self.warning(path, f"secret() is resolved only by worker steps (http, python); a {step_type.name} step "
                         "would pass the marker on, not the value", step_id, code="secret-not-resolved")
        if "steps" in references.names and "steps" in names:
            for referenced in sorted(references.step_ids):
                if referenced not in self.step_index:
                    known = ", ".join(self.step_index) or "none"
                    self.error(path, f"steps.{referenced} refers to no step; step ids are: {known}", step_id,
                               code="unknown-step")
                elif step_id is not None:
                    self.references.append((step_id, referenced, path))

    def check_retry(self, step_path: str, retry: Any, step_type: Any, step_id: str | None) -> None:
        if retry is None:
            return
        path = join_path(step_path, "retry")
        if not isinstance(retry, dict):
            self.error(path, f"must be an object, not {_kind(retry)}", step_id, code="type")
            return
        for key in retry:
            if key not in RETRY_FIELDS:
                self.error(join_path(path, key), f"unknown retry field {key!r}; fields are: {', '.join(RETRY_FIELDS)}",
                           step_id, code="unknown-field")
        attempts = retry.get("max_attempts")
        if attempts is not None:
            if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= MAX_ATTEMPTS:
                self.error(join_path(path, "max_attempts"),
                           f"must be a whole number from 1 to {MAX_ATTEMPTS}, not {attempts!r}",
                           step_id, code="invalid-retry")
            elif attempts > 1 and step_type is not None and not step_type.retryable:
                self.warning(join_path(path, "max_attempts"), f"{step_type.name} steps are never retried", step_id,
                             code="ignored")
        seconds = f"a number of seconds from 0 to {MAX_BACKOFF_SECONDS} (a day)"
        backoff = retry.get("backoff_seconds")
        backoff_ok = backoff is None or (_is_number(backoff) and 0 <= backoff <= MAX_BACKOFF_SECONDS)
        if not backoff_ok:
            self.error(join_path(path, "backoff_seconds"), f"must be {seconds}, not {backoff!r}",
                       step_id, code="invalid-retry")
        multiplier = retry.get("backoff_multiplier")
        if multiplier is not None and (not _is_number(multiplier) or not 1 <= multiplier <= MAX_BACKOFF_MULTIPLIER):
            self.error(join_path(path, "backoff_multiplier"),
                       f"must be a number from 1 to {MAX_BACKOFF_MULTIPLIER}, not {multiplier!r}",
                       step_id, code="invalid-retry")
        ceiling = retry.get("max_backoff_seconds")
        if ceiling is not None:
            floor = RetryPolicy.backoff_seconds if backoff is None else backoff
            if not _is_number(ceiling) or not 0 <= ceiling <= MAX_BACKOFF_SECONDS:
                self.error(join_path(path, "max_backoff_seconds"), f"must be {seconds}, not {ceiling!r}",
                           step_id, code="invalid-retry")
            elif backoff_ok and ceiling < floor:
                self.error(join_path(path, "max_backoff_seconds"),
                           f"{ceiling!r} is less than backoff_seconds ({floor!r})", step_id, code="invalid-retry")

    # ---- edges ----
    def check_edges(self) -> None:
        edges = self.data.get("edges")
        if edges is None:
            return
        if not isinstance(edges, list):
            self.error("edges", f"must be a list of edges, not {_kind(edges)}", code="type")
            return
        seen: dict[tuple[str, str, str], int] = {}
        for index, edge in enumerate(edges):
            path = join_path("edges", index)
            if not isinstance(edge, dict):
                self.error(path, f"an edge must be an object like {{\"from\": \"a\", \"to\": \"b\"}}, not {_kind(edge)}",
                           code="type")
                continue
            for key in edge:
                if key not in EDGE_FIELDS:
                    self.error(join_path(path, key), f"unknown edge field {key!r}; fields are: {', '.join(EDGE_FIELDS)}",
                               code="unknown-field")
            source, target = edge.get("from"), edge.get("to")
            source_ok = self.check_endpoint(join_path(path, "from"), source, target)
            target_ok = self.check_endpoint(join_path(path, "to"), target, source)
            port = edge.get("port")
            port_ok = True
            if source_ok:
                ports = self.step_type[source].ports if self.step_type.get(source) is not None else None
                if port is None:
                    port = "out"
                    if ports is not None and "out" not in ports:
                        self.error(join_path(path, "port"), f"required: {source} has the ports {', '.join(ports)}",
                                   source, code="required")
                        port_ok = False
                elif not isinstance(port, str) or (ports is not None and port not in ports):
                    listed = ", ".join(ports) if ports else "out"
                    self.error(join_path(path, "port"), f"{source} has no port {port!r}; its ports are: {listed}",
                               source, code="unknown-port")
                    port_ok = False
            if not (source_ok and target_ok and port_ok):
                continue
            if source == target:
                self.error(path, f"edge from {source} to itself", source, code="self-loop")
                continue
            key = (source, port, target)
            if key in seen:
                self.error(path, f"duplicate of edges[{seen[key]}] ({source} -> {target})", source, code="duplicate-edge")
                continue
            seen[key] = index
            self.graph_edges.append((index, source, port, target))

    def check_endpoint(self, path: str, step_id: Any, other: Any) -> bool:
        other_id = other if isinstance(other, str) and other in self.step_index else None
        if step_id is None or step_id == "":
            self.error(path, "required: a step id", other_id, code="required")
            return False
        if not isinstance(step_id, str):
            self.error(path, f"must be a step id string, not {_kind(step_id)}", other_id, code="type")
            return False
        if step_id not in self.step_index:
            if step_id in self.written_ids:
                message = f"steps[{self.written_ids[step_id]}] has the id {step_id!r}, which is not valid; fix it there"
            else:
                known = ", ".join(self.step_index) or "none"
                message = f"no step has the id {step_id!r} (dangling edge); step ids are: {known}"
            self.error(path, message, other_id, code="unknown-step")
            return False
        return True

    # ---- graph ----
    def check_graph(self) -> None:
        outgoing: dict[str, list[tuple[int, str]]] = {step_id: [] for step_id in self.step_index}
        connected: set[str] = set()
        for index, source, _port, target in self.graph_edges:
            outgoing[source].append((index, target))
            connected.update((source, target))
        acyclic = self.check_cycles(outgoing)
        if len(self.step_index) > 1:
            for step_id, index in self.step_index.items():
                if step_id not in connected and not self.has_invalid_edge(step_id):
                    self.warning(join_path("steps", index), f"{step_id} is connected to no other step: it runs on its own "
                                 "at the start of every run; connect it or remove it", step_id, code="unreachable")
        if acyclic:
            self.check_upstream_references(outgoing)

    def has_invalid_edge(self, step_id: str) -> bool:
        """Whether an edge (left out of the graph because of its own problem) touches the step."""
        edges = self.data.get("edges")
        if not isinstance(edges, list):
            return False
        return any(isinstance(edge, dict) and step_id in (edge.get("from"), edge.get("to")) for edge in edges)

    def check_cycles(self, outgoing: dict[str, list[tuple[int, str]]]) -> bool:
        """Report each cycle once, naming its steps in order; True if there is none.

        Iterative depth-first search (a long chain must not hit Python's recursion limit);
        a back edge closes a cycle made of the steps on the stack from its target on.
        """
        WHITE, GREY, BLACK = 0, 1, 2
        colour = {step_id: WHITE for step_id in outgoing}
        in_reported_cycle: set[str] = set()
        acyclic = True
        for root in outgoing:
            if colour[root] != WHITE:
                continue
            stack: list[tuple[str, int]] = [(root, 0)]
            path: list[str] = [root]
            colour[root] = GREY
            while stack:
                node, position = stack[-1]
                if position < len(outgoing[node]):
                    stack[-1] = (node, position + 1)
                    edge_index, target = outgoing[node][position]
                    if colour[target] == WHITE:
                        colour[target] = GREY
                        stack.append((target, 0))
                        path.append(target)
                    elif colour[target] == GREY:
                        acyclic = False
                        cycle = path[path.index(target):]
                        if not in_reported_cycle.issuperset(cycle):
                            in_reported_cycle.update(cycle)
                            self.error(join_path("edges", edge_index),
                                       "cycle: " + " -> ".join(cycle + [target]) + " (workflows are acyclic graphs)",
                                       target, code="cycle")
                else:
                    colour[node] = BLACK
                    stack.pop()
                    path.pop()
        return acyclic

    def check_upstream_references(self, outgoing: dict[str, list[tuple[int, str]]]) -> None:
        """Warn where a step reads steps.<id> of a step that does not run before it."""
        incoming: dict[str, list[str]] = {step_id: [] for step_id in outgoing}
        for source, targets in outgoing.items():
            for _index, target in targets:
                incoming[target].append(source)
        ancestors: dict[str, set[str]] = {}

        def upstream(step_id: str) -> set[str]:
            # Iterative post-order so deep graphs do not recurse.
            pending = [step_id]
            while pending:
                current = pending[-1]
                missing = [parent for parent in incoming[current] if parent not in ancestors]
                if missing:
                    pending.extend(missing)
                    continue
                pending.pop()
                if current not in ancestors:
                    result: set[str] = set()
                    for parent in incoming[current]:
                        result.add(parent)
                        result |= ancestors[parent]
                    ancestors[current] = result
            return ancestors[step_id]

        for step_id, referenced, path in self.references:
            if referenced not in upstream(step_id):
                self.warning(path, f"steps.{referenced} does not run before {step_id} (no path of edges from it), "
                             "so its output is empty here", step_id, code="not-upstream")

    # ---- layout ----
    def check_layout(self) -> None:
        layout = self.data.get("layout")
        if layout is None:
            return
        if not isinstance(layout, dict):
            self.error("layout", f"must be an object of step id -> {{x, y}}, not {_kind(layout)}", code="type")
            return
        for step_id, position in layout.items():
            path = join_path("layout", step_id)
            if step_id not in self.step_index:
                self.warning(path, f"position for {step_id!r}, which is not a step; it is ignored", code="unknown-step")
                continue
            if not isinstance(position, dict) or not all(_is_number(position.get(axis)) for axis in LAYOUT_FIELDS):
                self.error(path, f"must be {{\"x\": number, \"y\": number}}, not {json.dumps(position)[:80]}", step_id,
                           code="type")
                continue
            for key in position:
                if key not in LAYOUT_FIELDS:
                    self.error(join_path(path, key), f"unknown layout field {key!r}; fields are: x, y", step_id,
                               code="unknown-field")


_validators: dict[str, Any] = {}


def _full_pattern(validator, pattern, instance, schema):
    """JSON Schema's `pattern`, with a final `$` meaning the end of the text (`\\Z`).

    jsonschema runs patterns with Python's `re.search`, where `$` also matches before a
    trailing newline, so `^[a-z]+$` would accept "name\\n"; in JSON Schema (ECMA-262) it does not.
    """
    from jsonschema.exceptions import ValidationError

    if not isinstance(instance, str):
        return
    strict = pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern
    if re.search(strict, instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _validator(step_type: Any):
    """One compiled JSON schema validator per step type (schemas are constant)."""
    from jsonschema import Draft202012Validator, validators

    validator = _validators.get(step_type.name)
    if validator is None:
        strict = validators.extend(Draft202012Validator, {"pattern": _full_pattern})
        validator = _validators[step_type.name] = strict(step_type.config_schema)
    return validator


if __name__ == "__main__":  # python -m orchestrator.spec > docs/workflow.schema.json
    import sys

    sys.stdout.write(schema_json())
