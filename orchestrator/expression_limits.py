"""What one expression or template may cost, so neither a definition nor its data can stall a loop.

The engine, the trigger loop and validation evaluate expressions in their own threads, between
Kafka transactions: an evaluation that runs for seconds, or builds gigabytes, stops every run
on that runner. Jinja's sandbox bounds what an expression may *reach*, not what it may *cost*,
so Sluice adds budgets that every path of the language goes through.

At compile time (validation, and the first use of a text on a runner):
- source: at most MAX_SOURCE_CHARS characters;
- nesting: brackets, unary operators (`not`, `-`) and blocks (`{% if %}`, `{% for %}`, ...)
  at most MAX_NESTING deep, and the parsed tree at most MAX_TREE_DEPTH deep. Jinja's parser and
  code generator and Python's compiler recurse once or more per level: 80 parentheses, 400
  `not`s, 1,000 chained `+` or 100 nested `{% if %}` otherwise end in RecursionError or
  IndentationError instead of an error naming the problem.

While one evaluation runs (a condition, a trigger filter, one config field rendered):
- size: no value an operator, filter, method call, literal or `{{ }}` output builds may hold
  more than MAX_VALUE_SIZE characters or items (counted deep: characters of strings plus items
  of lists and dicts, at any depth), and all of them together at most MAX_TOTAL_SIZE, which
  bounds memory. Arguments that scale a result (`batch(n)`, `center(n)`, `'x' * n`, format
  widths, ...) are checked *before* the work, so nothing huge is ever allocated;
- time: MAX_SECONDS, checked at every loop iteration, filter, test, call and operator.

A check between two steps cannot interrupt one step, so a step must be bounded on its own:
sizes bound linear work, and the filters that do per-item work in Python behind one call
(`sort`, `unique`, `groupby`, `dictsort`, `min`, `max`) take at most MAX_SLOW_ITEMS items.
An evaluation over budget raises BudgetExceeded; `expressions` turns it into ExpressionError
("... exceeded the time budget of 0.25 s"), the step fails, and the loop goes on.

How the checks are wired, so that no syntax bypasses them:
- `{% for %}` loops, `~`, `+` (unless one operand is a number constant) and list/dict/tuple
  literals are rewritten in the parsed tree into calls of private filters (names with a dash,
  which template syntax cannot spell);
- every filter and test is wrapped (`guard_filters`, `guard_tests`); every call goes through
  the sandbox's `call`, the other growing operators (`* % **`) through `call_binop`, and every
  `{{ }}` output through the environment's `finalize`; these hooks live on the environment
  (see `expressions._Environment`).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.sandbox import SecurityError
from jinja2.visitor import NodeTransformer

MAX_SOURCE_CHARS = 64 * 1024
MAX_NESTING = 32
MAX_TREE_DEPTH = 100
MAX_VALUE_SIZE = 1_000_000
MAX_TOTAL_SIZE = 10_000_000
MAX_SECONDS = 0.25
MAX_SLOW_ITEMS = 20_000
MAX_INT_BITS = 4096
MAX_FORMAT_WIDTH = 10_000
MAX_JSON_INDENT = 16
# How many cheap steps pass between two looks at the clock (a look costs ~0.7 us).
_TICKS_PER_CLOCK_CHECK = 32
# A value measured at least this large is worth a look at the clock right away.
_LARGE = 10_000

LOOP_FILTER = "sluice-loop"
CONCAT_FILTER = "sluice-concat"
LITERAL_FILTER = "sluice-literal"
ADD_FILTER = "sluice-add"


class BudgetExceeded(Exception):
    """An evaluation went over one of its budgets; the message says which and by what.

    Deliberately not a ValueError/TypeError/LookupError: Jinja's filters and attribute lookups
    catch those and carry on with a default, which would swallow the budget.
    """


class TooComplex(Exception):
    """A source refused before compiling: too long or nested too deeply."""


# ---- size and time ----------------------------------------------------------------------
def _describe(size: int) -> str:
    # Budget.measure stops counting one past the limit: the exact size is then unknown.
    return f"more than {MAX_VALUE_SIZE:,}" if size == MAX_VALUE_SIZE + 1 else f"{size:,}"


class Budget:
    """The budgets of one evaluation: CPU time used, and the sizes built so far.

    Time is the evaluating thread's CPU time, not the wall clock: the engine shares its process
    with worker threads, and an expression must not fail because they held the GIL. The clock is
    read lazily (every _TICKS_PER_CLOCK_CHECK steps, the first read starts it), so the many
    evaluations that take a few steps never pay for it (a read costs ~0.7 us).
    """

    # Class attributes as the starting values: an evaluation creates a Budget on every render,
    # and most never change more than `ticks`, so there is no __init__ to run.
    started: float | None = None
    ticks = 0
    total = 0
    # id -> (value, size) of containers measured in this evaluation: a value built from
    # others (`[b, b, b]`) is measured from their sizes instead of walked again.
    _sizes: dict[int, tuple[Any, int]] | None = None

    def tick(self) -> None:
        self.ticks += 1
        if not self.ticks % _TICKS_PER_CLOCK_CHECK:
            self.check_time()

    def check_time(self) -> None:
        now = time.thread_time()
        if self.started is None:
            self.started = now
        elif now - self.started > MAX_SECONDS:
            raise BudgetExceeded(f"the time budget of {MAX_SECONDS:g} s")

    def measure(self, value: Any) -> int:
        """Characters of strings plus items of lists, tuples and dicts, at any depth (other
        values count 0), or MAX_VALUE_SIZE + 1 for anything larger than MAX_VALUE_SIZE."""
        if isinstance(value, str):
            return len(value)
        if not isinstance(value, (list, tuple, dict)):
            return 0
        sizes = self._sizes
        if sizes is None:
            sizes = self._sizes = {}
        known = sizes.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        limit = MAX_VALUE_SIZE
        size = 0
        stack = [value]
        while stack:
            container = stack.pop()
            size += len(container)
            if size > limit:
                break
            if isinstance(container, dict):
                for key in container:
                    if isinstance(key, str):
                        size += len(key)
                items = container.values()
            else:
                items = container
            for item in items:
                if isinstance(item, str):
                    size += len(item)
                elif isinstance(item, (list, tuple, dict)):
                    known = sizes.get(id(item))
                    if known is not None and known[0] is item:
                        size += known[1]
                    else:
                        stack.append(item)
            if size > limit:
                break
        size = min(size, limit + 1)
        sizes[id(value)] = (value, size)
        if size > _LARGE:
            self.check_time()
        return size

    def charge(self, size: int, what: str) -> None:
        """Account for `size` characters or items that `what` builds (before it builds them)."""
        if size > MAX_VALUE_SIZE:
            raise BudgetExceeded(f"the size budget: {what} would build {_describe(size)} characters or items "
                                 f"(at most {MAX_VALUE_SIZE:,})")
        self.total += size
        if self.total > MAX_TOTAL_SIZE:
            raise BudgetExceeded(f"the size budget: more than {MAX_TOTAL_SIZE:,} characters or items built "
                                 f"in all (the last by {what})")
        if size > _LARGE:
            self.check_time()
        else:
            self.tick()

    def built(self, value: Any, what: str) -> Any:
        """Account for a value `what` has built; iterators are accounted item by item."""
        if isinstance(value, (str, list, tuple, dict)):
            self.charge(self.measure(value), what)
            return value
        if hasattr(value, "__next__"):
            return BudgetedIterator(self, value, what, measure_items=True)
        self.tick()
        return value


class BudgetedIterator:
    """Iterates `iterable`, ticking the budget per item.

    `per_item` charges a fixed size per item (a loop's literal text); `measure_items` charges
    the lists and tuples a filter's generator builds (`batch`, `slice`, `groupby`). Items that
    are data passing through (what `select` or `map` yield) only tick: measuring every item
    was most of the cost of a `map` over a list of objects.
    """

    __slots__ = ("budget", "iterator", "what", "per_item", "measure_items")

    def __init__(self, budget: Budget, iterable: Any, what: str, per_item: int = 0, measure_items: bool = False):
        self.budget = budget
        self.iterator = iter(iterable)
        self.what = what
        self.per_item = per_item
        self.measure_items = measure_items

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self.iterator)
        budget = self.budget
        if self.per_item:
            budget.total += self.per_item
            if budget.total > MAX_TOTAL_SIZE:
                budget.charge(self.per_item, self.what)  # raises with the message
            budget.ticks += 1
            if not budget.ticks % _TICKS_PER_CLOCK_CHECK:
                budget.check_time()
        elif self.measure_items and isinstance(item, (list, tuple)):
            budget.charge(budget.measure(item), self.what)
        else:
            budget.tick()
        return item


class _State(threading.local):
    budget: Budget | None = None


_state = _State()


def current() -> Budget:
    """The budget of the evaluation running in this thread (a fresh one if none is)."""
    budget = _state.budget
    return budget if budget is not None else Budget()


def begin(budget: Budget) -> Budget | None:
    """Make `budget` the running evaluation's in this thread; returns the previous one for `end`."""
    previous = _state.budget
    _state.budget = budget
    return previous


def end(previous: Budget | None) -> None:
    _state.budget = previous


# ---- checks of arguments that scale a result ----------------------------------------------
# A %-conversion ("%08.3f", "%(name)-20s", "%*d") and a str.format field with a spec
# ("{:>20}", "{0:.3f}", "{a:{w}}").
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_BRACE_SPEC = re.compile(r"\{[^{}]*?:((?:[^{}]|\{[^{}]*\})*)\}")


def check_format(text: Any) -> None:
    """Widths and precisions in a %-format or str.format string: written out, and small.

    `'%.99999999f' % 1` or `'{:>{w}}'.format('x', w=10**9)` would build gigabytes from a few
    characters; a width that comes from an argument (`*`, a nested `{w}`) cannot be checked
    before the string is built, so it is refused."""
    if not isinstance(text, str):
        return
    numbers: list[str] = []
    if "%" in text:
        for width, precision in _PERCENT_SPEC.findall(text):
            numbers += [width, precision]
    if "{" in text:
        for spec in _BRACE_SPEC.findall(text):
            if "{" in spec:
                raise BudgetExceeded("the size budget: a format width or precision must be written out, "
                                     "not taken from an argument")
            numbers += re.findall(r"\d+", spec)
    for number in numbers:
        if number == "*" or (number and int(number) > MAX_FORMAT_WIDTH):
            raise BudgetExceeded(f"the size budget: format width {number} is too large (at most {MAX_FORMAT_WIDTH:,})")


def _as_int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _lines(value: Any) -> int:
    return str(value).count("\n") + 1 if isinstance(value, str) else 1


def _check_replace(budget: Budget, value: Any, old: Any, new: Any, count: Any = None) -> None:
    text, old, new = str(value), str(old), str(new)
    occurrences = text.count(old) if old else len(text) + 1
    if count is not None and _as_int(count, -1) >= 0:
        occurrences = min(occurrences, _as_int(count))
    budget.charge(len(text) + occurrences * len(new), "replace")


def _check_join(budget: Budget, items: Any, separator: Any = "") -> None:
    if isinstance(items, (list, tuple)):
        budget.charge(budget.measure(items) + len(items) * len(str(separator)), "join")


# Filter name -> check(budget, value, *args, **kwargs), called before the filter runs.
def _pre_batch(budget, value, linecount=1, fill_with=None, *_, **__):
    budget.charge(_as_int(linecount, 1) + budget.measure(value), "batch")


def _pre_slice(budget, value, slices=1, fill_with=None, *_, **__):
    budget.charge(_as_int(slices, 1) + budget.measure(value), "slice")


def _pre_center(budget, value, width=80, *_, **__):
    budget.charge(max(_as_int(width), len(str(value))), "center")


def _pre_indent(budget, value, width=4, *_, **__):
    per_line = len(width) if isinstance(width, str) else _as_int(width)
    budget.charge(len(str(value)) + per_line * _lines(value), "indent")


def _pre_format(budget, value, *args, **kwargs):
    check_format(value)


def _pre_replace(budget, value, old="", new="", count=None, *_, **__):
    _check_replace(budget, value, old, new, count)


def _pre_join(budget, value, d="", *_, **__):
    _check_join(budget, value, d)


def _pre_wordwrap(budget, value, width=79, break_long_words=True, wrapstring=None, *_, **__):
    lines = len(str(value)) // max(1, _as_int(width, 79)) + _lines(value)
    budget.charge(len(str(value)) + lines * len(str(wrapstring or "\n")), "wordwrap")


def _pre_urlize(budget, value, *args, **kwargs):
    # target= and rel= are repeated in every link made: bound them, not the text.
    extra = sum(len(str(kwargs.get(name) or "")) for name in ("target", "rel"))
    budget.charge(len(str(value)) * (2 + extra), "urlize")


def _pre_tojson(budget, value, indent=None, *_, **__):
    if indent is not None and (not isinstance(indent, int) or indent > MAX_JSON_INDENT):
        raise BudgetExceeded(f"the size budget: tojson indent {indent!r} is too large (at most {MAX_JSON_INDENT})")


def _pre_slow(name):
    # Per-item work in Python behind one call, which no tick can interrupt: bound the items.
    def check(budget, value, *_, **__):
        if isinstance(value, (list, tuple, dict, str)) and len(value) > MAX_SLOW_ITEMS:
            raise BudgetExceeded(f"the size budget: {name} takes at most {MAX_SLOW_ITEMS:,} items, "
                                 f"got {len(value):,}")
    return check


def _pre_slow_deep(name):
    # Like _pre_slow, for filters that walk nested values (pprint, xmlattr, urlencode).
    def check(budget, value, *_, **__):
        if not isinstance(value, (list, tuple, dict)):
            return
        size = budget.measure(value)
        if size > MAX_SLOW_ITEMS:
            raise BudgetExceeded(f"the size budget: {name} takes at most {MAX_SLOW_ITEMS:,} characters or items, "
                                 f"got {_describe(size)}")
    return check


PRE_CHECKS = {
    "batch": _pre_batch, "slice": _pre_slice, "center": _pre_center, "indent": _pre_indent,
    "format": _pre_format, "replace": _pre_replace, "join": _pre_join, "wordwrap": _pre_wordwrap,
    "urlize": _pre_urlize, "tojson": _pre_tojson,
    **{name: _pre_slow(name) for name in ("sort", "unique", "groupby", "dictsort", "min", "max")},
    **{name: _pre_slow_deep(name) for name in ("pprint", "xmlattr", "urlencode")},
}
# Filters that walk their input lazily and may yield few items for many read (select and
# friends): their input is iterated through the budget, so skipped items tick too.
LAZY_INPUT = frozenset({"select", "reject", "selectattr", "rejectattr", "map", "unique"})
# Filters whose generators yield more, or other, items than they read.
BUILDS_ITEMS = frozenset({"batch", "slice"})
# Below this many items, the work a filter does on its input is too small to tick per item.
SMALL_INPUT = 1000


def _pass_arg(function) -> str | None:
    return getattr(getattr(function, "jinja_pass_arg", None), "name", None)


def _call_with_pass_arg(function, pass_arg, context, args, kwargs):
    if pass_arg == "context":
        return function(context, *args, **kwargs)
    if pass_arg == "eval_context":
        return function(context.eval_ctx, *args, **kwargs)
    if pass_arg == "environment":
        return function(context.environment, *args, **kwargs)
    return function(*args, **kwargs)


def guard_filter(name: str, function):
    """`function` with the budget applied: a tick, the pre-check for `name`, the result charged.

    The wrapper takes Jinja's context, which also stops Jinja from running the filter at compile
    time on constant input (constant folding), where no budget is active.
    """
    pass_arg = _pass_arg(function)
    check = PRE_CHECKS.get(name)
    lazy = name in LAZY_INPUT
    builds_items = name in BUILDS_ITEMS

    @pass_context
    def guarded(context, value=None, *args, **kwargs):
        budget = current()
        budget.tick()
        if check is not None:
            check(budget, value, *args, **kwargs)
        small = isinstance(value, (list, tuple, dict, str)) and len(value) <= SMALL_INPUT
        if lazy and not small:
            value = BudgetedIterator(budget, value, name)
        result = _call_with_pass_arg(function, pass_arg, context, (value, *args), kwargs)
        if isinstance(result, str):  # the common case, kept short
            size = len(result)
            if size > _LARGE or budget.total + size > MAX_TOTAL_SIZE:
                budget.charge(size, name)
            else:
                budget.total += size
            return result
        if small and not builds_items and hasattr(result, "__next__"):
            return result  # at most SMALL_INPUT items of the input: not worth a tick each
        return budget.built(result, name)

    guarded.__name__ = f"guarded_{name}"
    return guarded


def guard_test(function):
    pass_arg = _pass_arg(function)

    @pass_context
    def guarded(context, *args, **kwargs):
        current().tick()
        return _call_with_pass_arg(function, pass_arg, context, args, kwargs)

    return guarded


def guard_filters(filters: dict) -> dict:
    guarded = {name: guard_filter(name, function) for name, function in filters.items()}
    guarded.update(_private_filters())
    return guarded


def guard_tests(tests: dict) -> dict:
    return {name: guard_test(function) for name, function in tests.items()}


def _private_filters() -> dict:
    @pass_context
    def loop(context, iterable, literal_chars=0):
        # Each iteration also writes the loop body's literal text: charge it, or a loop of a
        # million iterations over 60 KB of text would build 60 GB before the clock is read.
        return BudgetedIterator(current(), iterable, "a loop", per_item=max(1, literal_chars))

    @pass_context
    def concat(context, parts):
        budget = current()
        size = 0
        for part in parts:
            # str() of a list is about as long as its deep size; x4 covers quotes and commas.
            size += len(part) if isinstance(part, str) else 4 * budget.measure(part) + 8
        budget.charge(size, "~")
        return "".join([part if isinstance(part, str) else str(part) for part in parts])

    @pass_context
    def literal(context, value):
        return current().built(value, "a literal")

    @pass_context
    def add(context, operands):
        return binop("+", *operands)

    return {LOOP_FILTER: loop, CONCAT_FILTER: concat, LITERAL_FILTER: literal, ADD_FILTER: add}


# ---- operators and calls (called by the environment's hooks) -------------------------------
_SEQUENCES = (str, list, tuple)


def binop(operator: str, left: Any, right: Any) -> Any:
    """`left <operator> right` for the operators that can grow a value (`+ * % **`), checked
    first. No tick: an operator runs once per evaluation unless a loop repeats it, and loops
    tick on their own; arithmetic on numbers stays a type check away from the plain operator."""
    if operator == "+":
        if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
            budget = current()
            budget.charge(budget.measure(left) + budget.measure(right), "+")
        return left + right
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
                raise BudgetExceeded("the size budget: the product is too large")
        else:
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, _SEQUENCES) and isinstance(count, int):
                    budget = current()
                    budget.charge(budget.measure(sequence) * max(count, 0), "*")
        return left * right
    if operator == "%":
        if not isinstance(left, str):
            return left % right
        check_format(left)
        result = left % right
        current().charge(len(result), "%")
        return result
    if operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            if max(abs(left), 2).bit_length() * right > MAX_INT_BITS:
                raise BudgetExceeded(f"the size budget: {left} ** {right} is too large")
        return left**right
    raise ValueError(f"operator {operator!r} is not budgeted")


