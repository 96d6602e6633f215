"""Side-panel forms generated from a step type's JSON schema (or the trigger's).

`fields_for(...)` turns a schema into field descriptors the template renders one widget per
type (string -> text input, or template/expression input where the schema's `x-widget` says
so, condition field -> expression input, a workflow slug -> text input offering the existing
workflows, "live" or a version number -> version input, number/integer, boolean,
enum -> select, anything else -> JSON textarea). `read_step_form(...)` reads the POSTed panel
back into a step dict, collecting per-field errors (unparsable numbers or JSON, schema
violations) instead of raising, so the panel can show them inline next to the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from orchestrator import spec

# The forms' schemas are parts of the definition's one JSON Schema (orchestrator.spec
# definition_schema): each field's type, enum, bounds, default, title and description are
# written there once, for validation, these forms, the served schema and the docs alike.
DEFINITION_SCHEMA = spec.definition_schema()
_DEFS = DEFINITION_SCHEMA["$defs"]


def section_schema(schema: dict, keys=None) -> dict:
    """A form section's schema: `schema`'s properties (all, or those in `keys`, in schema order)
    and which of them are required. Conditions across fields (if/then) are left to the
    validator, whose problems the panel puts on their field."""
    properties = {key: prop for key, prop in (schema.get("properties") or {}).items()
                  if (keys is None or key in keys) and "$ref" not in prop}
    required = [key for key in schema.get("required") or [] if key in properties]
    return {"type": "object", "required": required, "properties": properties}


# Fields every step has besides its config (DESIGN.md section 4) that the panel's step section shows.
# None required: an id left empty keeps the step's id (designer.views._step_panel checks a new one).
STEP_FIELDS_SCHEMA = {**section_schema(_DEFS["step"], ("id", "name", "timeout_seconds")), "required": []}
RETRY_SCHEMA = section_schema(_DEFS["retry"])
# Every trigger field but the window, which has its own block (designer/window_form.py).
TRIGGER_SCHEMA = section_schema(_DEFS["trigger"])
WINDOW_SCHEMA = _DEFS["window"]
# Which trigger fields the panel shows for each trigger type (in schema order): the type's own
# fields, and a filter where there is an event to filter.
TRIGGER_FIELDS = {
    kind: tuple(key for key in TRIGGER_SCHEMA["properties"]
                if key in spec.TRIGGER_FIELDS[kind] or (key == "filter" and kind in spec.FILTERED_TRIGGERS))
    for kind in spec.TRIGGER_TYPES
}
TRIGGER_CONDITIONS = ("filter",)


@dataclass
class Field:
    name: str  # form field name, e.g. "config.url"
    key: str  # key inside its section, e.g. "url"
    label: str
    widget: str  # template | condition | text | number | integer | boolean | select | json
    value: Any = ""
    help: str = ""
    required: bool = False
    choices: list = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    minimum: Any = None
    placeholder: str = ""


def _schema_kind(prop: dict) -> str:
    kinds = prop.get("type")
    if isinstance(kinds, list):
        kinds = [k for k in kinds if k != "null"]
        kinds = kinds[0] if len(kinds) == 1 else "json"
    return kinds or "json"


# Step types may name the widget outright (`"x-widget": "template" | "expression" | "json"`).
X_WIDGETS = {"text": "text", "template": "template", "expression": "condition", "condition": "condition", "json": "json",
             "workflow": "workflow"}


def _is_version(prop: dict) -> bool:
    """`"live"` or a version number (steps.subworkflow.version_property, on_failure.version)."""
    options = prop.get("anyOf") or []
    return any(o.get("const") == "live" for o in options) and any(o.get("type") == "integer" for o in options)


def widget_for(prop: dict, key: str, conditions: tuple | list) -> str:
    if "enum" in prop:
        return "select"
    if _is_version(prop):
        return "version"
    if prop.get("x-widget") in X_WIDGETS:
        return X_WIDGETS[prop["x-widget"]]
    kind = _schema_kind(prop)
    if kind == "string":
        # A template only where the step type says so (steps.base.template_property): a handler
        # name or a topic pattern is typed as it is, `{{ }}` in it would be taken literally.
        return "condition" if key in conditions else "text"
    if kind in ("number", "integer", "boolean"):
        return kind
    return "json"


def _display_value(widget: str, value: Any) -> Any:
    if value is None:
        return ""
    if widget == "json":
        return json.dumps(value, indent=2)
    return value


def fields_for(schema: dict, values: dict, prefix: str, conditions=(), only=None) -> list[Field]:
    """One Field per schema property (in schema order), filled from `values`."""
    required = set(schema.get("required") or [])
    result = []
    for key, prop in (schema.get("properties") or {}).items():
        if only is not None and key not in only:
            continue
        widget = widget_for(prop, key, conditions)
        value = values.get(key)
        default = prop.get("default")
        # Defaults show as placeholders: submitting the form must not copy them into the config.
        placeholder = "" if default in (None, "", {}, []) else (
            json.dumps(default) if widget == "json" else str(default))
        result.append(Field(
            name=f"{prefix}.{key}", key=key, label=prop.get("title") or key.replace("_", " ").capitalize(),
            widget=widget, value=_display_value(widget, value), help=prop.get("description", ""),
            required=key in required, choices=list(prop.get("enum") or []),
            minimum=prop.get("minimum", prop.get("exclusiveMinimum")),
            placeholder=placeholder,
        ))
    return result


def _read_value(f: Field, raw: str | None, posted: bool):
    """(value, present) from the POSTed text; raises ValueError with a user-facing message."""
    if f.widget == "boolean":
        return (raw in ("on", "true", "1"), posted)
    if raw is None or raw.strip() == "":
        return (None, False)
    if f.widget == "integer":
        try:
            return (int(raw), True)
        except ValueError:
            raise ValueError("must be a whole number") from None
    if f.widget == "version":
        text = raw.strip()
        if text == "live":
            return ("live", True)
        if text.isdigit() and int(text) >= 1:
            return (int(text), True)
        raise ValueError('must be "live" or a version number (1 or more)')
    if f.widget == "number":
        try:
            number = float(raw)
        except ValueError:
            raise ValueError("must be a number") from None
        return (int(number) if number.is_integer() else number, True)
    if f.widget == "json":
        try:
            return (json.loads(raw), True)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    return (raw, True)


def read_section(fields: list[Field], post, schema: dict, old: dict) -> dict:
    """The section's new values; fields that cannot be read keep their old value and get an error."""
    values: dict = {}
    for f in fields:
        raw = post.get(f.name)
        try:
            value, present = _read_value(f, raw, f"{f.name}.present" in post)
        except ValueError as exc:
            f.errors.append(f"{f.label} {exc}")
            f.value = raw
            if f.key in old:
                values[f.key] = old[f.key]
            continue
        if present:
            values[f.key] = value
        f.value = raw if f.widget == "json" and raw is not None else _display_value(f.widget, value)
    # Keys the schema does not describe (free-form configs) are kept as they were.
    for key, value in old.items():
        if key not in values and key not in (schema.get("properties") or {}):
            values[key] = value
    by_key = {f.key: f for f in fields}
    for error in jsonschema.Draft202012Validator(schema).iter_errors(values):
        if error.validator == "pattern":
            continue  # a regular expression says nothing to a person: the validator's problem on the field does
        key = error.path[0] if error.path else None
        if key is None and error.validator == "required":
            key = error.message.split("'")[1] if "'" in error.message else None
        target = by_key.get(key)
        message = _friendly(error)
        if target is not None:
            if not target.errors:
                target.errors.append(message)
        elif fields:
            fields[0].errors.append(message)
    return values


