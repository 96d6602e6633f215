"""Where a dead letter came from and where a replay sends it.

A record lands in `wf.dlq` from one of the runner's loops (the `sluice-stage` header):
- `trigger`: a record on a workflow's own topic that its trigger could not handle (the filter
  failed on it). Replaying it goes back through that workflow's trigger: the live version's
  filter is evaluated again on the (possibly edited) value and, if it passes, a run starts
  whose trigger names the original record and the replay.
- `engine`: a record of `wf.runs` (a command or a step result). It goes back to `wf.runs`,
  after the same decoding the engine applies, so a value the engine would refuse is refused
  here, with the reason, instead of being dead-lettered again.
- `worker`: a step dispatch from `wf.tasks.<queue>`. It goes back to that topic, unedited: a
  dispatch carries rendered config, and an edited one could make a worker call out with
  anything.
- `projector`: a record of Sluice's own topics (history, dead letters, heartbeats) that the
  monitor's database refused (monitor.projector sets it aside so the rest keeps projecting).
  It has no loop to go back to; it is there to be seen and discarded.

Every dead letter is attributed to a workflow when one can be told (`attribute`): its rights
decide who sees and handles the letter (monitor.permissions).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from orchestrator import messages, spec
from orchestrator.runtime import codec, commands

from .models import DeadLetter, Run

TRIGGER, RUNS, TASKS = "trigger", "runs", "tasks"
# The trigger loop's reason names the workflow whose filter failed ("filter of <slug> failed: ...").
_FILTER_REASON = re.compile(r"filter of ([a-z0-9][a-z0-9-]*) failed")
# A header naming the workflow, when the loop that dead-lettered the record wrote one.
WORKFLOW_HEADER = getattr(messages, "DLQ_WORKFLOW", "sluice-workflow")


def raw_bytes(text: str) -> bytes:
    """A stored key or value back as bytes ("base64:..." for what was not UTF-8 text)."""
    if text.startswith("base64:"):
        return base64.b64decode(text[len("base64:"):])
    return text.encode("utf-8")


def origin(letter: DeadLetter) -> str | None:
    """TRIGGER, RUNS or TASKS: where a replay of the letter goes; None when it cannot be told."""
    topics = commands.topics()
    source = letter.source_topic or ""
    if source == topics.runs:
        return RUNS
    if source.startswith(topics.tasks("")):
        return TASKS
    if letter.stage == "trigger" and source and not spec.reserved_topic(source, topics.prefix):
        return TRIGGER
    return None


def attribute(letter: DeadLetter) -> str:
    """The slug of the workflow the record belongs to, or "" when it cannot be told."""
    named = (letter.headers or {}).get(WORKFLOW_HEADER)
    if named:
        return named[:100]
    kind = origin(letter)
    if kind == TRIGGER:
        return _trigger_workflow(letter)
    value = raw_bytes(letter.value or "")
    try:
        if kind == RUNS:
            command = codec.decode_run_command(value)
            if isinstance(command, messages.StartRun):
                return command.workflow
            return _workflow_of_run(command.run_id)
        if kind == TASKS:
            return codec.decode_task(value).workflow
    except (codec.DecodeError, ValueError, TypeError):
        pass
    # Undecodable: Sluice's records are keyed by run id.
    return _workflow_of_run(letter.key) if letter.key else ""


def _workflow_of_run(run_id: str) -> str:
    return Run.objects.filter(id=run_id).values_list("workflow", flat=True).first() or ""


def _trigger_workflow(letter: DeadLetter) -> str:
    match = _FILTER_REASON.search(letter.error or "")
    if match:
        return match.group(1)
    # Otherwise the one live workflow triggered by the topic, if there is exactly one.
    from . import workflows

    slugs = [workflow.slug for workflow in workflows.live_workflows()
             if ((workflow.live_version.definition or {}).get("trigger") or {}).get("topic") == letter.source_topic]
    return slugs[0] if len(slugs) == 1 else ""


def original_headers(letter: DeadLetter) -> dict[str, str]:
    """The record's own headers, without those the dead-letter loop added."""
    added = {messages.DLQ_ERROR, messages.DLQ_STAGE, messages.DLQ_SOURCE_TOPIC, messages.DLQ_SOURCE_PARTITION,
             messages.DLQ_SOURCE_OFFSET, messages.DLQ_FAILED_AT, WORKFLOW_HEADER}
    return {name: value for name, value in (letter.headers or {}).items() if name not in added}


@dataclass
class Outcome:
    """What a replay did, as stored on the letter (`DeadLetter.replay`) and shown on its page."""

    to: str
    started: bool = False
    run_id: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    edited: bool = False
    detail: str = ""

    def as_dict(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if value is not None}


def later_failure(letter: DeadLetter) -> DeadLetter | None:
    """The dead letter the replayed record itself became, if the runner refused it again."""
    replay = letter.replay or {}
    if replay.get("offset") is None or not replay.get("topic"):
        return None
    return DeadLetter.objects.filter(source_topic=replay["topic"], source_partition=replay.get("partition"),
                                     source_offset=replay["offset"]).first()
