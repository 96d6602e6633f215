"""Operator actions on runs and dead letters, shared by the monitor pages, the REST API and the admin.

Every action checks permission (monitor.permissions), sends its command through Kafka (runners
are the only ones who change a run), and writes an audit entry. Errors an operator can fix
come back as OperationError with a readable message, never as a 500.
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaException, Producer
from django.db import transaction
from django.utils import timezone

from orchestrator import expressions, messages, spec
from orchestrator.messages import CancelRun, RetryRun, SignalRun
from orchestrator.runtime import codec, commands
from orchestrator.runtime.kafka import producer_config

from . import audit, dead_letters, runs, workflows
from .models import DeadLetter, Run, RunStatus
from .permissions import can_act_on_dead_letter, can_operate_workflow

FINISHED = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
RETRYABLE = {RunStatus.FAILED, RunStatus.CANCELLED}


class OperationError(Exception):
    """The action is not allowed or not possible now; the message says why."""


class OperationForbidden(OperationError):
    pass


class BadInput(OperationError):
    """A value the operator sent that cannot be used; `path` names it (`problems`: every
    (path, message) when there are several, e.g. input that does not match the input_schema)."""

    def __init__(self, path: str, message: str, problems: list[tuple[str, str]] | None = None):
        self.path = path
        self.problems = problems or [(path, message)]
        super().__init__(f"{path}: {message}")


class ReplayFailed(OperationError):
    """The record still cannot be processed (its filter fails, the engine could not decode it)."""


def _require_operator(user, run: Run) -> None:
    if not can_operate_workflow(user, run.workflow):
        raise OperationForbidden(f"you may not operate runs of workflow '{run.workflow}' (needs monitor.operate_run)")


def _require_storable(value, field: str) -> None:
    """What an operator sends travels to Kafka and back into the database: refuse what neither
    can hold (lone surrogates, NUL characters, nesting too deep), naming the field."""
    problems = spec.json_problems(value, field)
    if problems:
        path, message, _code = problems[0]
        raise BadInput(path, message)


def _send(command) -> None:
    try:
        commands.send_command(command)
    except commands.CommandError as exc:
        raise OperationError(f"Kafka did not accept the command: {exc}") from exc


def cancel(user, run: Run, reason: str = "") -> None:
    _require_operator(user, run)
    _require_storable(reason, "reason")
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
    """A new run of the same workflow version with edited input; its trigger names the original.

    Audited on the run it retries ("retry_with_input", naming the new run)."""
    _require_operator(user, run)
    try:
        return runs.start_run(run.workflow, run.version, new_input, actor=user,
                              trigger={"type": "replay", "of": run.id},
                              definition=workflows.definition_of(run.workflow, run.version),
                              action="retry_with_input", about=("run", run.id))
    except runs.InvalidInput as exc:
        raise BadInput(exc.problems[0].path, exc.problems[0].message,
                       [(problem.path, problem.message) for problem in exc.problems]) from exc
    except runs.StartFailed as exc:
        raise OperationError(f"Kafka did not accept the start command: {exc.__cause__}") from exc
    except runs.ServiceError as exc:
        raise OperationError(str(exc)) from exc


def signal(user, run: Run, name: str, payload=None) -> None:
    """Send a named signal (an approval step waits for one: payload {"decision": "approve"|"reject"})."""
    _require_operator(user, run)
    if not name:
        raise OperationError("name: a signal needs a name (an approval step's signal, by default its step id)")
    _require_storable(name, "name")
    _require_storable(payload, "payload")
    if run.status in FINISHED:
        raise OperationError(f"run {run.id} already {run.status}: it waits for no signal")
    _send(SignalRun(run_id=run.id, name=name, payload=payload, by=user.get_username(), ts=time.time()))
    action = "signal"
    if isinstance(payload, dict) and payload.get("decision") in ("approve", "reject"):
        action = "approve" if payload["decision"] == "approve" else "reject"
    audit.record(user, action, ("run", run.id), {"signal": name, "payload": payload})


# ---- dead letters ---------------------------------------------------------------------------
def _require_dead_letter_operator(user, letter: DeadLetter) -> None:
    if not can_act_on_dead_letter(user, letter):
        workflow = f"workflow '{letter.workflow}'" if letter.workflow else "every workflow (no workflow could be told)"
        raise OperationForbidden(f"handling dead letter {letter.pk} needs the dead-letter permission and the right "
                                 f"to operate runs of {workflow}")


def _require_new(letter: DeadLetter) -> None:
    if letter.status != DeadLetter.Status.NEW:
        raise OperationError(f"dead letter {letter.pk} was already {letter.status}")


def _produce_raw(topic: str, key: bytes | None, value: bytes, headers: list) -> tuple[int, int]:
    """Produce a record's bytes as they are (commands.* only send typed Sluice messages).

    Returns its (partition, offset), so a later dead letter of the same record can be linked
    to the replay. Operator replays are rare: a short-lived producer never goes stale when
    settings point at another broker."""
    producer = Producer(producer_config(**{"linger.ms": 0}))
    delivered: list = []
    try:
        producer.produce(topic, key=key, value=value, headers=headers,
                         on_delivery=lambda err, msg: delivered.append((err, msg)))
    except (KafkaException, BufferError) as exc:
        raise OperationError(f"could not send to {topic}: {exc}") from exc
    producer.flush(10)
    if not delivered or delivered[0][0] is not None:
        reason = delivered[0][0] if delivered else "no acknowledgement within 10 s"
        raise OperationError(f"Kafka did not acknowledge the replay to {topic}: {reason}")
    return delivered[0][1].partition(), delivered[0][1].offset()


def _replayed_value(letter: DeadLetter, edited_value: str | None) -> bytes:
    return dead_letters.raw_bytes(letter.value if edited_value is None else edited_value)


def _replay_through_trigger(user, letter: DeadLetter, value: bytes, edited: bool) -> dead_letters.Outcome:
    """Evaluate the workflow's live trigger filter again and start the run the record should have started."""
    from orchestrator.runtime.triggers import decode_value, trigger_run_id

    workflow = workflows.with_live_version(letter.workflow)
    # An archived workflow has no live version either.
    if workflow is None or workflow.live_version is None:
        raise ReplayFailed(f"workflow '{letter.workflow}' has no live version: publish it, then replay")
    trigger_config = (workflow.live_version.definition or {}).get("trigger") or {}
    if trigger_config.get("type") != "kafka" or trigger_config.get("topic") != letter.source_topic:
        raise ReplayFailed(f"the live version of '{workflow.slug}' is no longer triggered by topic "
                           f"'{letter.source_topic}'")
    payload = decode_value(value)
    record = {"topic": letter.source_topic, "partition": letter.source_partition, "offset": letter.source_offset,
              "key": letter.key or None, "headers": dead_letters.original_headers(letter), "timestamp": None}
    condition = trigger_config.get("filter")
    if condition:
        try:
            wanted = expressions.truthy(condition, {"trigger": payload, "record": record})
        except (expressions.ExpressionError, RecursionError) as exc:
            raise ReplayFailed(f"the filter of '{workflow.slug}' failed again: {exc}") from exc
        if not wanted:
            return dead_letters.Outcome(to=dead_letters.TRIGGER, edited=edited,
                                        detail=f"the filter of '{workflow.slug}' did not match: no run started")
    trigger = {"type": "kafka", **record, "replay": {
        "dead_letter": letter.pk, "by": user.get_username(), "edited": edited, "at": timezone.now().isoformat(),
        "error": letter.error[:500]}}
    run_id = trigger_run_id(workflow.slug, letter.source_topic, letter.source_partition, letter.source_offset)
    try:
        runs.start_run(workflow.slug, workflow.live_version.number, payload, actor=user, trigger=trigger,
                       definition=workflow.live_version.definition, run_id=run_id)
    except runs.ServiceError as exc:
        raise ReplayFailed(str(exc)) from exc
    return dead_letters.Outcome(to=dead_letters.TRIGGER, started=True, run_id=run_id, edited=edited,
                                detail=f"run {run_id} of '{workflow.slug}' started")


