"""Python step handlers: functions registered by name, like Celery tasks.

    from orchestrator.handlers import handler

    @handler("shop.refund")          # or @handler(): the name is "<module>.<function>"
    def refund(input, ctx):          # ctx: orchestrator.steps.base.TaskContext
        return {"refunded": input["amount"]}

A `python` step names the handler in its config; a worker calls it with the step's rendered
input and the attempt's TaskContext. Return JSON data; raise to fail the attempt (the engine
retries it per the step's retry policy). Handlers run at least once per successful step: use
`ctx.idempotency_key` to make external side effects safe to repeat.

Runners import the modules listed in settings.SLUICE_HANDLER_MODULES (`load_handler_modules`)
so their decorators run before the first task arrives.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

Handler = Callable[[Any, Any], Any]

# Dotted names of identifiers ("shop.refund", "demo.echo"): the same rule the python step's
# config schema applies, so a name that validates can also be registered.
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

_registry: dict[str, Handler] = {}
_lock = threading.Lock()


class HandlerNotFound(KeyError):
    """No handler registered under a name; the message lists the ones that are."""

    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        self.known = sorted(known)
        listing = ", ".join(self.known) if self.known else "none (is SLUICE_HANDLER_MODULES set?)"
        super().__init__(f"no Python handler named {name!r}; registered handlers: {listing}")

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return self.args[0]


class HandlerRegistrationError(ValueError):
    """A bad handler name, or one name claimed by two different functions."""


def _qualified_name(function: Handler) -> str:
    return f"{function.__module__}.{function.__qualname__}"


def handler(name: str | None = None) -> Callable[[Handler], Handler]:
    """Register the decorated function as a Python step handler called `name`."""
    if callable(name):  # used bare, as @handler
        return handler()(name)

    def register(function: Handler) -> Handler:
        if not callable(function):
            raise HandlerRegistrationError(f"@handler must decorate a function, not {function!r}")
        handler_name = name or f"{function.__module__}.{function.__name__}"
        if not isinstance(handler_name, str) or not NAME_PATTERN.match(handler_name):
            raise HandlerRegistrationError(
                f"handler name {handler_name!r} must be dotted identifiers, e.g. 'shop.refund'"
            )
        with _lock:
            existing = _registry.get(handler_name)
            # Re-importing a module (autoreload, tests) registers the same function again: fine.
            if existing is not None and _qualified_name(existing) != _qualified_name(function):
                raise HandlerRegistrationError(
                    f"handler name {handler_name!r} is already taken by {_qualified_name(existing)}; "
                    f"cannot also register {_qualified_name(function)}"
                )
            _registry[handler_name] = function
        function.handler_name = handler_name
        return function

    return register


def get_handler(name: str) -> Handler:
    """The handler registered as `name`; HandlerNotFound (a KeyError) naming the known ones."""
    try:
        return _registry[name]
    except (KeyError, TypeError):
        raise HandlerNotFound(name, _registry) from None


def registered() -> dict[str, Handler]:
    """A copy of the registry: name -> function."""
    with _lock:
        return dict(_registry)


def unregister(name: str) -> None:
    """Forget a handler (for tests and for code that registers handlers dynamically)."""
    with _lock:
        _registry.pop(name, None)


def load_handler_modules(names: Iterable[str] | None = None) -> list[str]:
    """Import the modules whose @handler functions should be available; returns their names.

    Defaults to settings.SLUICE_HANDLER_MODULES. A module that fails to import raises
    ImportError naming it, so a runner with a typo in its settings stops at start, not at the
    first task.
    """
    if names is None:
        from django.conf import settings  # only here: the registry itself needs no Django

        names = settings.SLUICE_HANDLER_MODULES
    loaded = []
    for module_name in names:
        module_name = module_name.strip()
        if not module_name:
            continue
        try:
            importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(f"cannot import handler module {module_name!r} (SLUICE_HANDLER_MODULES): {exc}") from exc
        loaded.append(module_name)
    return loaded
