"""The one service that starts runs, for every door: the REST API, a start by hand or a test run
in the designer, a webhook call, a schedule tick, a retry with new input, a dead letter replayed
through its trigger.

`start_run` checks the input (a runner must be able to carry it; input a caller chose must match
the workflow's `input_schema`), sends the StartRun command to Kafka, writes the pending Run row
(so GET /api/runs/<id>/ answers at once; the history projector fills in the rest and never
loses to this row) and an audit entry, for people and for system actors ("webhook",
"schedule") alike. Which version to start, and whether the caller may, is the caller's
question (designer.services for workflows, monitor.operations for runs and dead letters).

Errors: `InvalidInput` (every problem at its path), `InputTooLarge`, `StartFailed` (Kafka did
not acknowledge: nothing was recorded). All are `webbase.errors.ServiceError`.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone

from orchestrator import spec
from orchestrator.runtime import commands
from orchestrator.spec import Problem
from webbase.errors import ServiceError

from . import audit
from .models import Run, RunStatus


class StartFailed(ServiceError):
    """Kafka did not acknowledge the start command; no run was recorded."""

    status_code = 503
    code = "kafka_unavailable"


class InvalidInput(ServiceError):
    """Run input that cannot be stored or sent (too deep, not valid text, not finite numbers),
    or that does not match the workflow's `input_schema`."""

    status_code = 400
    code = "invalid_input"

    def __init__(self, problems: list[tuple[str, str, str]], field: str = "input"):
        self.problems = [Problem(path=path, message=message, code=code) for path, message, code in problems]
        first = self.problems[0]
        super().__init__(f"{first.path or field}: {first.message}")


class InputTooLarge(ServiceError):
    """Run input larger than settings.SLUICE_MAX_INPUT_BYTES once encoded as JSON."""

    status_code = 413
    code = "too_large"

    def __init__(self, size: int, limit: int, field: str = "input"):
        self.size, self.limit, self.field = size, limit, field
        super().__init__(f"{field}: {size} bytes of JSON is more than the limit of {limit} bytes "
                         f"(SLUICE_MAX_INPUT_BYTES)")

    def body(self) -> dict:
        return {"limit": self.limit}


def check_run_input(value: Any, field: str = "input") -> None:
    """Refuse run input a runner could not carry: InvalidInput naming the path, or InputTooLarge.

    The limit (settings.SLUICE_MAX_INPUT_BYTES) sits well below the broker's record limit, so
    the start command, the run's first history event and its state all fit.
    """
    problems = spec.json_problems(value, field)
    if problems:
        raise InvalidInput(problems, field)
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > settings.SLUICE_MAX_INPUT_BYTES:
        raise InputTooLarge(size, settings.SLUICE_MAX_INPUT_BYTES, field)


# Run starts whose input is a caller's choice, and so is checked against the workflow's
# `input_schema`; a Kafka record, a schedule's configured input or a parent's step input is not
# (a dead letter replayed through its trigger starts what the record would have started).
SCHEMA_CHECKED_TRIGGERS = frozenset({"manual", "test", "webhook", "replay"})


def check_input_schema(definition: dict | None, value: Any, field: str = "input") -> None:
    """Refuse input that does not match the definition's `input_schema`: InvalidInput with every
    mismatch at its path (`input.customer.id`), as jsonschema reports it."""
    schema = (definition or {}).get("input_schema") if isinstance(definition, dict) else None
    if not isinstance(schema, dict):
        return
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        errors = sorted(Draft202012Validator(schema).iter_errors(value),
                        key=lambda e: [str(part) for part in e.absolute_path])
    except SchemaError:  # validation refuses such schemas; one stored before a rule tightened checks nothing
        return
    problems = []
    for error in errors:
        path = field
        for part in error.absolute_path:
            path = spec.join_path(path, part)
        message = error.message
        if error.validator == "required" and isinstance(error.instance, dict):
            # Name the missing field itself, so a form can mark it.
            missing = [name for name in error.validator_value if name not in error.instance]
            for name in missing:
                problems.append((spec.join_path(path, name), "required by the workflow's input_schema", "required"))
            continue
        problems.append((path, f"{message[:300]} (input_schema)", error.validator))
    if problems:
        raise InvalidInput(problems[:50], field)


def check_input(value: Any, definition: dict | None, trigger_type: str, field: str = "input") -> None:
    """Everything start_run checks of input before it sends anything (callers that must answer
    before other checks, like a webhook before its filter, call it first)."""
    check_run_input(value, field)
    if trigger_type in SCHEMA_CHECKED_TRIGGERS:
        check_input_schema(definition, value, field)


def started_by(actor) -> str:
    """The name a run records as its starter: a user's, or a system actor's ("webhook", "schedule")."""
    if isinstance(actor, str):
        return actor
    return actor.get_username() if actor is not None and getattr(actor, "is_authenticated", False) else ""


def start_run(workflow: str, version: int, input: Any, *, actor, trigger: dict | None = None,
              definition: dict | None = None, run_id: str | None = None, field: str = "input",
              action: str = "start", about: tuple[str, str] | None = None, what: str | None = None) -> str:
    """Start a run of `workflow` (slug) at `version` (a number runners know); returns the run id.

    - `actor`: the user who starts it, or a system actor's name ("webhook", "schedule");
    - `trigger`: how the run started (default: by hand); its type decides whether `input` is
      checked against `definition`'s `input_schema` (SCHEMA_CHECKED_TRIGGERS);
    - `run_id`: makes the start idempotent (a webhook's Idempotency-Key, a schedule tick, a dead
      letter replayed with the id its record would have had);
    - `action`, `about`: the audit entry ("start" on the new run by default; a retry with input
      is logged on the run it retries, naming the new one);
    - `what`: how a failure names the start ("a test run of 'slug' version 3").
    """
    trigger = trigger or {"type": "manual"}
    input = {} if input is None else input
    check_input(input, definition, trigger.get("type"), field)
    by = started_by(actor)
    try:
        run_id = commands.start_run(workflow, version, input, started_by=by, trigger=trigger, run_id=run_id)
    except commands.CommandError as exc:
        what = what or f"'{workflow}'"
        raise StartFailed(f"Could not start {what}: Kafka did not acknowledge ({exc})") from exc
    _create_pending_row(run_id, workflow, version, input, trigger, by)
    details = {"workflow": workflow, "version": version}
    if about is not None:
        details.update({"new_run": run_id, "input": input})
    if isinstance(actor, str):
        details["trigger"] = trigger.get("type")
    audit.record(actor, action, about or ("run", run_id), details)
    return run_id


def _create_pending_row(run_id: str, workflow: str, version: int, input: Any, trigger: dict, by: str) -> None:
    """The pending Run row, unless the projector wrote one first (its row is newer: keep it)."""
    try:
        Run.objects.get_or_create(id=run_id, defaults={
            "workflow": workflow, "version": version, "status": RunStatus.PENDING, "input": input,
            "trigger": trigger, "started_by": by, "created_at": timezone.now(),
        })
    except IntegrityError:  # both inserted at once; the projector's row stays
        pass
