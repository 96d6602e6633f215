"""Expression budgets: nothing a definition or its data writes can stall a loop or crash it.

Each bomb must end in an ExpressionError saying which budget it exceeded, the next evaluation
must work as usual, and sources too long or too deeply nested must be refused at compile time
(and by validation) with an error, never a RecursionError.
"""

from __future__ import annotations

import uuid

import pytest

from orchestrator import expression_limits as limits
from orchestrator import expressions, spec
from orchestrator.expressions import ExpressionError

DATA = {"trigger": {"items": list(range(4000)), "text": "x" * 5000, "name": "Ada",
                    "objects": [{}] * 200_000, "numbers": list(range(100_000)),
                    # Real work well inside the CPU time budget even on a busy machine.
                    "some": list(range(20_000))}}


@pytest.mark.parametrize("template", [
    # loops: 16 million iterations (the "10 million step loop")
    "{% for a in trigger['items'] %}{% for b in trigger['items'] %}{% endfor %}{% endfor %}",
    "{% for a in trigger.text %}{% for b in trigger.text %}.{% endfor %}{% endfor %}",
    # recursion through a macro, and filters that read many items and yield few
    "{% macro f(n) %}{% for i in [1, 2] %}{{ f(n) }}{% endfor %}{% endmacro %}{{ f(1) }}",
    "{{ trigger.objects | selectattr('missing') | list }}",
    "{{ trigger.objects | select('none') | list | length }}",
])
def test_runaway_evaluations_stop_at_the_time_budget(template):
    with pytest.raises(ExpressionError, match=r"exceeded the time budget of 0\.25 s|maximum recursion depth"):
        expressions.render(template, DATA)
    assert expressions.render("Hello {{ trigger.name }}", DATA) == "Hello Ada"


@pytest.mark.parametrize("expression", [
    "[1] | batch(3000000, 0)",                       # the 5.2 s stall
    "[1] | batch(3000000, 0) | list",
    "[1, 2] | slice(3000000, 0) | list",
    "'x' * 600000 ~ 'y' * 600000",                    # ~ concatenation
    "('x' * 600000) + ('y' * 600000)",
    "'ab' * 600000",                                  # string multiplication
    "[[1] * 1000] * 2000",                            # a list of lists, counted deep
    "(('x' * 1000) | list) * 2000",
    "'%s' | format('x' * 600000) | replace('x', 'yy')",
    "(['x'] * 1000) | join('-') | replace('-', 'y' * 2000)",
    "(['x'] * 200000) | join('.' * 10)",
    "'x'.center(10 ** 7)", "'x'.ljust(10 ** 7)", "'x'.zfill(10 ** 7)",
    "('x' | safe).center(10 ** 9)",                   # Markup's methods too
    "('x-' * 1000) | replace('-', 'y' * 10000)",
    "('http://a.b ' * 100) | urlize(target='t' * 100000)",
    "[1] | tojson(indent=100000)",
    "trigger.numbers | sort",
    "9 ** 1000 * 9 ** 1000",
    # Widths and precisions: written out and small, never taken from an argument.
    "'%.99999999f' % 1.5", "'{:.99999999f}'.format(1.5)", "'%(a)99999999d' | format(a=1)",
    "'{0:>{1}}'.format('x', 10 ** 9)", "'{a:{w}}'.format_map({'a': 'x', 'w': 10 ** 9})", "'%*d' % (10 ** 9, 1)",
    # Filters that walk nested values in Python take bounded input.
    "trigger.numbers | pprint", "trigger.numbers | urlencode",
])
def test_building_too_much_is_refused_before_it_is_built(expression):
    with pytest.raises(ExpressionError, match=r"exceeded the size budget|too large"):
        expressions.evaluate(expression, DATA)