def _friendly(error: jsonschema.ValidationError) -> str:
    if error.validator == "required":
        return "This field is required"
    if error.validator == "enum":
        return "Choose one of: " + ", ".join(map(str, error.validator_value))
    return error.message[:1].upper() + error.message[1:]


def context_names(definition: dict, step_id: str | None) -> list[str]:
    """Names an expression in `step_id` can use: the trigger, run, and outputs of upstream steps."""
    trigger = (definition.get("trigger") or {}).get("type", "manual")
    # `record`: a Kafka trigger's record (filter and steps); a webhook's request (its filter only).
    has_record = trigger == "kafka" or (trigger == "webhook" and step_id is None)
    names = ["trigger"] + (["record"] if has_record else []) + ["run"]
    if step_id is not None:
        parents: dict[str, set] = {}
        for edge in definition.get("edges") or []:
            if isinstance(edge, dict):
                parents.setdefault(edge.get("to"), set()).add(edge.get("from"))
        seen, todo = set(), list(parents.get(step_id, ()))
        while todo:
            current = todo.pop()
            if current in seen or current == step_id:
                continue
            seen.add(current)
            todo.extend(parents.get(current, ()))
        order = [s.get("id") for s in definition.get("steps") or [] if isinstance(s, dict)]
        names += [f"steps.{sid}.output" for sid in order if sid in seen]
    names.append("secret('NAME')")
    return names
