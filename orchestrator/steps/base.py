"""What a step type is: the contract every module in `orchestrator/steps/` implements.

A step type declares, in one place, everything the rest of Sluice needs to know about it:
- for the designer: label, group, icon, description, the JSON schema of its config (the side
  panel's form is generated from it) and its output ports;
- for validation: the schema, plus which config fields are bare conditions (not templates);
- for the engine: whether the engine itself runs it (`runs_on = "engine"`: cheap, pure,
  deterministic work such as transform or branch, and waits on timers, signals and events)
  or a worker does (`runs_on = "worker"`: calls to the outside world, at-least-once).

Engine-run types return an Instruction from `start` (and from `on_signal`, `on_event`,
`on_timeout` when they wait); the engine turns instructions into state changes and effects.
Worker-run types implement `execute`, which returns the step's output or raises to fail.
Retries are decided by the engine from the step's retry policy, never by the type.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import expressions

# Names an expression in a step's config may use, unless the type says otherwise for a field
# (`StepType.expression_names`). `secret` only makes sense where a worker resolves it.
DEFAULT_EXPRESSION_NAMES = ("trigger", "record", "steps", "run", "secret")


# ---- instructions an engine-run step returns ---------------------------------------------
@dataclass(frozen=True)
class Complete:
    """The step succeeded with `output`; edges from `port` are followed, the others skipped."""

    output: Any = None
    port: str = "out"


@dataclass(frozen=True)
class Fail:
    """The step failed. `retryable=False` ends it at once, whatever its retry policy says."""

    error: str
    retryable: bool = False


@dataclass(frozen=True)
class Sleep:
    """Wait `seconds`, then complete with `output` (the `delay` type)."""

    seconds: float
    output: Any = None


@dataclass(frozen=True)
class AwaitSignal:
    """Wait for a signal called `name` (the `approval` type); `on_signal` decides the outcome."""

    name: str
    timeout_seconds: float | None = None
    # Shown to the people who decide (e.g. {"instructions": "..."}), for history and the monitor.
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AwaitEvent:
    """Wait for a record on `topic` whose `key_expression` evaluates to `correlation`."""

    topic: str
    correlation: str
    key_expression: str
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class Emit:
    """Produce one record (inside the engine's Kafka transaction), then complete with `output`."""

    topic: str
    value: Any
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    output: Any = None


@dataclass(frozen=True)
class RunChildren:
    """Run other workflows' runs and wait for them: one (`subworkflow`) or one per item
    (`foreach`, at most `concurrency` at once). `version` None: the live version. The step's
    `child_input(config, context, item, index)` renders each item's input when it starts."""

    workflow: str
    version: int | None
    items: list | None = None  # None: a single child with `input`
    input: Any = None
    concurrency: int = 1
    on_item_failure: str = "fail"  # or "collect"


Instruction = Complete | Fail | Sleep | AwaitSignal | AwaitEvent | Emit | RunChildren


@dataclass(frozen=True)
class TaskContext:
    """What a worker-run step knows about the attempt it is executing."""

    run_id: str
    workflow: str
    version: int
    step_id: str
    attempt: int
    # Stable for one attempt of one step: pass it to external services that deduplicate.
    idempotency_key: str
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class Pending:
    """What a worker-run step's `execute` returns when the work goes on elsewhere (a Celery
    task): the attempt stays running, `details` go to history, and the outcome arrives later as
    a StepResult for the same attempt (the step's timeout still bounds the wait)."""

    details: dict = field(default_factory=dict)


class StepFailure(Exception):
    """A failure the step explains in full in its message: a bad config value, a missing secret,
    an answer the step did not expect. Workers report it as that one sentence, without a
    traceback (which would only show Sluice's own code and server paths); any other exception
    from `execute` is a bug or a handler's own error and keeps its traceback."""


class StepConfigError(StepFailure, ValueError):
    """A config value that cannot be used at run time; `field` is its path inside `config`."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"config.{field}: {message}")


def fails_cleanly(method):
    """Turn a bad config value or a failing expression into a non-retryable Fail.

    Both are deterministic: retrying the same config on the same context fails the same way,
    so the step ends at once with an error naming the field, instead of crashing the engine.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (StepConfigError, expressions.ExpressionError) as exc:
            return Fail(str(exc), retryable=False)

    return wrapper


# ---- JSON schema helpers: every property carries title, description and default ----------
def template_property(title: str, description: str, default: Any = "", **extra) -> dict:
    """A string that may hold `{{ ... }}` templates."""
    return {"type": "string", "title": title, "description": description, "default": default,
            "x-widget": "template", **extra}


def expression_property(title: str, description: str, default: Any = "", **extra) -> dict:
    """A bare expression such as `trigger.total > 100` (no braces)."""
    return {"type": "string", "title": title, "description": description, "default": default,
            "minLength": 1, "x-widget": "expression", **extra}


def json_property(title: str, description: str, default: Any = None, **extra) -> dict:
    """Any JSON value; strings inside it are templates."""
    return {"title": title, "description": description, "default": default, "x-widget": "json", **extra}


def number_or_template_property(title: str, description: str, default: Any, minimum: float = 0,
                                maximum: float | None = None) -> dict:
    """A number, or a template string that renders to one at run time."""
    number = {"type": "number", "minimum": minimum}
    if maximum is not None:
        number["maximum"] = maximum
    return {
        "title": title,
        "description": description,
        "default": default,
        "x-widget": "template",
        "anyOf": [
            number,
            {"type": "string", "pattern": r"\{\{|^\s*[0-9]+(\.[0-9]+)?\s*$"},
        ],
    }


def as_number(value: Any, field: str, minimum: float = 0) -> float:
    """A rendered config value as a number >= minimum, or StepConfigError naming the field."""
    if isinstance(value, bool):
        raise StepConfigError(field, f"expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise StepConfigError(field, f"expected a number, got {value!r}") from None
    if number != number or number < minimum or number == float("inf"):
        raise StepConfigError(field, f"expected a number >= {minimum:g}, got {value!r}")
    return number


def as_text(value: Any) -> str:
    """A rendered value as text: strings as they are, other JSON values as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class StepType:
    """Base class of step types; subclasses live one per module in this package."""

    name: ClassVar[str]
    label: ClassVar[str]
    group: ClassVar[str] = "Logic"
    icon: ClassVar[str] = "box"
    description: ClassVar[str] = ""
    config_schema: ClassVar[dict] = {"type": "object"}
    ports: ClassVar[tuple[str, ...]] = ("out",)
    runs_on: ClassVar[str] = "engine"  # or "worker"
    queue: ClassVar[str] = "default"
    # Config fields (top level) holding bare expressions rather than templates.
    condition_fields: ClassVar[tuple[str, ...]] = ()
    # Whether the step's retry policy applies (a `fail` step, say, never retries).
    retryable: ClassVar[bool] = True
    # Config fields (top level) naming a Kafka topic: validation refuses Sluice's own topics there.
    topic_fields: ClassVar[tuple[str, ...]] = ()
    # Per config field (top level), the names its expressions may use when they differ from
    # DEFAULT_EXPRESSION_NAMES (wait_for_event's key_expression sees `event` and `record`).
    expression_names: ClassVar[dict[str, tuple[str, ...]]] = {}

    def check_config(self, config: dict) -> list[tuple[str, str]]:
        """Checks the JSON schema cannot express: (field path inside config, message) pairs."""
        return []

    def names_for(self, field_name: str) -> tuple[str, ...]:
        """The names expressions in the top-level config field `field_name` may use."""
        return self.expression_names.get(field_name, DEFAULT_EXPRESSION_NAMES)

    # ---- shared helpers ----
    def render_config(self, config: dict, context: dict) -> dict:
        """Render templates in the config; condition fields are left for the type to evaluate.

        For worker-run types the result also lists, under `expressions.SECRET_REFS_KEY`, where
        the secret markers that rendering produced are (JSON pointers into the result): the
        worker resolves those and only those (see orchestrator/expressions.py). Engine-run
        types never resolve secrets; their markers stay text.
        """
        rendered: dict = {}
        refs: list[dict] = []
        for key, value in (config or {}).items():
            if key == expressions.SECRET_REFS_KEY:
                raise expressions.ExpressionError(f"config.{key}: this name is reserved for Sluice")
            if key in self.condition_fields:
                rendered[key] = value
                continue
            try:
                rendered[key], key_refs = expressions.render_with_secrets(value, context)
            except expressions.ExpressionError as exc:
                # Same exception type, now naming the field, so run errors point at the form field.
                raise expressions.ExpressionError(f"config.{key}: {exc}") from None
            refs += [{**ref, "at": f"/{expressions.pointer_part(key)}{ref['at']}"} for ref in key_refs]
        if refs and self.runs_on == "worker":
            rendered[expressions.SECRET_REFS_KEY] = refs
        return rendered

    def describe(self) -> dict:
        """The registry entry served to the designer and by GET /api/step-types/."""
        return {
            "type": self.name,
            "label": self.label,
            "group": self.group,
            "icon": self.icon,
            "description": self.description,
            "config_schema": self.config_schema,
            "ports": list(self.ports),
            "runs_on": self.runs_on,
            "condition_fields": list(self.condition_fields),
            "retryable": self.retryable,
            "expression_names": {name: list(self.names_for(name)) for name in self.config_schema.get("properties", {})},
        }

    # ---- engine-run types ----
    def start(self, config: dict, context: dict) -> Instruction:
        """Begin the step. `config` is the raw config; render it with `render_config`."""
        raise NotImplementedError(f"{self.name} is not run by the engine")

    def on_signal(self, config: dict, context: dict, payload: Any) -> Instruction:
        raise NotImplementedError(f"{self.name} does not take signals")

    def on_event(self, config: dict, context: dict, event: Any) -> Instruction:
        raise NotImplementedError(f"{self.name} does not wait for events")

    def on_timeout(self, config: dict, context: dict) -> Instruction:
        return Fail("timed out", retryable=False)

    # ---- worker-run types ----
    def execute(self, config: dict, task: TaskContext) -> Any:
        """Do the work with the rendered, secret-resolved config; return output or raise.

        Raise StepFailure (or a subclass) for a failure the message explains in full: it is
        reported as that sentence. Anything else is reported with its traceback."""
        raise NotImplementedError(f"{self.name} is not run by a worker")
