"""What the engine asks the runtime to do: plain data, carried out inside one Kafka transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..messages import ChildFinished, HistoryEvent, StartRun, StepTask, WaitSubscription


@dataclass(frozen=True)
class Tick:
    """Not a Kafka record: the engine loop feeds it to a run whose earliest timer is due."""

    run_id: str


@dataclass(frozen=True)
class Rejected:
    """Not a Kafka record: the engine loop feeds it to a run when what the run's records made of
    it cannot be stored (its state grew over the size limit). The run fails with `reason`,
    decided from the state before those records, which did fit."""

    run_id: str
    reason: str
    # For a run that these records were starting: its start (the run is created, then failed).
    start: StartRun | None = None


@dataclass(frozen=True)
class Dispatch:
    """Send a step attempt to the workers of `queue` (topic wf.tasks.<queue>)."""

    queue: str
    task: StepTask


@dataclass(frozen=True)
class Produce:
    """A record for a user topic (the kafka_produce step): exactly once, in the transaction."""

    topic: str
    value: Any
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OpenWait:
    subscription: WaitSubscription


@dataclass(frozen=True)
class CloseWait:
    run_id: str
    step_id: str


@dataclass(frozen=True)
class StartChild:
    """Start a run of another workflow: a sub-workflow, a foreach item, an on_failure handler.

    `version` None means the live version, which the runtime resolves when it writes the start.
    When the workflow has no such version, the runtime answers a parent with a failed
    ChildFinished instead (so the parent's step fails, and its retry policy applies).
    """

    run_id: str
    workflow: str
    version: int | None
    input: Any
    trigger: dict
    started_by: str
    # The waiting parent: (run id, step id, attempt, item index), or None (on_failure).
    parent: tuple[str, str, int, int] | None = None


@dataclass(frozen=True)
class CancelChild:
    run_id: str
    reason: str


@dataclass(frozen=True)
class NotifyParent:
    """This run was a child: tell its parent how it ended (a ChildFinished on wf.runs)."""

    finished: ChildFinished


@dataclass(frozen=True)
class Record:
    """Append a history event (wf.history)."""

    event: HistoryEvent


Effect = Dispatch | Produce | OpenWait | CloseWait | StartChild | CancelChild | NotifyParent | Record