@pytest.mark.parametrize("template", [
    # Doubling with set: each value is within the limit, the total is not.
    "{% set a = 'x' * 500000 %}{% set b = a ~ a %}{% set c = b ~ b %}{{ c | length }}",
    # Aliasing: cheap to build, expensive to walk or print.
    "{% set a = [1] * 1000 %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}{% set c = [b, b, b, b, b, b, b, b, b, b] %}"
    "{% set d = [c, c, c, c, c, c, c, c, c, c] %}{{ d | tojson | length }}",
    # A loop writing its literal text many times.
    "{% for a in trigger['items'] %}" + "y" * 60_000 + "{% endfor %}",
    "{% for a in trigger['items'] %}{{ trigger.text }}{{ trigger.text }}{{ trigger.text }}{% endfor %}",
])
def test_accumulating_too_much_is_refused(template):
    with pytest.raises(ExpressionError, match="exceeded the size budget"):
        expressions.render(template, DATA)


@pytest.mark.parametrize("expression", ["'x'.translate({})", "'\\tx'.expandtabs(10 ** 8)", "(1).to_bytes(10 ** 9, 'big')",
                                        "'x'.encode()"])
def test_methods_that_can_build_without_bound_are_not_available(expression):
    with pytest.raises(ExpressionError, match="not available in expressions"):
        expressions.evaluate(expression, {})


def test_range_and_friends_do_not_exist():
    with pytest.raises(ExpressionError, match="'range' is undefined"):
        expressions.evaluate("range(10 ** 9) | list", {})


@pytest.mark.parametrize("expression, expected", [
    ("trigger['items'] | batch(1000) | list | length", 4),
    ("trigger['items'] | map('string') | join(',') | length", 18889),
    ("trigger.text | list | length", 5000),
    ("(trigger['items'] | sort(reverse=true))[0]", 3999),
    ("trigger.some | select('odd') | list | length", 10000),
    ("trigger.some | tojson | length", 128890),
    ("'%05d|%s' % (7, 'x' * 100)", "00007|" + "x" * 100),
    ("'%(a)s-%(b)05.1f %%' % {'a': 1, 'b': 2}", "1-002.0 %"),
    ("'{0}:{1:>5}|{x:.2f}'.format(1, 2, x=3.14159)", "1:    2|3.14"),
    ("'{{literal}}'.format()", "{literal}"),
    ("'ab'.center(6) ~ 'x'.zfill(3) ~ ','.join(['a', 'b']) ~ 'a-b'.replace('-', '+')", "  ab  00xa,ba+b"),
    ("{'a': [1, (2, 3)], 'b': trigger.name}", {"a": [1, [2, 3]], "b": "Ada"}),
])
def test_real_work_within_the_budgets_still_works(expression, expected):
    assert expressions.evaluate(expression, DATA) == expected


@pytest.mark.parametrize("template, expected", [
    ("{% for i in [1, 2, 3] %}{{ i }}{% if not loop.last %},{% endif %}{% endfor %} of {{ [1, 2, 3] | length }}",
     "1,2,3 of 3"),
    ("{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}", "a=1"),
    ("{% for n in tree recursive %}{{ n.name }}({{ loop(n.children) }}){% endfor %}", "a(b())"),
    ("{% macro greet(who) %}Hi {{ who }}{% endmacro %}{{ greet('Ada') }}", "Hi Ada"),
    ("{% filter upper %}{% for i in [1, 2] %}ab{% endfor %}{% endfilter %}", "ABAB"),
    ("{% set a, b = 1, 2 %}{{ a + b }} {{ 'x' ~ a ~ [b] }}", "3 x1[2]"),
    ("{% for x in [] %}never{% else %}empty{% endfor %}", "empty"),
])
def test_templates_within_the_budgets_render_as_before(template, expected):
    assert expressions.render(template, {"tree": [{"name": "a", "children": [{"name": "b", "children": []}]}]}) == expected


def test_budgets_are_per_evaluation_and_per_thread():
    with pytest.raises(ExpressionError):
        expressions.evaluate("[1] | batch(3000000, 0)", {})
    assert limits._state.budget is None  # nothing left behind for the next evaluation
    for _ in range(12):  # 12 x 1 MB: only the total of ONE evaluation is bounded
        assert expressions.evaluate("('x' * 999999) | length", {}) == 999999