def output(value: Any) -> Any:
    """Every `{{ ... }}` a template writes (the environment's `finalize`): all of it counts
    against the evaluation's total, or a loop could write gigabytes between two clock reads."""
    budget = _state.budget
    if budget is None:
        return value
    if isinstance(value, str):
        size = len(value)
        if size > MAX_VALUE_SIZE or budget.total + size > MAX_TOTAL_SIZE:
            budget.charge(size, "output")  # raises with the message
        budget.total += size
    elif isinstance(value, (list, tuple, dict)):
        budget.charge(budget.measure(value), "output")
    return value


# Methods of built-in values a template may call, and the argument checks some need. Other
# methods (`str.translate`, `str.expandtabs`, `int.to_bytes`, ...) can build more than any
# budget allows from small arguments, and templates have no use for them.
_STR_METHODS = frozenset({
    "capitalize", "casefold", "center", "count", "endswith", "find", "format", "format_map", "index",
    "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric",
    "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "partition",
    "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit",
    "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title", "upper", "zfill",
})
_NUMBER_METHODS = frozenset({"as_integer_ratio", "bit_count", "bit_length", "conjugate", "is_integer", "hex"})
SAFE_METHODS = {
    str: _STR_METHODS,
    dict: frozenset({"copy", "get", "items", "keys", "values"}),
    list: frozenset({"copy", "count", "index"}),
    tuple: frozenset({"count", "index"}),
    int: _NUMBER_METHODS - {"hex"},
    bool: _NUMBER_METHODS - {"hex"},
    float: _NUMBER_METHODS,
}


