"""foreach: one child run of a workflow per item of a list, a bounded number at once (engine-run)."""

from __future__ import annotations

from typing import Any

from .. import expressions
from .base import RunChildren, StepConfigError, StepType, fails_cleanly, json_property, template_property
from .subworkflow import chosen_version, version_property, workflow_property

# The items live in the run state until every child has finished: keep lists reasonable.
MAX_ITEMS = 10_000
ITEM_NAMES = ("trigger", "record", "steps", "run", "secret", "item", "index")


class Foreach(StepType):
    name = "foreach"
    label = "For each"
    group = "Composition"
    icon = "list-checks"
    description = ("Run a workflow once per item of a list, at most `concurrency` at a time. Output: "
                   "{\"results\": [...in item order...], \"failed\": [{\"index\", \"error\"}]}.")
    config_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "For each",
        "additionalProperties": False,
        "required": ["items", "workflow"],
        "properties": {
            "items": template_property("Items", "A template that renders to a list, e.g. {{ trigger.orders }}.",
                                       default="", minLength=1),
            "workflow": workflow_property(),
            "version": version_property(),
            "input": json_property("Input", "Each child's input; templates see `item` and `index`, "
                                            "e.g. {\"order\": \"{{ item }}\", \"index\": \"{{ index }}\"}.",
                                   default={"item": "{{ item }}"}),
            "concurrency": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10,
                            "title": "Concurrency", "description": "At most this many child runs at once."},
            "on_item_failure": {"enum": ["fail", "collect"], "default": "fail", "title": "On item failure",
                                "description": "fail: the first failed item cancels the others and fails the step; "
                                               "collect: go on and list failures in the output."},
        },
    }
    expression_names = {"input": ITEM_NAMES}

    @fails_cleanly
    def start(self, config: dict, context: dict) -> RunChildren:
        rendered = self.render_config({"items": config.get("items"), "workflow": config.get("workflow")}, context)
        items = rendered["items"]
        if not isinstance(items, list):
            raise StepConfigError("items", f"must render to a list, got {type(items).__name__}")
        if len(items) > MAX_ITEMS:
            raise StepConfigError("items", f"{len(items)} items; at most {MAX_ITEMS}")
        return RunChildren(workflow=rendered["workflow"], version=chosen_version(config), items=items,
                           concurrency=int(config.get("concurrency") or 10),
                           on_item_failure=config.get("on_item_failure") or "fail")

    def child_input(self, config: dict, context: dict, item: Any, index: int) -> Any:
        try:
            return expressions.render(config.get("input", {"item": "{{ item }}"}), {**context, "item": item, "index": index})
        except expressions.ExpressionError as exc:
            raise expressions.ExpressionError(f"config.input: {exc}") from None


STEP_TYPE = Foreach()
