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

import functools
import os
import re
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, Undefined, meta, nodes
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

SECRET_MARKER = re.compile(r"«secret:([A-Za-z_][A-Za-z0-9_]*)»")
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)
CONTEXT_NAMES = ("trigger", "record", "steps", "run", "event", "secret")


class ExpressionError(ValueError):
    """An expression or template that does not parse or cannot be evaluated."""


def _secret(name: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ExpressionError(f"secret() takes a name of letters, digits and underscores, got {name!r}")
    return f"«secret:{name}»"


# Bounds on what one operator or filter may build, so a definition cannot stall the engine
# (or validation, which compiles templates) with `{{ 9 ** 9999999 }}`, `{{ 'x' * 10 ** 10 }}`,
# `{{ '%999999999d' % 1 }}` or `{{ 'x' | center(10 ** 9) }}`: Jinja's sandbox limits none of them.
MAX_POWER_BITS = 4096
MAX_SEQUENCE_LENGTH = 1_000_000
MAX_FORMAT_WIDTH = 10_000
# A width or precision in a %-format or str.format spec ("%08.3f", "{:>20}").
_FORMAT_NUMBER = re.compile(r"(?:%[-#0 +]*|\{[^{}]*:[^{}]*?)(\*|\d+)")


def _check_format(text: Any) -> None:
    if isinstance(text, str):
        for number in _FORMAT_NUMBER.findall(text):
            if number == "*" or int(number) > MAX_FORMAT_WIDTH:
                raise SecurityError(f"format width {number} is too large (at most {MAX_FORMAT_WIDTH})")


def _check_size(size: int, what: str) -> None:
    if size > MAX_SEQUENCE_LENGTH:
        raise SecurityError(f"{what} would build {size} items or characters (at most {MAX_SEQUENCE_LENGTH})")


class _Environment(ImmutableSandboxedEnvironment):
    # Intercepting these also stops Jinja from folding constant expressions at compile time,
    # which would otherwise hang validation itself.
    intercepted_binops = frozenset({"*", "**", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Definitions work on JSON objects: `trigger.items` must be the "items" key of the
        # event, not the dict's `items` method (Jinja prefers attributes by default).
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Fail loudly instead of rendering "" so probing `__class__` & co. is reported.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if max(abs(left), 2).bit_length() * right > MAX_POWER_BITS:
                raise SecurityError(f"{left} ** {right} is too large")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
                    if len(sequence) * count > MAX_SEQUENCE_LENGTH:
                        raise SecurityError(f"repeating a sequence {count} times is too large")
        if operator == "%":
            _check_format(left)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        _check_format(value.__self__)  # "{:>999999999}".format(1)
        return wrapped


def _guarded_filters(filters: dict) -> dict:
    """Jinja's filters, with the ones that can multiply their input's size bounded first."""
    center, indent, format_, replace, join, wordwrap = (
        filters[name] for name in ("center", "indent", "format", "replace", "join", "wordwrap"))

    def safe_center(value, width=80):
        _check_size(int(width), "center")
        return center(value, width)

    def safe_indent(value, width=4, *args, **kwargs):
        if isinstance(width, int):
            _check_size(width * (str(value).count("\n") + 1), "indent")
        elif isinstance(width, str):
            _check_size(len(width) * (str(value).count("\n") + 1), "indent")
        return indent(value, width, *args, **kwargs)

    def safe_format(value, *args, **kwargs):
        _check_format(value)
        return format_(value, *args, **kwargs)

    def safe_replace(eval_ctx, value, old, new, count=None):
        text = str(value)
        occurrences = text.count(str(old)) if str(old) else len(text) + 1
        _check_size(len(text) + occurrences * len(str(new)), "replace")
        return replace(eval_ctx, value, old, new, count)

    def safe_join(eval_ctx, value, d="", attribute=None):
        if isinstance(value, (list, tuple)):
            _check_size(len(value) * (len(str(d)) + 1), "join")
        return join(eval_ctx, value, d, attribute)

    def safe_wordwrap(environment, s, width=79, break_long_words=True, wrapstring=None, *args, **kwargs):
        if wrapstring is not None:
            _check_size(len(str(s)) * (len(str(wrapstring)) + 1), "wordwrap")
        return wordwrap(environment, s, width, break_long_words, wrapstring, *args, **kwargs)

    # Keep Jinja's pass_eval_context / pass_environment markers on the wrappers.
    for original, wrapper in ((replace, safe_replace), (join, safe_join), (wordwrap, safe_wordwrap)):
        wrapper.jinja_pass_arg = original.jinja_pass_arg
    return {**filters, "center": safe_center, "indent": safe_indent, "format": safe_format,
            "replace": safe_replace, "join": safe_join, "wordwrap": safe_wordwrap}


_env = _Environment(undefined=ChainableUndefined, autoescape=False, keep_trailing_newline=True)
_env.globals = {"secret": _secret}  # drop Jinja's default globals (range, cycler, ...)
_env.filters = _guarded_filters(_env.filters)
_compiled_expressions: dict[str, Any] = {}
_compiled_templates: dict[str, Any] = {}


def _why(exc: Exception) -> str:
    """An error's own message, without the "line 1" suffix Jinja adds to syntax errors."""
    return (getattr(exc, "message", None) or str(exc)).strip()


def _native(value: Any) -> Any:
    """The value as JSON-friendly data: undefined names become None, tuples lists.

    Anything else that is not JSON (a function such as `secret` itself, a method reached on a
    string, ...) is refused here, so it never reaches the engine's Kafka records.
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Undefined):
        return None
    if isinstance(value, dict):
        return {str(key): _native(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_native(item) for item in value]
    raise ExpressionError(f"the result is a {type(value).__name__}, not JSON data (a missing call or a typo?)")


def check_expression(expression: str) -> None:
    """Raise ExpressionError if `expression` is not a valid bare expression."""
    _compile_expression(expression)


def _single_expression(text: str) -> str | None:
    """The expression inside a string that is exactly one `{{ ... }}`, else None."""
    match = _SINGLE_EXPRESSION.match(text)
    if match and "{{" not in match.group(1) and "}}" not in match.group(1):
        return match.group(1)
    return None


def is_template(text: Any) -> bool:
    """Whether a config string holds template syntax (plain strings are taken literally)."""
    return isinstance(text, str) and ("{{" in text or "{%" in text or "{#" in text)


def check_template(text: str) -> None:
    """Raise ExpressionError if `text` is not a valid template."""
    expression = _single_expression(text)
    if expression is not None:
        _compile_expression(expression)
    else:
        _compile_template(text)


def _compile_expression(expression: str):
    if not isinstance(expression, str) or not expression.strip():
        raise ExpressionError("expression is empty")
    compiled = _compiled_expressions.get(expression)
    if compiled is None:
        try:
            compiled = _env.compile_expression(expression, undefined_to_none=False)
        except TemplateError as exc:
            raise ExpressionError(f"invalid expression {expression!r}: {_why(exc)}") from None
        _compiled_expressions[expression] = compiled
    return compiled


def _compile_template(text: str):
    if not isinstance(text, str):
        raise ExpressionError(f"a template must be a string, got {type(text).__name__}")
    compiled = _compiled_templates.get(text)
    if compiled is None:
        try:
            compiled = _env.from_string(text)
        except TemplateError as exc:
            raise ExpressionError(f"invalid template {text!r}: {_why(exc)}") from None
        _compiled_templates[text] = compiled
    return compiled


def _variables(context: dict) -> dict:
    return {**_env.globals, **context}


def _run_expression(compiled, context: dict) -> Any:
    """Call a compiled expression with a *shared* Jinja context.

    `TemplateExpression.__call__` builds a fresh context by merging the variables with the
    template's globals, a ChainMap it iterates on every call: that merge was a third of the
    engine's time per step. Our variables already carry the globals (`_variables`), so the
    context can share them. Jinja is pinned below 4; `_template` is its expression template.
    """
    template = compiled._template
    context = template.new_context(_variables(context), shared=True)
    for _ in template.root_render_func(context):
        pass
    return context.vars["result"]


def _run_template(template, context: dict) -> str:
    return _env.concat(template.root_render_func(template.new_context(_variables(context), shared=True)))


def evaluate(expression: str, context: dict) -> Any:
    """Evaluate a bare expression (a condition or filter) to a value."""
    compiled = _compile_expression(expression)
    try:
        return _native(_run_expression(compiled, context))
    except ExpressionError:
        raise
    except Exception as exc:  # the sandbox raises SecurityError, TypeError, ... for bad input
        raise ExpressionError(f"{expression.strip()!r} failed: {_why(exc)}") from None


def render(value: Any, context: dict) -> Any:
    """Render every string inside `value` (dicts and lists recursively) as a template."""
    try:
        return _render(value, context)
    except RecursionError:
        # JSON nested deeper than Python's stack: an error for the step, not a crashed engine.
        raise ExpressionError("the value is nested too deeply to render") from None


def _render(value: Any, context: dict) -> Any:
    if isinstance(value, str):
        if not is_template(value):
            return value
        expression = _single_expression(value)
        if expression is not None:
            return evaluate(expression, context)
        template = _compile_template(value)
        try:
            return _run_template(template, context)
        except ExpressionError:
            raise
        except Exception as exc:
            raise ExpressionError(f"template {value!r} failed: {_why(exc)}") from None
    if isinstance(value, dict):
        return {key: _render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, context) for item in value]
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


def secret_values(value: Any, environ: dict | None = None) -> list[str]:
    """The values of the secrets whose markers appear in `value`, to pass to `redact`.

    Names not set in the environment are left out (resolve_secrets reports those).
    """
    environ = os.environ if environ is None else environ
    found: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, str):
            for name in SECRET_MARKER.findall(item):
                if name in environ and environ[name] not in found:
                    found.append(environ[name])
        elif isinstance(item, dict):
            for sub in item.values():
                walk(sub)
        elif isinstance(item, list):
            for sub in item:
                walk(sub)

    walk(value)
    # Longest first, so a secret that contains another is hidden whole.
    return sorted(found, key=len, reverse=True)


def redact(text: str, secret_values: list[str]) -> str:
    """Hide resolved secret values in text that is about to leave the worker (errors, outputs)."""
    for secret_value in secret_values:
        if secret_value:
            text = text.replace(secret_value, "«secret»")
    return text


# ---- static analysis, for validation -------------------------------------------------------
class References:
    """What an expression or template refers to: top-level names and `steps.<id>` ids."""

    def __init__(self, names: frozenset[str], step_ids: frozenset[str]):
        self.names = frozenset(names)
        self.step_ids = frozenset(step_ids)

    def __repr__(self) -> str:
        return f"References(names={sorted(self.names)}, step_ids={sorted(self.step_ids)})"


def _parse_expression(expression: str) -> nodes.Template:
    if not isinstance(expression, str) or not expression.strip():
        raise ExpressionError("expression is empty")
    try:
        parser = Parser(_env, expression, state="variable")
        body = parser.parse_expression()
        if not parser.stream.eos:
            parser.fail(f"unexpected {parser.stream.current.value!r} after the expression")
    except TemplateError as exc:
        raise ExpressionError(f"invalid expression {expression!r}: {_why(exc)}") from None
    tree = nodes.Template([nodes.Output([body], lineno=1)], lineno=1)
    tree.set_environment(_env)
    return tree


def _parse_template(text: str) -> nodes.Template:
    expression = _single_expression(text)
    if expression is not None:
        return _parse_expression(expression)
    try:
        return _env.parse(text)
    except TemplateError as exc:
        raise ExpressionError(f"invalid template {text!r}: {_why(exc)}") from None


def _references(tree: nodes.Template) -> References:
    names = set(meta.find_undeclared_variables(tree))
    # Jinja leaves environment globals (our `secret`) out of the undeclared names.
    names |= {node.name for node in tree.find_all(nodes.Name) if node.ctx == "load" and node.name in _env.globals}
    step_ids: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node.node, nodes.Name) and node.node.name == "steps":
            if isinstance(node, nodes.Getattr):
                step_ids.add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                step_ids.add(node.arg.value)
    return References(names, step_ids)


# The designer validates on every edit: cache the analysis of texts already seen.
@functools.lru_cache(maxsize=8192)
def expression_references(expression: str) -> References:
    """Names used by a bare expression; ExpressionError if it does not parse."""
    return _references(_parse_expression(expression))


@functools.lru_cache(maxsize=8192)
def template_references(text: str) -> References:
    """Names used by a template (loop and `set` variables excluded); ExpressionError if invalid."""
    return _references(_parse_template(text))
