"""wait_for_event: wait for a record on a topic that belongs to this run (engine-run).

When the wait begins, `correlation` is rendered against the run (e.g. the order id). The
waits consumer then evaluates `key_expression` on every record of `topic` (names: `event`,
the decoded value, and `record`) and hands the first record whose key equals the correlation
to the step. Both sides go through `correlation_value`, so 42, 42.0 and "42" all match.
"""

import json
from typing import Any

from .. import expressions
from ..spec import MAX_TIMER_SECONDS
from .base import (
    AwaitEvent,
    Complete,
    StepConfigError,
    StepType,
    as_number,
    expression_property,
    fails_cleanly,
    template_property,
)

KEY_EXPRESSION_NAMES = ("event", "record")


def correlation_value(value: Any) -> str | None:
    """The canonical text form of a correlation key; None means "no key" (never matches)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def event_key(key_expression: str, event: Any, record: dict) -> str | None:
    """The correlation key of one record; ExpressionError if the expression fails on it."""
    return correlation_value(expressions.evaluate(key_expression, {"event": event, "record": record}))


def matches(key_expression: str, correlation: str, event: Any, record: dict) -> bool:
    """Whether a record belongs to a wait. A record the expression cannot read does not match."""
    try:
        key = event_key(key_expression, event, record)
    except expressions.ExpressionError:
        return False
    return key is not None and key == correlation


class WaitForEvent(StepType):
    name = "wait_for_event"
    label = "Wait for event"
    group = "Waiting"
    icon = "inbox"
    description = "Wait for a Kafka record that belongs to this run (matched by a correlation key), or give up after a timeout."
    config_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "Wait for event",
        "additionalProperties": False,
        "required": ["topic", "correlation", "key_expression"],
        "properties": {
            "topic": {
                "type": "string",
                "title": "Topic",
                "description": "Kafka topic to watch.",
                "default": "",
                "minLength": 1,
                "pattern": r"^[A-Za-z0-9._-]{1,249}$",
            },
            "correlation": template_property(
                "Correlation",
                "This run's key, rendered when the wait begins, e.g. {{ trigger.order_id }}.",
                default="",
                minLength=1,
            ),
            "key_expression": expression_property(
                "Key expression",
                "Evaluated on each record to get its key (names: event, record), e.g. event.order_id.",
                default="event.id",
            ),
            "timeout_seconds": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "maximum": MAX_TIMER_SECONDS,
                "title": "Timeout (seconds)",
                "description": "Continue on the timeout port after this long. Empty: wait for ever.",
                "default": None,
            },
        },
    }
    ports = ("event", "timeout")
    condition_fields = ("key_expression",)
    topic_fields = ("topic",)
    expression_names = {"key_expression": KEY_EXPRESSION_NAMES}

    @fails_cleanly
    def start(self, config: dict, context: dict) -> AwaitEvent:
        rendered = self.render_config(config, context)
        correlation = correlation_value(rendered.get("correlation"))
        if not correlation:
            raise StepConfigError("correlation", f"rendered to nothing ({config.get('correlation')!r}); check the names in it")
        timeout = rendered.get("timeout_seconds")
        return AwaitEvent(
            topic=rendered["topic"],
            correlation=correlation,
            key_expression=config["key_expression"],
            timeout_seconds=None if timeout is None else as_number(timeout, "timeout_seconds"),
        )

    def on_event(self, config: dict, context: dict, event: Any) -> Complete:
        return Complete(output=event, port="event")

    def on_timeout(self, config: dict, context: dict) -> Complete:
        return Complete(output={"timed_out": True}, port="timeout")


STEP_TYPE = WaitForEvent()
