"""Operator actions on runs and dead letters, shared by the monitor pages and the admin.

Every action checks permission, sends its command through Kafka (runners are the only ones who
change a run), and writes an audit entry. Errors an operator can fix come back as
OperationError with a readable message, never as a 500.
"""

from __future__ import annotations

import base64
import time

from django.db import transaction
from django.utils import timezone

from confluent_kafka import KafkaException, Producer

from orchestrator.messages import CancelRun, RetryRun, SignalRun
from orchestrator.runtime import commands
from orchestrator.runtime.kafka import producer_config

from . import audit
from .models import DeadLetter, Run, RunStatus
from .permissions import can_operate

FINISHED = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
RETRYABLE = {RunStatus.FAILED, RunStatus.CANCELLED}


class OperationError(Exception):
    """The action is not allowed or not possible now; the message says why."""


class OperationForbidden(OperationError):
    pass


def _require_operator(user, run: Run) -> None:
    if not can_operate(user, run.workflow):
        raise OperationForbidden(f"you may not operate runs of workflow '{run.workflow}' (needs monitor.operate_run)")


def _send(command) -> None:
    try:
        commands.send_command(command)
    except commands.CommandError as exc:
        raise OperationError(f"Kafka did not accept the command: {exc}") from exc


def cancel(user, run: Run, reason: str = "") -> None:
    _require_operator(user, run)
    if run.status in FINISHED:
        raise OperationError(f"run {run.id} already {run.status}: nothing to cancel")
    _send(CancelRun(run_id=run.id, reason=reason, by=user.get_username(), ts=time.time()))
    audit.record(user, "cancel", ("run", run.id), {"workflow": run.workflow, "reason": reason})


def retry(user, run: Run) -> None:
    """Re-run a failed or cancelled run from its failed steps, keeping what succeeded."""
    _require_operator(user, run)
    if run.status not in RETRYABLE:
        raise OperationError(f"run {run.id} is {run.status}: only failed or cancelled runs can be retried")
    _send(RetryRun(run_id=run.id, by=user.get_username(), ts=time.time()))
    audit.record(user, "retry", ("run", run.id), {"workflow": run.workflow})


def retry_with_input(user, run: Run, new_input) -> str:
    """A new run of the same workflow version with edited input; its trigger names the original."""
    _require_operator(user, run)
    trigger = {"type": "replay", "of": run.id}
    try:
        new_id = commands.start_run(run.workflow, run.version, new_input, started_by=user.get_username(),
                                    trigger=trigger)
    except commands.CommandError as exc:
        raise OperationError(f"Kafka did not accept the start command: {exc}") from exc
    # The row exists at once so the new run's page opens; the projector fills it in.
    Run.objects.get_or_create(id=new_id, defaults=dict(
        workflow=run.workflow, version=run.version, input=new_input, trigger=trigger,
        started_by=user.get_username(), created_at=timezone.now()))
    audit.record(user, "retry_with_input", ("run", run.id), {"new_run": new_id, "input": new_input})
    return new_id


def signal(user, run: Run, name: str, payload=None) -> None:
    """Send a named signal (an approval step waits for one: payload {"decision": "approve"|"reject"})."""
    _require_operator(user, run)
    if not name:
        raise OperationError("name: a signal needs a name (an approval step's signal, by default its step id)")
    if run.status in FINISHED:
        raise OperationError(f"run {run.id} already {run.status}: it waits for no signal")
    _send(SignalRun(run_id=run.id, name=name, payload=payload, by=user.get_username(), ts=time.time()))
    action = "signal"
    if isinstance(payload, dict) and payload.get("decision") in ("approve", "reject"):
        action = "approve" if payload["decision"] == "approve" else "reject"
    audit.record(user, action, ("run", run.id), {"signal": name, "payload": payload})


# ---- dead letters ---------------------------------------------------------------------------
def _require_dlq_operator(user) -> None:
    if not user.has_perm("monitor.operate_run"):
        raise OperationForbidden("replaying or discarding dead letters needs monitor.operate_run")


def _raw(text: str) -> bytes:
    if text.startswith("base64:"):
        return base64.b64decode(text[len("base64:"):])
    return text.encode("utf-8")


def _produce_raw(topic: str, key: str | None, value: bytes, headers: list) -> None:
    """Produce an original record's bytes untouched (commands.* only send typed Sluice messages).

    Operator replays are rare, so a short-lived producer is fine and never goes stale when
    settings point at another broker."""
    producer = Producer(producer_config(**{"linger.ms": 0}))
    errors: list = []
    try:
        producer.produce(topic, key=_raw(key) if key else None, value=value, headers=headers,
                         on_delivery=lambda err, _msg: err and errors.append(err))
    except (KafkaException, BufferError) as exc:
        raise OperationError(f"could not send to {topic}: {exc}") from exc
    if producer.flush(10) or errors:
        raise OperationError(f"Kafka did not acknowledge the replay to {topic}: {errors[0] if errors else 'timeout'}")


def replay_dead_letter(user, letter: DeadLetter, edited_value: str | None = None, to_topic: str | None = None) -> None:
    """Produce the record (optionally edited) back into `wf.runs` (or `to_topic`), then mark it replayed."""
    _require_dlq_operator(user)
    if letter.status != DeadLetter.Status.NEW:
        raise OperationError(f"dead letter {letter.pk} was already {letter.status}")
    value = _raw(edited_value if edited_value is not None else letter.value)
    topic = to_topic or commands.topics().runs
    headers = [(name, item.encode()) for name, item in letter.headers.items() if not name.startswith("sluice-")
               or name in ("sluice-schema", "sluice-kind")]
    _produce_raw(topic, letter.key or None, value, headers)
    with transaction.atomic():
        letter.status = DeadLetter.Status.REPLAYED
        letter.resolved_by = user.get_username()
        letter.resolved_at = timezone.now()
        letter.save(update_fields=["status", "resolved_by", "resolved_at"])
        audit.record(user, "replay", ("dead_letter", letter.pk),
                     {"topic": topic, "edited": edited_value is not None, "key": letter.key,
                      "error": letter.error[:500]})


def discard_dead_letter(user, letter: DeadLetter) -> None:
    _require_dlq_operator(user)
    if letter.status != DeadLetter.Status.NEW:
        raise OperationError(f"dead letter {letter.pk} was already {letter.status}")
    letter.status = DeadLetter.Status.DISCARDED
    letter.resolved_by = user.get_username()
    letter.resolved_at = timezone.now()
    letter.save(update_fields=["status", "resolved_by", "resolved_at"])
    audit.record(user, "discard", ("dead_letter", letter.pk), {"key": letter.key, "error": letter.error[:500]})
