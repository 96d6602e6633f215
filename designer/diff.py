"""What changed between two versions of a workflow definition.

Steps are matched by id, so a moved or re-configured step shows as "changed" with the exact
fields that differ (`config.url`, `retry.max_attempts`), not as removed-and-added. Layout
moves are reported separately: they change how the canvas looks, not what runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_MISSING = object()


@dataclass
class StepChange:
    id: str
    type: str
    fields: list[str]


@dataclass
class DefinitionDiff:
    steps_added: list[str] = field(default_factory=list)
    steps_removed: list[str] = field(default_factory=list)
    steps_changed: list[StepChange] = field(default_factory=list)
    edges_added: list[str] = field(default_factory=list)
    edges_removed: list[str] = field(default_factory=list)
    trigger_fields: list[str] = field(default_factory=list)
    workflow_fields: list[str] = field(default_factory=list)  # name, description, ...
    layout_changed: bool = False

    @property
    def is_empty(self) -> bool:
        return not (self.steps_added or self.steps_removed or self.steps_changed or self.edges_added
                    or self.edges_removed or self.trigger_fields or self.workflow_fields or self.layout_changed)

    def as_dict(self) -> dict:
        return {
            "steps_added": self.steps_added,
            "steps_removed": self.steps_removed,
            "steps_changed": [{"id": c.id, "type": c.type, "fields": c.fields} for c in self.steps_changed],
            "edges_added": self.edges_added,
            "edges_removed": self.edges_removed,
            "trigger_fields": self.trigger_fields,
            "workflow_fields": self.workflow_fields,
            "layout_changed": self.layout_changed,
        }


def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves that differ; lists compare as one value (order matters)."""
    if isinstance(old, dict) and isinstance(new, dict):
        paths: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            paths += changed_paths(old.get(key, _MISSING), new.get(key, _MISSING),
                                   f"{prefix}.{key}" if prefix else str(key))
        return paths
    return [] if old == new else [prefix]


def edge_label(edge: dict) -> str:
    port = edge.get("port") or "out"
    suffix = "" if port == "out" else f" [{port}]"
    return f"{edge.get('from')} → {edge.get('to')}{suffix}"


def diff_definitions(old: dict, new: dict) -> DefinitionDiff:
    old, new = old or {}, new or {}
    result = DefinitionDiff()
    old_steps = {s.get("id"): s for s in old.get("steps") or [] if isinstance(s, dict)}
    new_steps = {s.get("id"): s for s in new.get("steps") or [] if isinstance(s, dict)}
    result.steps_added = [sid for sid in new_steps if sid not in old_steps]
    result.steps_removed = [sid for sid in old_steps if sid not in new_steps]
    for sid, step in new_steps.items():
        if sid in old_steps:
            fields = changed_paths(old_steps[sid], step)
            if fields:
                result.steps_changed.append(StepChange(sid, step.get("type", ""), fields))
    old_edges = [edge_label(e) for e in old.get("edges") or [] if isinstance(e, dict)]
    new_edges = [edge_label(e) for e in new.get("edges") or [] if isinstance(e, dict)]
    result.edges_added = [e for e in new_edges if e not in old_edges]
    result.edges_removed = [e for e in old_edges if e not in new_edges]
    result.trigger_fields = changed_paths(old.get("trigger") or {}, new.get("trigger") or {})
    top = (set(old) | set(new)) - {"steps", "edges", "trigger", "layout"}
    result.workflow_fields = sorted(k for k in top if old.get(k) != new.get(k))
    result.layout_changed = (old.get("layout") or {}) != (new.get("layout") or {})
    return result