def _replay_to_runs(user, letter: DeadLetter, value: bytes, edited: bool) -> dead_letters.Outcome:
    """Back to `wf.runs`, decoded first exactly as the engine will decode it."""
    try:
        command = codec.decode_run_command(value)
    except (codec.DecodeError, ValueError, TypeError) as exc:
        raise ReplayFailed(f"the engine would refuse this record: {exc}") from exc
    # An edit must not reach into another workflow's runs (a forged signal or result).
    target = command.workflow if isinstance(command, messages.StartRun) else (
        Run.objects.filter(id=command.run_id).values_list("workflow", flat=True).first() or letter.workflow)
    if not target or not can_operate_workflow(user, target):
        raise OperationForbidden(f"the record is for run {command.run_id} of workflow '{target or '?'}', "
                                 "which you may not operate")
    if isinstance(command, messages.StartRun):
        try:
            runs.check_run_input(command.input)
        except runs.ServiceError as exc:
            raise ReplayFailed(str(exc)) from exc
    topic = commands.topics().runs
    partition, offset = _produce_raw(topic, command.run_id.encode(), value, codec.headers_for(command))
    started = isinstance(command, messages.StartRun)
    return dead_letters.Outcome(
        to=dead_letters.RUNS, started=started, run_id=command.run_id, topic=topic, partition=partition,
        offset=offset, edited=edited,
        detail=f"{type(command).__name__} for run {command.run_id} sent to {topic}")


