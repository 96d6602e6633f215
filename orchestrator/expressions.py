"""Expressions and templates, evaluated in Jinja2's sandbox (never Python's eval).

Two forms appear in a definition:
- conditions (a branch's `condition`, a trigger's `filter`): bare expressions such as
  `trigger.total > 100`, evaluated to a value;
- templates (any other string in a step's config): `"Hello {{ trigger.name }}"` renders to a
  string, while a string that is exactly one `{{ expression }}` keeps the expression's native
  type, so `"{{ trigger }}"` passes a whole object along, not its repr.

Names available: `trigger`, `record` (for Kafka-triggered runs), `steps.<id>.output`, `run`,
`event` (in wait_for_event key expressions) and `secret('NAME')`.

Secrets: `secret('NAME')` renders to a marker, `«secret:NAME»`, not to the value. Markers pass
through the engine, Kafka and history untouched; only a worker about to call out resolves them
(`resolve_secrets`) from its own environment. So a secret's value is never stored or shown.
"""

from __future__ import annotations

import os
import re
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

SECRET_MARKER = re.compile(r"«secret:([A-Za-z_][A-Za-z0-9_]*)»")
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)
CONTEXT_NAMES = ("trigger", "record", "steps", "run", "event", "secret")


class ExpressionError(ValueError):
    """An expression or template that does not parse or cannot be evaluated."""


def _secret(name: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ExpressionError(f"secret() takes a name of letters, digits and underscores, got {name!r}")
    return f"«secret:{name}»"


class _Environment(ImmutableSandboxedEnvironment):
    pass


_env = _Environment(undefined=ChainableUndefined, autoescape=False, keep_trailing_newline=True)
_env.globals = {"secret": _secret}  # drop Jinja's default globals (range, cycler, ...)
_compiled_expressions: dict[str, Any] = {}
_compiled_templates: dict[str, Any] = {}


def _native(value: Any) -> Any:
    return None if isinstance(value, Undefined) else value


def check_expression(expression: str) -> None:
    """Raise ExpressionError if `expression` is not a valid bare expression."""
    _compile_expression(expression)


def check_template(text: str) -> None:
    """Raise ExpressionError if `text` is not a valid template."""
    match = _SINGLE_EXPRESSION.match(text)
    if match and "{{" not in match.group(1):
        _compile_expression(match.group(1))
    else:
        _compile_template(text)


def _compile_expression(expression: str):
    compiled = _compiled_expressions.get(expression)
    if compiled is None:
        if not isinstance(expression, str) or not expression.strip():
            raise ExpressionError("expression is empty")
        try:
            compiled = _env.compile_expression(expression, undefined_to_none=False)
        except TemplateError as exc:
            raise ExpressionError(f"invalid expression {expression!r}: {exc}") from None
        _compiled_expressions[expression] = compiled
    return compiled


def _compile_template(text: str):
    compiled = _compiled_templates.get(text)
    if compiled is None:
        try:
            compiled = _env.from_string(text)
        except TemplateError as exc:
            raise ExpressionError(f"invalid template {text!r}: {exc}") from None
        _compiled_templates[text] = compiled
    return compiled


def evaluate(expression: str, context: dict) -> Any:
    """Evaluate a bare expression (a condition or filter) to a value."""
    compiled = _compile_expression(expression)
    try:
        return _native(compiled(**context))
    except ExpressionError:
        raise
    except Exception as exc:  # the sandbox raises SecurityError, TypeError, ... for bad input
        raise ExpressionError(f"{expression!r} failed: {exc}") from None


def render(value: Any, context: dict) -> Any:
    """Render every string inside `value` (dicts and lists recursively) as a template."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        match = _SINGLE_EXPRESSION.match(value)
        if match and "{{" not in match.group(1) and "}}" not in match.group(1):
            return evaluate(match.group(1), context)
        template = _compile_template(value)
        try:
            return template.render(**context)
        except ExpressionError:
            raise
        except Exception as exc:
            raise ExpressionError(f"template {value!r} failed: {exc}") from None
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    return value


def truthy(expression: str, context: dict) -> bool:
    return bool(evaluate(expression, context))


def resolve_secrets(value: Any, environ: dict | None = None) -> Any:
    """Replace secret markers with values from the environment. Workers only."""
    environ = os.environ if environ is None else environ
    if isinstance(value, str):
        if "«secret:" not in value:
            return value

        def lookup(match: re.Match) -> str:
            name = match.group(1)
            if name not in environ:
                raise ExpressionError(f"secret {name!r} is not set in this runner's environment")
            return environ[name]

        return SECRET_MARKER.sub(lookup, value)
    if isinstance(value, dict):
        return {key: resolve_secrets(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(item, environ) for item in value]
    return value


def redact(text: str, secret_values: list[str]) -> str:
    """Hide resolved secret values in text that is about to leave the worker (errors, outputs)."""
    for secret_value in secret_values:
        if secret_value:
            text = text.replace(secret_value, "«secret»")
    return text
