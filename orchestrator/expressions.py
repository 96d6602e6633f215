"""Expressions and templates, evaluated in Jinja2's sandbox (never Python's eval).

Two forms appear in a definition:
- conditions (a branch's `condition`, a trigger's `filter`): bare expressions such as
  `trigger.total > 100`, evaluated to a value;
- templates (any other string in a step's config): `"Hello {{ trigger.name }}"` renders to a
  string, while a string that is exactly one `{{ expression }}` keeps the expression's native
  type, so `"{{ trigger }}"` passes a whole object along, not its repr.

Names available: `trigger`, `record` (for Kafka-triggered runs), `steps.<id>.output`, `run`,
`event` (in wait_for_event key expressions) and `secret('NAME')`.

Limits: what an evaluation may cost (source size, nesting, size and time budgets) is decided in
`expression_limits`; this module wires those checks into the environment.

Secrets: `secret('NAME')` never renders the value. Rendering leaves a marker, `«secret:NAME»`,
in the rendered text, and `render_with_secrets` also returns where each marker it produced
sits (a JSON pointer and an offset). Only a worker about to call out resolves them
(`orchestrator.secrets.resolve`), and only at those positions. So a marker that comes from
data (run input `{"name": "«secret:HOME»"}`, a Kafka record, a step's output) stays text:

    Data can hold any text, including the marker's. While one evaluation runs, `secret()`
    returns the marker with a random nonce (`«secret:NAME:3f9c...»`) drawn for that
    evaluation; data written before the evaluation cannot know it. After rendering, the
    markers carrying the nonce are the ones `secret()` produced: their positions are recorded
    and the nonce is removed. The positions travel outside the rendered values (the config's
    `$secrets` entry, which templates and data cannot write: only `render_config` sets top
    level keys), so the worker never has to guess which `«secret:...»` text is a reference.
    No key is shared between processes and nothing replayable is shown in history.

A `secret()` whose marker does not reach the result whole (compared, sliced, passed to a
filter that changes it) is an error: its value is unknown until the worker resolves it.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, Undefined, meta, nodes
from jinja2.parser import Parser
from jinja2.runtime import new_context as _jinja_new_context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from . import expression_limits as limits
from .expression_limits import BudgetExceeded, TooComplex

SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SECRET_MARKER = re.compile(r"«secret:([A-Za-z_][A-Za-z0-9_]*)»")
# What secret() returns while an evaluation runs: the marker plus that evaluation's nonce.
_NONCED_MARKER = re.compile(r"«secret:([A-Za-z_][A-Za-z0-9_]*):([0-9a-f]{16})»")
# The rendered config's key listing the secret markers rendering produced (see the module doc).
SECRET_REFS_KEY = "$secrets"
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)
CONTEXT_NAMES = ("trigger", "record", "steps", "run", "event", "secret")
# Compiled texts kept per process: validation in the designer sees a new text on every edit.
COMPILED_CACHE_SIZE = 4096
# How much of an expression an error message quotes.
EXCERPT_CHARS = 120


class ExpressionError(ValueError):
    """An expression or template that does not parse or cannot be evaluated."""


# ---- secret markers ----------------------------------------------------------------------
class _Evaluation(limits.Budget):
    """One evaluation in progress: its budgets, and the nonce of the secret markers it made."""

    nonce: str | None = None
    secret_calls = 0


def _secret(name: str) -> str:
    if not isinstance(name, str) or not SECRET_NAME.fullmatch(name):
        raise ExpressionError(f"secret() takes a name of letters, digits and underscores, got {name!r}")
    evaluation = limits.current()
    if not isinstance(evaluation, _Evaluation):
        raise ExpressionError("secret() is only available while a step's config is rendered")
    if evaluation.nonce is None:
        evaluation.nonce = os.urandom(8).hex()
    evaluation.secret_calls += 1
    return f"«secret:{name}:{evaluation.nonce}»"


def pointer_part(key: Any) -> str:
    """A key or index escaped for a JSON pointer (RFC 6901): "~" -> "~0", "/" -> "~1"."""
    return str(key).replace("~", "~0").replace("/", "~1")


def _seal(value: Any, nonce: str, calls: int) -> tuple[Any, list[dict]]:
    """`value` with this evaluation's markers turned into plain `«secret:NAME»`, and where they are.

    Returns (sealed value, [{"at": JSON pointer, "offset": n, "name": NAME}, ...]).
    """
    refs: list[dict] = []
    suffix = f":{nonce}»"

    def seal_text(text: str, path: tuple) -> str:
        pointer = "".join(f"/{pointer_part(part)}" for part in path)
        ours = 0
        for match in _NONCED_MARKER.finditer(text):
            if match.group(2) == nonce:  # other nonces: the shape of a marker, from data
                refs.append({"at": pointer, "offset": match.start() - ours * (len(suffix) - 1),
                             "name": match.group(1)})
                ours += 1
        sealed = text.replace(suffix, "»")
        # Every use of the nonce must be in a whole marker (`secret('X')[3:]` is not).
        if ours != text.count(suffix) or nonce in sealed:
            raise ExpressionError("secret() must reach the result whole: a filter, slice or operator changed its "
                                  "marker (the value is only known on the worker, when the step runs)")
        return sealed

    def walk(item: Any, path: tuple) -> Any:
        # The pointer is only spelled out for a text that holds a marker.
        if isinstance(item, str):
            return seal_text(item, path) if nonce in item else item
        if isinstance(item, dict):
            sealed = {}
            for key, sub in item.items():
                if nonce in key:
                    raise ExpressionError("secret() cannot be used in a key, only in values")
                sealed[key] = walk(sub, (*path, key))
            return sealed
        if isinstance(item, list):
            return [walk(sub, (*path, index)) for index, sub in enumerate(item)]
        return item

    sealed = walk(value, ())
    if len(refs) < calls:
        raise ExpressionError("secret() must reach the result: its value is only known on the worker, when the "
                              "step runs, so it cannot be compared, tested or measured in an expression")
    return sealed, refs


# ---- the environment ---------------------------------------------------------------------
class _Environment(ImmutableSandboxedEnvironment):
    # Intercepting these also stops Jinja from folding constant expressions at compile time,
    # which would otherwise hang validation itself (`9 ** 9999999`). `+` is routed through the
    # budget by the tree rewrite instead (see expression_limits), so `x + 1` stays plain.
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
        return limits.binop(operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's signature)
        budget = limits.current()
        limits.check_call(budget, __obj, args, kwargs)
        return budget.built(super().call(__context, __obj, *args, **kwargs), "a call")

    def wrap_str_format(self, value: Any):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        limits.check_format(value.__self__)  # "{:>999999999}".format(1)
        return wrapped

    def _parse(self, source, name, filename):
        limits.check_source(self, source, expression=False)
        return super()._parse(source, name, filename)

    def _generate(self, source, name, filename, defer_init=False):
        limits.check_tree(source)
        return super()._generate(limits.rewrite(source, self), name, filename, defer_init=defer_init)


_env = _Environment(undefined=ChainableUndefined, autoescape=False, keep_trailing_newline=True,
                   finalize=limits.output)
_env.globals = {"secret": _secret}  # drop Jinja's default globals (range, cycler, ...)
_env.filters = limits.guard_filters(_env.filters)
_env.tests = limits.guard_tests(_env.tests)


def _excerpt(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "...")


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
    return _compiled_expression(expression)


@functools.lru_cache(maxsize=COMPILED_CACHE_SIZE)
def _compiled_expression(expression: str):
    try:
        limits.check_source(_env, expression, expression=True)
        return _env.compile_expression(expression, undefined_to_none=False)
    except TooComplex as exc:
        raise ExpressionError(f"expression {_excerpt(expression)} is refused: {exc}") from None
    except TemplateError as exc:
        raise ExpressionError(f"invalid expression {_excerpt(expression)}: {_why(exc)}") from None
    except (RecursionError, MemoryError, SyntaxError):
        # Backstop behind the nesting limits: Python's own compiler gave up on the code.
        raise ExpressionError(f"expression {_excerpt(expression)} is refused: it is nested too deeply") from None


def _compile_template(text: str):
    if not isinstance(text, str):
        raise ExpressionError(f"a template must be a string, got {type(text).__name__}")
    return _compiled_template(text)


@functools.lru_cache(maxsize=COMPILED_CACHE_SIZE)
def _compiled_template(text: str):
    try:
        return _env.from_string(text)
    except TooComplex as exc:
        raise ExpressionError(f"template {_excerpt(text)} is refused: {exc}") from None
    except TemplateError as exc:
        raise ExpressionError(f"invalid template {_excerpt(text)}: {_why(exc)}") from None
    except (RecursionError, MemoryError, SyntaxError):
        raise ExpressionError(f"template {_excerpt(text)} is refused: it is nested too deeply") from None


def _variables(context: dict) -> dict:
    return {**_env.globals, **context}


def _run_expression(compiled, variables: dict) -> Any:
    """Call a compiled expression with a *shared* Jinja context.

    `TemplateExpression.__call__` builds a fresh context by merging the variables with the
    template's globals, a ChainMap it iterates on every call: that merge was a third of the
    engine's time per step. Our variables already carry the globals (`_variables`), so the
    context can share them. Jinja is pinned below 4; `_template` is its expression template.
    """
    template = compiled._template
    context = _shared_context(template, variables)
    for _ in template.root_render_func(context):
        pass
    return context.vars["result"]


def _shared_context(template, variables: dict):
    """A Jinja context over `variables` as they are. Template.new_context would pass the
    template's globals (a ChainMap) along, and Context iterates them on every call to note
    their names: 15 % of the engine's time in a burst, for names our variables already hold."""
    return _jinja_new_context(_env, template.name, template.blocks, variables, shared=True)


