"""subworkflow: run another workflow and take its output (engine-run; the child runs anywhere)."""

from __future__ import annotations

from .base import RunChildren, StepConfigError, StepType, fails_cleanly, json_property

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?$"


def version_property() -> dict:
    return {
        "title": "Version",
        "description": 'Which version of the workflow runs: "live" (the one published when the step starts) or a number.',
        "default": "live",
        "anyOf": [{"const": "live"}, {"type": "integer", "minimum": 1}],
    }


def workflow_property() -> dict:
    return {"type": "string", "title": "Workflow", "description": "Slug of the workflow to run.",
            "default": "", "minLength": 1, "pattern": SLUG_PATTERN, "x-widget": "workflow"}


def chosen_version(rendered: dict) -> int | None:
    version = rendered.get("version", "live")
    if version in (None, "live"):
        return None
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StepConfigError("version", f'expected "live" or a version number, got {version!r}')
    return version


class Subworkflow(StepType):
    name = "subworkflow"
    label = "Sub-workflow"
    group = "Composition"
    icon = "layers"
    description = ("Run another workflow with an input and wait for it: its output becomes this step's. "
                   "Cancelling this run cancels it; a failed child fails the step (the retry policy starts a new one).")
    config_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "Sub-workflow",
        "additionalProperties": False,
        "required": ["workflow"],
        "properties": {
            "workflow": workflow_property(),
            "version": version_property(),
            "input": json_property("Input", "The child run's input; strings are templates, e.g. {\"order\": \"{{ trigger.id }}\"}.",
                                   default={}),
        },
    }

    @fails_cleanly
    def start(self, config: dict, context: dict) -> RunChildren:
        rendered = self.render_config({key: value for key, value in config.items() if key != "version"}, context)
        return RunChildren(workflow=rendered["workflow"], version=chosen_version(config), input=rendered.get("input"))


STEP_TYPE = Subworkflow()