def _replay_to_tasks(user, letter: DeadLetter, value: bytes, edited: bool) -> dead_letters.Outcome:
    if edited:
        raise ReplayFailed("a step dispatch is replayed as it was; to change what a step does, edit the workflow "
                           "and retry the run")
    try:
        task = codec.decode_task(value)
    except (codec.DecodeError, ValueError, TypeError) as exc:
        raise ReplayFailed(f"a worker would refuse this record: {exc}") from exc
    topic = letter.source_topic
    partition, offset = _produce_raw(topic, task.run_id.encode(), value, codec.headers_for(task))
    return dead_letters.Outcome(to=dead_letters.TASKS, run_id=task.run_id, topic=topic, partition=partition,
                                offset=offset, detail=f"step {task.step_id} of run {task.run_id} sent to {topic}")


_REPLAYERS = {dead_letters.TRIGGER: _replay_through_trigger, dead_letters.RUNS: _replay_to_runs,
              dead_letters.TASKS: _replay_to_tasks}


def replay_dead_letter(user, letter: DeadLetter, edited_value: str | None = None) -> dead_letters.Outcome:
    """Send the record (optionally edited) back to where it came from; mark the letter replayed.

    Raises ReplayFailed (the letter stays new, the reason says why) when the record still cannot
    be processed, OperationForbidden without the rights, OperationError for the rest.
    """
    _require_dead_letter_operator(user, letter)
    _require_new(letter)
    kind = dead_letters.origin(letter)
    if kind is None:
        raise ReplayFailed(f"Sluice cannot tell where dead letter {letter.pk} came from "
                           f"(stage {letter.stage or '?'}, topic {letter.source_topic or '?'}): discard it")
    if kind == dead_letters.TRIGGER and not letter.workflow:
        raise ReplayFailed(f"no workflow could be told for dead letter {letter.pk}: several workflows read "
                           f"'{letter.source_topic}'")
    edited = edited_value is not None
    outcome = _REPLAYERS[kind](user, letter, _replayed_value(letter, edited_value), edited)
    with transaction.atomic():
        updated = DeadLetter.objects.filter(pk=letter.pk, status=DeadLetter.Status.NEW).update(
            status=DeadLetter.Status.REPLAYED, resolved_by=user.get_username(), resolved_at=timezone.now(),
            replay=outcome.as_dict())
        audit.record(user, "replay", ("dead_letter", letter.pk),
                     {**outcome.as_dict(), "workflow": letter.workflow, "key": letter.key,
                      "error": letter.error[:500], "concurrent": not updated})
    letter.refresh_from_db()
    return outcome


def discard_dead_letter(user, letter: DeadLetter) -> None:
    _require_dead_letter_operator(user, letter)
    _require_new(letter)
    with transaction.atomic():
        updated = DeadLetter.objects.filter(pk=letter.pk, status=DeadLetter.Status.NEW).update(
            status=DeadLetter.Status.DISCARDED, resolved_by=user.get_username(), resolved_at=timezone.now())
        if not updated:
            raise OperationError(f"dead letter {letter.pk} was resolved by someone else just now")
        audit.record(user, "discard", ("dead_letter", letter.pk),
                     {"workflow": letter.workflow, "key": letter.key, "error": letter.error[:500]})
    letter.refresh_from_db()
