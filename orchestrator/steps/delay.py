"""delay: wait a number of seconds, on a timer kept in the run state (engine-run)."""

from .base import Sleep, StepConfigError, StepType, as_number, fails_cleanly, number_or_template_property

# A delay longer than this is almost certainly a unit mistake (ms for s); a schedule fits better.
MAX_DELAY_SECONDS = 366 * 24 * 3600


class Delay(StepType):
    name = "delay"
    label = "Delay"
    group = "Waiting"
    icon = "clock"
    description = "Wait: pause this path for a number of seconds (a timer in the run state, survives restarts)."
    config_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "Delay",
        "additionalProperties": False,
        "required": ["seconds"],
        "properties": {
            "seconds": number_or_template_property(
                "Seconds", "How long to wait: a number, or a template such as {{ trigger.wait }}.", default=5,
                maximum=MAX_DELAY_SECONDS,
            ),
        },
    }

    @fails_cleanly
    def start(self, config: dict, context: dict) -> Sleep:
        seconds = as_number(self.render_config(config, context).get("seconds"), "seconds")
        if seconds > MAX_DELAY_SECONDS:
            raise StepConfigError("seconds", f"{seconds:g} is more than a year ({MAX_DELAY_SECONDS})")
        return Sleep(seconds=seconds, output={"slept_seconds": seconds})


STEP_TYPE = Delay()