# ---- compile time ----------------------------------------------------------------------------
@pytest.mark.parametrize("source, kind", [
    ("(" * 5000 + "1" + ")" * 5000, "expression"),
    ("not " * 5000 + "1", "expression"),
    ("- " * 5000 + "1", "expression"),
    ("[" * 200 + "]" * 200, "expression"),
    ("+".join(["1"] * 1000), "expression"),
    ("1" + " | string" * 1000, "expression"),
    ("trigger" + ".a" * 1000, "expression"),
    ("1 if x else " * 1000 + "2", "expression"),
    ("{% if 1 %}" * 2000 + "x" + "{% endif %}" * 2000, "template"),
    ("{% for i in x %}" * 200 + "x" + "{% endfor %}" * 200, "template"),
    ("{% set a %}" * 100 + "x" + "{% endset %}" * 100, "template"),
    ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }} and text", "template"),
    ("x" * (limits.MAX_SOURCE_CHARS + 1) + "{{ 1 }}", "template"),
])
def test_sources_too_deep_or_too_long_are_refused_at_compile_time(source, kind):
    check = expressions.check_expression if kind == "expression" else expressions.check_template
    with pytest.raises(ExpressionError, match=r"is refused: it is (nested|too complex|\d[\d,]* characters long)"):
        check(source)
    references = expressions.expression_references if kind == "expression" else expressions.template_references
    with pytest.raises(ExpressionError, match="is refused"):
        references(source)


def test_nesting_within_the_limits_compiles_and_runs():
    depth = limits.MAX_NESTING - 2
    assert expressions.evaluate("(" * depth + "1" + ")" * depth, {}) == 1
    assert expressions.render("{% if 1 %}" * 20 + "deep" + "{% endif %}" * 20, {}) == "deep"
    assert expressions.evaluate(" + ".join(["1"] * 40), {}) == 40


def test_validation_reports_a_too_deep_expression_on_its_field():
    definition = {"slug": "deep", "trigger": {"type": "manual"}, "steps": [
        {"id": "t", "type": "transform", "config": {"output": "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"}},
        {"id": "b", "type": "branch", "config": {"condition": "not " * 5000 + "true"}}],
        "edges": [{"from": "t", "to": "b"}]}
    problems = {(problem.path, problem.code) for problem in spec.validate(definition)}
    assert ("steps[0].config.output", "bad-template") in problems
    assert ("steps[1].config.condition", "bad-expression") in problems


# ---- the engine goes on ------------------------------------------------------------------------
@pytest.mark.kafka
def test_a_step_over_budget_fails_and_the_engine_runs_the_next_run(kafka, runner, history):  # noqa: F811
    from orchestrator.runtime import commands
    from tests.runtime_support import publish

    slug = f"bomb-{uuid.uuid4().hex[:6]}"
    publish({"slug": slug, "trigger": {"type": "manual"}, "steps": [
        {"id": "work", "type": "transform", "config": {"output": "{{ trigger.payload }}"}},
        {"id": "shape", "type": "transform", "config": {"output": {
            "n": "{% if trigger.bomb %}{% for a in trigger.payload %}{% for b in trigger.payload %}{% endfor %}"
                 "{% endfor %}{% endif %}{{ trigger.payload | length }}"}}}],
        "edges": [{"from": "work", "to": "shape"}]})
    bomb = commands.start_run(slug, 1, {"bomb": True, "payload": list(range(5000))}, started_by="test")
    normal = commands.start_run(slug, 1, {"bomb": False, "payload": [1, 2, 3]}, started_by="test")
    history.wait_finished([bomb, normal], timeout=60)
    finished = history.finished()
    assert finished[bomb][0].kind == "run_failed"
    failed = [e for e in history.by_run[bomb] if e.kind == "step_failed"]
    assert failed and "exceeded the time budget" in failed[0].data["error"] and failed[0].step_id == "shape"
    assert finished[normal][0].kind == "run_succeeded"