def _run_template(template, variables: dict) -> str:
    text = _env.concat(template.root_render_func(_shared_context(template, variables)))
    if len(text) > limits.MAX_VALUE_SIZE:
        limits.current().charge(len(text), "the template")  # raises, naming the limit
    return text


def _sealed(evaluation: _Evaluation, value: Any) -> tuple[Any, list[dict]]:
    if evaluation.nonce is None:
        return value, []
    return _seal(value, evaluation.nonce, evaluation.secret_calls)


def _evaluate(expression: str, variables: dict) -> Any:
    compiled = _compile_expression(expression)
    try:
        return _native(_run_expression(compiled, variables))
    except ExpressionError:
        raise
    except BudgetExceeded as exc:
        raise ExpressionError(f"expression {_excerpt(expression)} exceeded {exc}") from None
    except Exception as exc:  # the sandbox raises SecurityError, TypeError, ... for bad input
        raise ExpressionError(f"{_excerpt(expression)} failed: {_why(exc)}") from None


def evaluate(expression: str, context: dict) -> Any:
    """Evaluate a bare expression (a condition or filter) to a value."""
    evaluation = _Evaluation()
    previous = limits.begin(evaluation)
    try:
        return _sealed(evaluation, _evaluate(expression, _variables(context)))[0]
    finally:
        limits.end(previous)


