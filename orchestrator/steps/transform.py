"""transform: build a new JSON value from the context (engine-run, pure)."""

from .base import Complete, StepType, fails_cleanly, json_property


class Transform(StepType):
    name = "transform"
    label = "Transform"
    group = "Data"
    icon = "shuffle"
    description = "Shape data: build a JSON value from the trigger and earlier steps' outputs with templates."
    config_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "Transform",
        "additionalProperties": False,
        "required": ["output"],
        "properties": {
            "output": json_property(
                "Output",
                "Any JSON. Strings are templates; a string that is exactly one {{ expression }} keeps "
                "its type, so \"{{ trigger.items }}\" passes the list itself.",
                default={},
            ),
        },
    }

    @fails_cleanly
    def start(self, config: dict, context: dict) -> Complete:
        return Complete(output=self.render_config(config, context).get("output"))


STEP_TYPE = Transform()
