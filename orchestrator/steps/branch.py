"""branch: follow the "true" or the "false" port depending on a condition (engine-run)."""

from .. import expressions
from .base import Complete, StepType, expression_property, fails_cleanly


class Branch(StepType):
    name = "branch"
    label = "Branch"
    group = "Logic"
    icon = "git-branch"
    description = "Choose a path: evaluate a condition and continue on the true or the false port; the other path is skipped."
    config_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "Branch",
        "additionalProperties": False,
        "required": ["condition"],
        "properties": {
            "condition": expression_property(
                "Condition",
                "A bare expression, without braces, e.g. steps.charge.output.status == 200.",
                default="true",
            ),
        },
    }
    ports = ("true", "false")
    condition_fields = ("condition",)

    @fails_cleanly
    def start(self, config: dict, context: dict) -> Complete:
        result = expressions.truthy(config["condition"], context)
        return Complete(output={"result": result}, port="true" if result else "false")


STEP_TYPE = Branch()
