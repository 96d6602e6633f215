"""fail: end the step (and so the run, unless handled) with a message; never retried."""

from .base import Fail, StepType, as_text, fails_cleanly, template_property


class FailStep(StepType):
    name = "fail"
    label = "Fail"
    group = "Control"
    icon = "x-octagon"
    description = "Stop with an error: the step fails at once with the message, without retries."
    config_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "Fail",
        "additionalProperties": False,
        "properties": {
            "message": template_property(
                "Message", "Why the run failed, e.g. Order {{ trigger.id }} was rejected.", default="Failed"
            ),
        },
    }
    retryable = False

    @fails_cleanly
    def start(self, config: dict, context: dict) -> Fail:
        message = self.render_config(config, context).get("message")
        return Fail(as_text(message) if message not in (None, "") else "Failed", retryable=False)


STEP_TYPE = FailStep()
