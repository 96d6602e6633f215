"""kafka_produce: emit one record (engine-run: produced inside the engine's transaction).

Because the engine writes the record in the same Kafka transaction that records the step as
done, the record is produced exactly once per successful step, even across crashes.
"""

from .base import (
    Emit,
    StepConfigError,
    StepType,
    as_text,
    fails_cleanly,
    json_property,
    template_property,
)


class KafkaProduce(StepType):
    name = "kafka_produce"
    label = "Produce to Kafka"
    group = "Integrations"
    icon = "send"
    description = "Publish an event: write one record (JSON value, optional key and headers) to a Kafka topic, exactly once."
    config_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "Produce to Kafka",
        "additionalProperties": False,
        "required": ["topic", "value"],
        "properties": {
            "topic": template_property(
                "Topic", "Kafka topic to write to (may be a template).", default="", minLength=1
            ),
            "value": json_property(
                "Value",
                "The record value: any JSON; strings are templates, \"{{ trigger }}\" passes an object on.",
                default={},
            ),
            "key": template_property(
                "Key", "Record key, e.g. {{ trigger.order_id }}, so related records stay in order. Empty: no key.",
                default="",
            ),
            "headers": {
                "type": "object",
                "title": "Headers",
                "description": "Record headers: names to template strings.",
                "default": {},
                "additionalProperties": {"type": "string"},
                "x-widget": "json",
            },
        },
    }

    topic_fields = ("topic",)

    @fails_cleanly
    def start(self, config: dict, context: dict) -> Emit:
        rendered = self.render_config(config, context)
        topic = rendered.get("topic")
        if not isinstance(topic, str) or not topic.strip():
            raise StepConfigError("topic", f"rendered to {topic!r}, not a topic name")
        key = rendered.get("key")
        key = None if key in (None, "") else as_text(key)
        headers = {name: as_text(value) for name, value in (rendered.get("headers") or {}).items()}
        return Emit(
            topic=topic.strip(),
            value=rendered.get("value"),
            key=key,
            headers=headers,
            output={"topic": topic.strip(), "key": key},
        )


STEP_TYPE = KafkaProduce()
