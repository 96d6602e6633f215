"""approval: wait for a person's decision, sent to the run as a named signal (engine-run)."""

from typing import Any

from ..spec import MAX_TIMER_SECONDS
from .base import (
    AwaitSignal,
    Complete,
    StepType,
    as_number,
    as_text,
    fails_cleanly,
    template_property,
)

APPROVE_WORDS = frozenset({"approve", "approved", "yes", "accept", "accepted"})


def is_approval(payload: Any) -> bool:
    """Whether a signal payload means "approve"; anything unrecognised counts as a rejection.

    Accepted: true, "approve", {"approved": true}, {"decision": "approve"}. Rejecting on doubt
    is the safe default for a gate that guards an action.
    """
    if payload is True:
        return True
    if isinstance(payload, str):
        return payload.strip().lower() in APPROVE_WORDS
    if isinstance(payload, dict):
        if "approved" in payload:
            return payload["approved"] is True
        decision = payload.get("decision")
        return isinstance(decision, str) and decision.strip().lower() in APPROVE_WORDS
    return False


class Approval(StepType):
    name = "approval"
    label = "Approval"
    group = "Waiting"
    icon = "check-circle"
    description = "Ask a person: wait for an approve or reject signal, optionally with a deadline after which it counts as rejected."
    config_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "Approval",
        "additionalProperties": False,
        "properties": {
            "signal": template_property(
                "Signal name",
                "Name of the signal that decides this step. Empty: the step id.",
                default="",
                pattern=r"^([A-Za-z0-9_.:-]*|.*\{\{.*)$",
            ),
            "timeout_seconds": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "maximum": MAX_TIMER_SECONDS,
                "title": "Timeout (seconds)",
                "description": "Reject automatically after this long without a decision. Empty: wait for ever.",
                "default": None,
            },
            "instructions": template_property(
                "Instructions",
                "What the approver should check, shown with the pending approval, e.g. Refund {{ trigger.amount }} EUR?",
                default="",
            ),
        },
    }
    ports = ("approve", "reject")

    @fails_cleanly
    def start(self, config: dict, context: dict) -> AwaitSignal:
        rendered = self.render_config(config, context)
        timeout = rendered.get("timeout_seconds")
        instructions = rendered.get("instructions")
        return AwaitSignal(
            # Empty name: the engine uses the step id (it knows it; the config does not).
            name=as_text(rendered.get("signal") or ""),
            timeout_seconds=None if timeout is None else as_number(timeout, "timeout_seconds"),
            details={"instructions": as_text(instructions)} if instructions else {},
        )

    def on_signal(self, config: dict, context: dict, payload: Any) -> Complete:
        return Complete(output=payload, port="approve" if is_approval(payload) else "reject")

    def on_timeout(self, config: dict, context: dict) -> Complete:
        return Complete(output={"timed_out": True}, port="reject")


STEP_TYPE = Approval()
