"""The Python handler registry and the demo handlers."""

import sys
import time

import pytest

from orchestrator import handlers
from orchestrator.steps.base import TaskContext


def ctx(attempt=1, step_id="s"):
    return TaskContext(run_id="r", workflow="w", version=1, step_id=step_id, attempt=attempt,
                       idempotency_key=f"r/{step_id}/{attempt}")


@pytest.fixture
def cleanup():
    names = []
    yield names
    for name in names:
        handlers.unregister(name)


def test_decorator_registers_by_name_and_returns_the_function(cleanup):
    @handler_named("shop.refund", cleanup)
    def refund(input, ctx):
        return {"refunded": input}

    assert handlers.get_handler("shop.refund") is refund
    assert refund(3, ctx()) == {"refunded": 3}
    assert refund.handler_name == "shop.refund"
    assert "shop.refund" in handlers.registered()


def handler_named(name, cleanup):
    cleanup.append(name)
    return handlers.handler(name)


def test_default_name_is_module_and_function(cleanup):
    def tidy(input, ctx):
        return None

    cleanup.append(f"{__name__}.tidy")
    handlers.handler()(tidy)
    assert handlers.get_handler(f"{__name__}.tidy") is tidy


def test_bare_decorator_works_too(cleanup):
    def bare(input, ctx):
        return 1

    cleanup.append(f"{__name__}.bare")
    assert handlers.handler(bare) is bare
    assert handlers.get_handler(f"{__name__}.bare") is bare


def test_unknown_handler_error_lists_known_handlers(cleanup):
    handler_named("known.one", cleanup)(lambda input, ctx: 1)
    with pytest.raises(handlers.HandlerNotFound) as raised:
        handlers.get_handler("known.two")
    message = str(raised.value)
    assert message.startswith("no Python handler named 'known.two'; registered handlers:")
    assert "known.one" in message
    assert isinstance(raised.value, KeyError)  # code that catches KeyError keeps working


def test_non_string_lookup_is_a_clear_error():
    with pytest.raises(handlers.HandlerNotFound):
        handlers.get_handler(["not", "a", "name"])


@pytest.mark.parametrize("bad", ["has space", "1starts.with.digit", "trailing.", "", "a..b", "dash-ed"])
def test_bad_names_are_refused(bad):
    with pytest.raises(handlers.HandlerRegistrationError, match="dotted identifiers"):
        handlers.handler(bad)(lambda input, ctx: None)


def test_one_name_cannot_belong_to_two_functions(cleanup):
    def first(input, ctx):
        return 1

    def second(input, ctx):
        return 2

    handler_named("dup.name", cleanup)(first)
    with pytest.raises(handlers.HandlerRegistrationError, match="already taken by .*first"):
        handlers.handler("dup.name")(second)
    assert handlers.get_handler("dup.name") is first


def test_reimporting_a_module_re_registers_without_error():
    import importlib

    import demo.handlers as module

    before = handlers.get_handler("demo.echo")
    importlib.reload(module)
    after = handlers.get_handler("demo.echo")
    assert after is module.echo and after is not before


def test_load_handler_modules_imports_and_reports(settings):
    handlers.unregister("demo.flaky")
    sys.modules.pop("demo.handlers", None)
    settings.SLUICE_HANDLER_MODULES = ["demo.handlers"]
    assert handlers.load_handler_modules() == ["demo.handlers"]
    assert handlers.get_handler("demo.flaky")


def test_load_handler_modules_names_the_missing_module():
    with pytest.raises(ImportError, match="'shop.nonexistent_handlers'"):
        handlers.load_handler_modules(["shop.nonexistent_handlers"])


# ---- demo handlers ------------------------------------------------------------------------
@pytest.fixture
def demo():
    handlers.load_handler_modules(["demo.handlers"])
    return handlers.get_handler


def test_demo_echo(demo):
    assert demo("demo.echo")({"a": [1, 2]}, ctx()) == {"a": [1, 2]}


def test_demo_fail_always_fails(demo):
    for attempt in (1, 2, 5):
        with pytest.raises(RuntimeError, match=f"attempt {attempt}"):
            demo("demo.fail")({"message": "nope"}, ctx(attempt))


def test_demo_flaky_fails_the_first_attempts_then_succeeds(demo):
    flaky = demo("demo.flaky")
    for attempt in (1, 2):
        with pytest.raises(RuntimeError, match="flaky"):
            flaky({"x": 1}, ctx(attempt))
    assert flaky({"x": 1}, ctx(3)) == {"x": 1}
    assert flaky({"fail_times": 0}, ctx(1)) == {"fail_times": 0}
    with pytest.raises(RuntimeError):
        flaky({"fail_times": 4}, ctx(4))
    with pytest.raises(ValueError, match="fail_times"):
        flaky({"fail_times": "two"}, ctx(1))


def test_demo_sleep_sleeps_and_is_capped(demo, monkeypatch):
    started = time.monotonic()
    assert demo("demo.sleep")({"seconds": 0.2}, ctx()) == {"slept_seconds": 0.2}
    assert time.monotonic() - started >= 0.2
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    assert demo("demo.sleep")({"seconds": 10_000}, ctx()) == {"slept_seconds": 60.0}
    assert slept == [60.0]
    with pytest.raises(ValueError):
        demo("demo.sleep")({"seconds": -1}, ctx())
