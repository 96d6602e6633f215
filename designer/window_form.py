"""The trigger panel's window block: a Kafka trigger's `window` as form fields and back.

The window's own fields come from the definition's schema (WINDOW_FORM_SCHEMA) through designer.forms (one widget per
field, only the sizes the window type uses); its aggregates are an editable list of rows
(name, op, of, and limit for `collect`), posted as `window.aggregates-<n>.<field>` and changed
by the panel's "Add an aggregate" and remove buttons (the button that submitted the form says
which). The validator (orchestrator/spec.py check_window) has the last word; its problems are
put on the field or the aggregate row their path names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.spec import WINDOW_OPS, WINDOW_SCHEMA

from . import forms

# The window's fields as the definition's schema has them (orchestrator.spec WINDOW_SCHEMA):
# the aggregates are a list of rows here, not fields.
WINDOW_FORM_SCHEMA = forms.section_schema(forms.WINDOW_SCHEMA, ("type", "size_seconds", "advance_seconds", "gap_seconds",
                                                                 "grace_seconds", "key", "emit_topic"))
SHOWN = {
    "tumbling": ("type", "size_seconds", "grace_seconds", "key", "emit_topic"),
    "hopping": ("type", "size_seconds", "advance_seconds", "grace_seconds", "key", "emit_topic"),
    "session": ("type", "gap_seconds", "grace_seconds", "key", "emit_topic"),
}
# What a window starts as when the author ticks the box: valid at once, one run per minute and key.
NEW_WINDOW = {"type": "tumbling", "size_seconds": 60, "aggregates": {"records": {"op": "count"}}}
MAX_ROWS = WINDOW_SCHEMA["properties"]["aggregates"]["maxProperties"]


@dataclass
class AggregateRow:
    index: int
    name: str = ""
    op: str = "count"
    of: str = ""
    limit: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"window.aggregates-{self.index}"


@dataclass
class WindowForm:
    enabled: bool
    fields: list[forms.Field]
    rows: list[AggregateRow]
    ops: tuple = WINDOW_OPS
    errors: list[str] = field(default_factory=list)


def _rows_of(aggregates: dict) -> list[AggregateRow]:
    rows = []
    for index, (name, aggregate) in enumerate((aggregates or {}).items()):
        aggregate = aggregate if isinstance(aggregate, dict) else {}
        rows.append(AggregateRow(index, str(name), str(aggregate.get("op") or "count"), str(aggregate.get("of") or ""),
                                 "" if aggregate.get("limit") is None else str(aggregate.get("limit"))))
    return rows


def _posted_rows(post) -> list[AggregateRow]:
    removed = post.get("window.remove_aggregate")
    rows = []
    for index in range(MAX_ROWS + 1):
        prefix = f"window.aggregates-{index}"
        if f"{prefix}.name" not in post:
            break
        if removed == str(index):
            continue
        rows.append(AggregateRow(len(rows), post.get(f"{prefix}.name", "").strip(), post.get(f"{prefix}.op") or "count",
                                 post.get(f"{prefix}.of", "").strip(), post.get(f"{prefix}.limit", "").strip()))
    if post.get("window.add_aggregate") and len(rows) < MAX_ROWS:
        rows.append(AggregateRow(len(rows)))
    return rows


def _aggregates(rows: list[AggregateRow]) -> dict:
    """Rows with a name, as the trigger's `aggregates` (a bad limit stays on its row as an error)."""
    result = {}
    for row in rows:
        if not row.name:
            if row.of:
                row.errors.append("Give the aggregate a name: it is the field of the window run's input")
            continue
        aggregate = {"op": row.op}
        if row.of:
            aggregate["of"] = row.of
        if row.op == "collect" and row.limit:
            try:
                aggregate["limit"] = int(row.limit)
            except ValueError:
                row.errors.append("Limit must be a whole number")
        if row.name in result:
            row.errors.append(f"Another aggregate is called '{row.name}' already")
            continue
        result[row.name] = aggregate
    return result


def build(trigger: dict, post) -> tuple[WindowForm, dict | None]:
    """The window block of `trigger` (and, when `post` is given, the window read back from it).

    Returns (form, window): window None means the trigger has no window."""
    current = trigger.get("window") if isinstance(trigger.get("window"), dict) else None
    if post is None:
        window = current
        enabled = window is not None
    else:
        enabled = post.get("window.enabled") in ("on", "true", "1")
        window = (current or dict(NEW_WINDOW)) if enabled else None
    if not enabled:
        return WindowForm(False, [], []), None
    kind = post.get("window.type") if post is not None and post.get("window.type") else window.get("type")
    kind = kind if kind in SHOWN else "tumbling"
    fields = forms.fields_for(WINDOW_FORM_SCHEMA, window, "window", (), only=SHOWN[kind])
    if post is None or current is None:
        # Shown as stored (or as a newly ticked box starts).
        return WindowForm(True, fields, _rows_of(window.get("aggregates"))), window
    values = forms.read_section(fields, post, WINDOW_FORM_SCHEMA, {k: v for k, v in window.items() if k in SHOWN[kind]})
    rows = _posted_rows(post)
    new = {**values, "aggregates": _aggregates(rows)}
    return WindowForm(True, fields, rows), new


def attach(problems, form: WindowForm) -> list:
    """Put window problems (paths `trigger.window...`) on their field or aggregate row; return the rest."""
    rest = []
    by_key = {f.key: f for f in form.fields}
    by_name = {row.name: row for row in form.rows if row.name}
    for problem in problems:
        path = problem.path
        if not path.startswith("trigger.window"):
            rest.append(problem)
            continue
        inner = path[len("trigger.window"):].lstrip(".")
        if inner.startswith("aggregates"):
            name = inner[len("aggregates"):].lstrip(".").split(".")[0].split("[")[0].strip('"')
            row = by_name.get(name)
            if row is not None:
                row.errors.append(problem.message)
            else:
                form.errors.append(problem.message if not inner[len("aggregates"):] else f"{inner}: {problem.message}")
            continue
        target = by_key.get(inner.split(".")[0].split("[")[0])
        if target is not None:
            if problem.message not in target.errors:
                target.errors.append(problem.message)
        elif problem.message not in form.errors:
            form.errors.append(problem.message if not inner else f"{inner}: {problem.message}")
    return rest
