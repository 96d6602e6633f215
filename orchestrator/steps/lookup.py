"""lookup: the latest value of a key in a table kept from a Kafka topic (worker-run).

The table (orchestrator/runtime/tables.py) is each worker process's in-memory copy of the
topic, followed live: what a lookup answers depends on when it runs, so a worker runs it and
its answer is recorded as the step's result (replaying a run's history never asks again).
"""

from __future__ import annotations

import os
from typing import Any

from .base import StepConfigError, StepType, TaskContext, as_text, template_property

TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"


def reserved_prefix() -> str:
    """Sluice's own topic prefix, from the settings where Django is set up (web, runners)."""
    try:
        from django.conf import settings

        if settings.configured:
            return settings.SLUICE_TOPIC_PREFIX
    except ImportError:
        pass
    return os.environ.get("SLUICE_TOPIC_PREFIX", "wf.")


def reserved_topic_error(topic: str, prefix: str) -> str | None:
    """Why `topic` may not be a table (it is one of Sluice's own), or None."""
    if prefix and topic.startswith(prefix):
        return f"topic {topic!r} is reserved for Sluice (names starting with {prefix!r} are its own)"
    return None


class Lookup(StepType):
    name = "lookup"
    label = "Look up in a table"
    group = "Data"
    icon = "search"
    description = ("Enrich a run with the latest value of a key in a table kept from a Kafka topic (all "
                   "partitions, followed live; tombstones delete keys). Output: {\"found\": bool, \"value\": ...}.")
    config_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "Look up in a table",
        "additionalProperties": False,
        "required": ["topic", "key"],
        "properties": {
            "topic": {
                "type": "string",
                "title": "Topic",
                "description": "The table's Kafka topic, ideally compacted: its latest record per key is the table.",
                "default": "",
                "minLength": 1,
                "pattern": TOPIC_PATTERN,
                "x-widget": "text",  # a name, not a template: validation checks it before any run
            },
            "key": template_property(
                "Key",
                "The record key to look up, e.g. {{ trigger.customer_id }}; compared as text with the record keys.",
                default="",
                minLength=1,
            ),
        },
    }
    runs_on = "worker"

    def check_config(self, config: dict) -> list[tuple[str, str]]:
        topic = config.get("topic")
        refused = reserved_topic_error(topic, reserved_prefix()) if isinstance(topic, str) else None
        return [("topic", f"{refused}; look up in a topic of your own")] if refused else []

    def execute(self, config: dict, task: TaskContext) -> Any:
        from ..runtime import tables

        key = config.get("key")
        if key is None or key == "":
            raise StepConfigError("key", "rendered to nothing; check the names in the template")
        found, value = tables.store().lookup(config["topic"], as_text(key))
        return {"found": found, "value": value}


STEP_TYPE = Lookup()
