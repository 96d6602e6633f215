"""The workflow definition: parse and validate (pure: no Django, no Kafka).

The JSON format is the public contract of DESIGN.md section 4. `validate(data)` returns every
problem found, each naming the field path (`steps[1].config.url`) and the step id it concerns,
so the designer can mark the node and the API can answer 400 with all of them at once.
`parse(data)` returns a WorkflowSpec or raises InvalidDefinition carrying those problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TRIGGER_TYPES = ("manual", "kafka", "schedule", "webhook")


@dataclass(frozen=True)
class Problem:
    path: str  # "steps[1].config.url", "edges[0].to", "trigger.filter", "" for the whole document
    message: str
    step_id: str | None = None
    code: str = "invalid"

    def as_dict(self) -> dict:
        return {"path": self.path, "step_id": self.step_id, "code": self.code, "message": self.message}


class InvalidDefinition(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(f"{p.path or '(definition)'}: {p.message}" for p in problems[:5]))


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    backoff_seconds: float = 1.0
    backoff_multiplier: float = 2.0
    max_backoff_seconds: float = 300.0

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based) before the next one."""
        delay = self.backoff_seconds * (self.backoff_multiplier ** (attempt - 1))
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
    # Derived graph indexes, filled by parse().
    incoming: dict[str, tuple[Edge, ...]] = field(default_factory=dict)
    outgoing: dict[str, tuple[Edge, ...]] = field(default_factory=dict)

    @property
    def roots(self) -> list[str]:
        return [step_id for step_id in self.steps if not self.incoming.get(step_id)]


def validate(data: Any) -> list[Problem]:
    """Every problem in `data`, in document order; an empty list means it is valid."""
    raise NotImplementedError


def parse(data: Any) -> WorkflowSpec:
    """A validated WorkflowSpec, or InvalidDefinition with every problem."""
    problems = validate(data)
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
            name=raw.get("name", ""),
            retry=RetryPolicy(**retry),
            timeout_seconds=raw.get("timeout_seconds"),
        )
    edges = tuple(Edge(e["from"], e["to"], e.get("port") or "out") for e in data.get("edges", []))
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
        description=data.get("description", ""),
        trigger=trigger,
        steps=steps,
        edges=edges,
        layout=data.get("layout") or {},
        incoming={k: tuple(v) for k, v in incoming.items()},
        outgoing={k: tuple(v) for k, v in outgoing.items()},
    )
