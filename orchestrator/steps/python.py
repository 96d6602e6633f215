"""python: call a handler registered with @handler (worker-run). See orchestrator/handlers.py."""

from typing import Any

import msgspec

from .. import handlers
from .base import StepFailure, StepType, TaskContext, json_property


class HandlerOutputError(StepFailure, TypeError):
    """A handler returned something that cannot travel as JSON."""


class Python(StepType):
    name = "python"
    label = "Python handler"
    group = "Integrations"
    icon = "code"
    description = "Run your code: call a Python function registered with @handler on a worker (at least once; use the idempotency key)."
    config_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "Python handler",
        "additionalProperties": False,
        "required": ["handler"],
        "properties": {
            "handler": {
                "type": "string",
                "title": "Handler",
                "description": "Registered name, e.g. shop.refund (see SLUICE_HANDLER_MODULES).",
                "default": "demo.echo",
                "pattern": handlers.NAME_PATTERN.pattern,
            },
            "input": json_property(
                "Input", "Passed to the handler as its first argument: any JSON; strings are templates.", default={}
            ),
        },
    }
    runs_on = "worker"

    def execute(self, config: dict, task: TaskContext) -> Any:
        name = config["handler"]
        try:
            function = handlers.get_handler(name)
        except handlers.HandlerNotFound:
            # A worker started before its settings listed the module, or a module imported
            # lazily: load the configured modules once more before giving up.
            handlers.load_handler_modules()
            function = handlers.get_handler(name)
        output = function(config.get("input"), task)
        try:
            # What the worker will encode; failing here names the handler instead of the codec.
            msgspec.json.encode(output)
        except (TypeError, msgspec.EncodeError) as exc:
            raise HandlerOutputError(f"handler {name!r} returned {type(output).__name__}, which is not JSON: {exc}") from None
        return output


STEP_TYPE = Python()