def render(value: Any, context: dict) -> Any:
    """Render every string inside `value` (dicts and lists recursively) as a template.

    Secret markers come out as plain `«secret:NAME»` text that nothing resolves: for what the
    engine itself uses (transform outputs, produced records). Workers get theirs through
    `render_with_secrets`.
    """
    return render_with_secrets(value, context)[0]


def render_with_secrets(value: Any, context: dict) -> tuple[Any, list[dict]]:
    """Render `value` like `render`, and say where the secret markers rendering produced are:
    `[{"at": JSON pointer into the result, "offset": n, "name": NAME}, ...]`."""
    evaluation = _Evaluation()
    previous = limits.begin(evaluation)
    try:
        return _sealed(evaluation, _render(value, _variables(context)))
    except RecursionError:
        # JSON nested deeper than Python's stack: an error for the step, not a crashed engine.
        raise ExpressionError("the value is nested too deeply to render") from None
    finally:
        limits.end(previous)


def _render(value: Any, variables: dict) -> Any:
    if isinstance(value, str):
        if not is_template(value):
            return value
        expression = _single_expression(value)
        if expression is not None:
            return _evaluate(expression, variables)
        template = _compile_template(value)
        try:
            return _run_template(template, variables)
        except ExpressionError:
            raise
        except BudgetExceeded as exc:
            raise ExpressionError(f"template {_excerpt(value)} exceeded {exc}") from None
        except Exception as exc:
            raise ExpressionError(f"template {_excerpt(value)} failed: {_why(exc)}") from None
    if isinstance(value, dict):
        return {key: _render(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, variables) for item in value]
    return value


def truthy(expression: str, context: dict) -> bool:
    return bool(evaluate(expression, context))


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
        limits.check_source(_env, expression, expression=True)
        parser = Parser(_env, expression, state="variable")
        body = parser.parse_expression()
        if not parser.stream.eos:
            parser.fail(f"unexpected {parser.stream.current.value!r} after the expression")
        tree = nodes.Template([nodes.Output([body], lineno=1)], lineno=1)
        limits.check_tree(tree)
    except TooComplex as exc:
        raise ExpressionError(f"expression {_excerpt(expression)} is refused: {exc}") from None
    except TemplateError as exc:
        raise ExpressionError(f"invalid expression {_excerpt(expression)}: {_why(exc)}") from None
    except RecursionError:
        raise ExpressionError(f"expression {_excerpt(expression)} is refused: it is nested too deeply") from None
    tree.set_environment(_env)
    return tree


def _parse_template(text: str) -> nodes.Template:
    expression = _single_expression(text)
    if expression is not None:
        return _parse_expression(expression)
    try:
        tree = _env.parse(text)  # checks the source (_Environment._parse)
        limits.check_tree(tree)
        return tree
    except TooComplex as exc:
        raise ExpressionError(f"template {_excerpt(text)} is refused: {exc}") from None
    except TemplateError as exc:
        raise ExpressionError(f"invalid template {_excerpt(text)}: {_why(exc)}") from None
    except RecursionError:
        raise ExpressionError(f"template {_excerpt(text)} is refused: it is nested too deeply") from None


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