def check_call(budget: Budget, function: Any, args: tuple, kwargs: dict) -> None:
    budget.tick()
    owner = getattr(function, "__self__", None)
    if owner is None:
        return  # a function or macro, not a method of a value
    allowed = SAFE_METHODS.get(type(owner))
    if allowed is None:
        kind = next((kind for kind in SAFE_METHODS if isinstance(owner, kind)), None)
        if kind is None:
            return  # a method of one of Jinja's own objects (loop.cycle, caller, ...)
        allowed = SAFE_METHODS[kind]
    name = getattr(function, "__name__", "")
    if name not in allowed:
        raise SecurityError(f"method {name!r} of {type(owner).__name__} values is not available in expressions")
    if not isinstance(owner, str):
        return
    if name in ("center", "ljust", "rjust", "zfill") and args:
        budget.charge(max(_as_int(args[0]), len(owner)), name)
    elif name == "replace" and len(args) >= 2:
        _check_replace(budget, owner, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count"))
    elif name == "join" and args:
        items = args[0]
        if not isinstance(items, (list, tuple)):
            raise SecurityError("str.join takes a list in expressions (or use the join filter)")
        _check_join(budget, items, owner)


# ---- compile time ------------------------------------------------------------------------
_OPENING_BLOCKS = frozenset({"if", "for", "macro", "call", "filter", "with", "autoescape", "block", "trans"})
_UNARY = frozenset({"not", "-", "+"})


def check_source(environment, source: str, expression: bool) -> None:
    """Refuse a source that is too long or nested too deeply, before Jinja parses it."""
    if len(source) > MAX_SOURCE_CHARS:
        raise TooComplex(f"it is {len(source):,} characters long (at most {MAX_SOURCE_CHARS:,})")
    if not any(char in source for char in "([{-+") and "not" not in source and "{%" not in source:
        return  # nothing that nests: skip the tokenizer (most texts)
    stream = environment.lexer.tokenize(source, state="variable" if expression else None)
    brackets = blocks = unary = deepest = 0
    after_block_begin = pending_set = False
    for token in stream:
        kind, value = token.type, token.value
        if kind in ("lparen", "lbracket", "lbrace"):
            brackets += 1
        elif kind in ("rparen", "rbracket", "rbrace"):
            brackets -= 1
        if after_block_begin and kind == "name":
            if value in _OPENING_BLOCKS:
                blocks += 1
            elif value.startswith("end"):
                blocks -= 1
            elif value == "set":
                pending_set = True  # a block `{% set x %}` unless an `=` follows
        after_block_begin = kind == "block_begin"
        if kind == "assign":
            pending_set = False
        elif kind == "block_end" and pending_set:
            blocks += 1
            pending_set = False
        operator = value if kind == "name" else {"sub": "-", "add": "+"}.get(kind)
        unary = unary + 1 if operator in _UNARY else 0
        deepest = max(deepest, brackets + blocks + unary)
        if deepest > MAX_NESTING:
            raise TooComplex(f"it is nested more than {MAX_NESTING} levels deep "
                             f"(brackets, `not`s and blocks; line {token.lineno})")


def check_tree(tree: nodes.Node) -> None:
    """Refuse a parsed tree deeper than MAX_TREE_DEPTH (long chains of `+`, filters or `.x`)."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_TREE_DEPTH:
            raise TooComplex(f"it is too complex: its parts are nested more than {MAX_TREE_DEPTH} levels "
                             f"deep (line {getattr(node, 'lineno', '?')}; long chains of operators or "
                             "filters count one level per link)")
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())


class _BudgetRewriter(NodeTransformer):
    """Routes loops, `~` and literals through the private budget filters (see the module doc)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        literal = sum(len(data.data) for data in node.find_all(nodes.TemplateData))
        node.iter = nodes.Filter(node.iter, LOOP_FILTER, [nodes.Const(literal)], [], None, None,
                                 lineno=node.lineno)
        return node

    def visit_Add(self, node: nodes.Add) -> nodes.Node:
        # `+` joins strings and lists too. Only an operand that is a number constant
        # (`trigger.n + 1`, most uses) proves it is arithmetic and lets Python add directly.
        self.generic_visit(node)
        if any(isinstance(side, nodes.Const) and isinstance(side.value, (int, float)) and not isinstance(side.value, bool)
               for side in (node.left, node.right)):
            return node
        return nodes.Filter(nodes.Tuple([node.left, node.right], "load", lineno=node.lineno), ADD_FILTER, [], [],
                            None, None, lineno=node.lineno)

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(nodes.Tuple(node.nodes, "load", lineno=node.lineno), CONCAT_FILTER, [], [], None, None,
                            lineno=node.lineno)

    def _literal(self, node: nodes.Node) -> nodes.Node:
        self.generic_visit(node)
        if getattr(node, "ctx", "load") != "load":
            return node
        return nodes.Filter(node, LITERAL_FILTER, [], [], None, None, lineno=node.lineno)

    visit_List = visit_Dict = _literal

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        return self._literal(node) if node.ctx == "load" else node


def rewrite(tree: nodes.Template, environment) -> nodes.Template:
    tree = _BudgetRewriter().visit(tree)
    tree.set_environment(environment)
    return tree
