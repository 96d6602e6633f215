"""Replaying a run: feed its recorded inputs to decide() again and compare with its history.

Temporal's replayer is the model. Every history event names the input of the decision that
wrote it (`cause`: a wf.runs record, a timer, or a rejection), and every decision's events
carry the time it was taken, so the same inputs at the same times must give the same events
and, at the end, the same state as the last snapshot. Records that wrote no history (a
duplicate result, a pick-up notice) are fed in their place between the others. A divergence
means the engine is not deterministic, or a record was lost or applied twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import msgspec

from ..messages import HistoryEvent, StartRun
from .decide import decide
from .effects import Rejected, Tick
from .policy import DEFAULT_POLICY, Policy
from .state import RUN_SUCCEEDED, RunState


@dataclass
class RecordedInput:
    """A wf.runs record of the run: its cause name, the decoded command, its timestamp."""

    cause: str
    command: Any
    timestamp: float


@dataclass
class Divergence:
    run_id: str
    reason: str
    seq: int | None = None
    recorded: Any = None
    replayed: Any = None


@dataclass
class _Decision:
    cause: str
    ts: float
    events: list[HistoryEvent] = field(default_factory=list)


def _offset(cause: str) -> int:
    return int(cause.rsplit("/", 1)[1])


def _decisions(history: list[HistoryEvent]) -> list[_Decision]:
    decisions: list[_Decision] = []
    for event in history:
        if decisions and decisions[-1].cause == event.cause and decisions[-1].ts == event.ts:
            decisions[-1].events.append(event)
        else:
            decisions.append(_Decision(event.cause, event.ts, [event]))
    return decisions


def replay_run(run_id: str, history: list[HistoryEvent], inputs: list[RecordedInput],
               workflow_of: Callable[[str, int], Any], last_snapshot: RunState | None | bool = False,
               policy: Policy = DEFAULT_POLICY) -> list[Divergence]:
    """Divergences between the recorded history of one run and its replay (empty: none).

    `history` is the run's events in seq order, `inputs` its wf.runs records in offset order
    (without records the engine dead-lettered), `last_snapshot` its latest wf.state value
    (None for a tombstone, False when unknown).
    """
    history = sorted(history, key=lambda e: e.seq)
    if not history or history[0].kind != "run_started" or history[0].seq != 1:
        return [Divergence(run_id, "the history does not start with run_started (seq 1)")]
    if any(not event.cause for event in history):
        return [Divergence(run_id, "the history has events without a cause (written before replay existed)")]
    by_cause = {item.cause: item for item in inputs}
    caused = {event.cause for event in history}
    # Records that wrote no history: fed in their place, they must change nothing. (A record
    # that did write history is fed only at its own decision: within a batch the engine fires
    # due timers before it reads records, so time order alone would misplace it.)
    pending = [item for item in inputs if item.cause not in caused]
    state: RunState | None = None
    problems: list[Divergence] = []

    def workflow_for(command) -> Any:
        if state is not None:
            return workflow_of(state.workflow, state.version)
        start = command if isinstance(command, StartRun) else getattr(command, "start", None)
        return None if start is None else workflow_of(start.workflow, start.version)

    def feed_silent(until) -> None:
        """Feed the records before a decision that wrote no history: they must change nothing now."""
        nonlocal state
        while pending and until(pending[0]):
            item = pending.pop(0)
            if state is None and not isinstance(item.command, StartRun):
                continue
            decision = decide(workflow_for(item.command), state, item.command, item.timestamp, policy)
            if decision.history:
                problems.append(Divergence(run_id, f"{item.cause} wrote no history, but its replay writes "
                                                   f"{[e.kind for e in decision.history]}"))
            elif state is not None and decision.state is not None and decision.state != state:
                problems.append(Divergence(run_id, f"{item.cause} wrote no history, but its replay changes the state"))
            state = decision.state

    for recorded in _decisions(history):
        cause = recorded.cause
        if cause.startswith("runs/"):
            feed_silent(lambda item: item.cause != cause and _offset(item.cause) < _offset(cause))
            item = by_cause.get(cause)
            if item is None:
                problems.append(Divergence(run_id, f"the record {cause} that caused seq {recorded.events[0].seq} "
                                                   "is not on wf.runs", seq=recorded.events[0].seq))
                return problems
            event: Any = item.command
        elif cause == "timer":
            feed_silent(lambda item: item.timestamp <= recorded.ts)
            event = Tick(run_id)
        elif cause.startswith("rejected:"):
            dropped = {c for c in cause.removeprefix("rejected:").split(",") if c}
            first = min((_offset(c) for c in dropped), default=None)
            feed_silent(lambda item: first is not None and item.cause not in dropped and _offset(item.cause) < first)
            start = next((p.command for p in inputs if p.cause in dropped and isinstance(p.command, StartRun)), None)
            pending = [p for p in pending if p.cause not in dropped]
            failed = next((e for e in recorded.events if e.kind == "run_failed"), None)
            event = Rejected(run_id, failed.data.get("error", "") if failed else "",
                             start=start if state is None else None)
        else:
            problems.append(Divergence(run_id, f"unknown cause {cause!r}", seq=recorded.events[0].seq))
            return problems
        workflow = workflow_for(event)
        if workflow is None:
            problems.append(Divergence(run_id, "the workflow version of the run is not on wf.definitions"))
            return problems
        decision = decide(workflow, state, event, recorded.ts, policy)
        replayed = [msgspec.structs.replace(e, cause=cause) for e in decision.history]
        if [msgspec.to_builtins(e) for e in replayed] != [msgspec.to_builtins(e) for e in recorded.events]:
            problems.append(Divergence(run_id, f"the decision on {cause} replays differently",
                                       seq=recorded.events[0].seq,
                                       recorded=[msgspec.to_builtins(e) for e in recorded.events],
                                       replayed=[msgspec.to_builtins(e) for e in replayed]))
            return problems
        state = decision.state
    feed_silent(lambda item: True)
    if last_snapshot is not False:
        if last_snapshot is None:
            if state is None or state.status != RUN_SUCCEEDED:
                problems.append(Divergence(run_id, "wf.state holds a tombstone but the replay did not succeed",
                                           replayed=None if state is None else state.status))
        elif msgspec.to_builtins(state) != msgspec.to_builtins(last_snapshot):
            problems.append(Divergence(run_id, "the replayed state differs from the last wf.state snapshot",
                                       recorded=msgspec.to_builtins(last_snapshot),
                                       replayed=msgspec.to_builtins(state)))
    return problems

