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

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import expressions


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


Instruction = Complete | Fail | Sleep | AwaitSignal | AwaitEvent | Emit


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

    # ---- shared helpers ----
    def render_config(self, config: dict, context: dict) -> dict:
        """Render templates in the config; condition fields are left for the type to evaluate."""
        rendered = {}
        for key, value in (config or {}).items():
            rendered[key] = value if key in self.condition_fields else expressions.render(value, context)
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
        """Do the work with the rendered, secret-resolved config; return output or raise."""
        raise NotImplementedError(f"{self.name} is not run by a worker")
