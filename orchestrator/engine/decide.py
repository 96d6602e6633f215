"""The run state machine: where a step is started, retried, skipped, timed out or cancelled.

`decide(workflow, state, event, now)` applies one event to one run and returns the new state
and the effects to carry out. It never mutates its input state, so a batch that the runtime has
to abort (Kafka transaction failed) leaves the in-memory state untouched.

Graph semantics (DESIGN.md section 4): a step is considered once every incoming edge is
resolved. An edge is *taken* when its source succeeded through the edge's port, and *dead*
when its source was skipped or chose another port. A step runs if at least one incoming edge
is taken, and is skipped if all are dead; so skips propagate and joins after a branch still
complete. A step that fails for good fails the run and cancels what is still in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from .. import steps as step_types
from ..expressions import ExpressionError
from ..messages import (
    CancelRun,
    ChildFinished,
    EventArrived,
    HistoryEvent,
    RetryRun,
    SignalRun,
    StartRun,
    StepPickedUp,
    StepResult,
    StepTask,
    WaitSubscription,
)
from ..spec import Step, WorkflowSpec
from ..steps.base import AwaitEvent, AwaitSignal, Complete, Emit, Fail, Instruction, RunChildren, Sleep
from . import state as S
from .effects import (CancelChild, CloseWait, Dispatch, Effect, NotifyParent, OpenWait, Produce, Record, Rejected,
                      StartChild, Tick)
from .policy import DEFAULT_POLICY, Policy

# Names a step_waiting event's data and the recording call already use.
_HANDED_ON_RESERVED = frozenset({"reason", "kind", "step_id", "attempt"})


@dataclass
class Decision:
    state: S.RunState | None
    effects: list[Effect] = field(default_factory=list)

    @property
    def history(self) -> list[HistoryEvent]:
        return [effect.event for effect in self.effects if isinstance(effect, Record)]


def decide(workflow: WorkflowSpec | None, state: S.RunState | None, event: Any, now: float,
           policy: Policy = DEFAULT_POLICY) -> Decision:
    """Apply `event` to the run in `state` (None: no such run yet) at time `now`."""
    if isinstance(event, StartRun):
        if state is not None:
            return Decision(state)  # a redelivered start: the run exists already
        if workflow is None:
            raise ValueError(f"workflow {event.workflow}@{event.version} is not known")
        run = _Run(workflow, _new_state(event, now), now, policy)
        run.start(event)
        return run.decision()
    if isinstance(event, Rejected) and state is None and event.start is not None and workflow is not None:
        run = _Run(workflow, _new_state(event.start, now), now, policy)
        run.start(event.start, failure=event.reason)
        return run.decision()
    if state is None:
        return Decision(None)  # results or commands for a run that is gone: nothing to do
    if workflow is None:
        raise ValueError(f"workflow {state.workflow}@{state.version} is not known")
    run = _Run(workflow, msgspec.structs.replace(state, steps=_copy_steps(state.steps)), now, policy)
    handler = {
        StepResult: run.on_result,
        StepPickedUp: run.on_picked_up,
        Tick: run.on_tick,
        CancelRun: run.on_cancel,
        RetryRun: run.on_retry,
        SignalRun: run.on_signal,
        EventArrived: run.on_event,
        ChildFinished: run.on_child_finished,
        Rejected: run.on_rejected,
    }.get(type(event))
    if handler is None:
        raise TypeError(f"the engine does not handle {type(event).__name__}")
    handler(event)
    return run.decision()


def _new_state(event: StartRun, now: float) -> S.RunState:
    return S.RunState(
        run_id=event.run_id,
        workflow=event.workflow,
        version=event.version,
        input=event.input,
        trigger=event.trigger,
        started_by=event.started_by,
        created_at=now,
    )


def _copy_steps(steps: dict[str, S.StepState]) -> dict[str, S.StepState]:
    # Step states are replaced, never mutated in place, once copied here (see _Run._step).
    return dict(steps)


class _Run:
    """One application of decide(): a working copy of the state plus the effects so far."""

    def __init__(self, workflow: WorkflowSpec, state: S.RunState, now: float, policy: Policy = DEFAULT_POLICY):
        self.workflow = workflow
        self.state = state
        self.now = now
        self.policy = policy
        self.effects: list[Effect] = []
        self._copied: set[str] = set()

    def decision(self) -> Decision:
        return Decision(self.state, self.effects)

    # ---- state helpers ----------------------------------------------------------------------
    def _step(self, step_id: str) -> S.StepState:
        """The step's state, copied on first write so the caller's state is never mutated."""
        if step_id not in self._copied:
            current = self.state.steps.get(step_id) or S.StepState()
            attempts = [msgspec.structs.replace(attempt) for attempt in current.attempts]
            self.state.steps[step_id] = msgspec.structs.replace(current, attempts=attempts)
            self._copied.add(step_id)
        return self.state.steps[step_id]

    def _status(self, step_id: str) -> str:
        step = self.state.steps.get(step_id)
        return step.status if step else S.PENDING

    def _record(self, kind: str, step_id: str = "", attempt: int = 0, **data) -> None:
        self.state.seq += 1
        step_type = self.workflow.steps[step_id].type if step_id else ""
        self.effects.append(Record(HistoryEvent(
            run_id=self.state.run_id, seq=self.state.seq, kind=kind, ts=self.now,
            workflow=self.state.workflow, version=self.state.version,
            step_id=step_id, step_type=step_type, attempt=attempt, data=data,
        )))

    def context(self) -> dict:
        """Names visible to expressions: trigger, record, steps.<id>.output, run."""
        steps = {
            step_id: {"output": step.output if step.status == S.SUCCEEDED else None,
                      "status": step.status, "port": step.port}
            for step_id, step in self.state.steps.items()
        }
        trigger = self.state.trigger or {}
        return {
            "trigger": self.state.input,
            # Kafka-triggered runs (and test runs given a sample record) carry the record.
            "record": trigger if trigger.get("topic") is not None else None,
            "steps": steps,
            "run": {"id": self.state.run_id, "workflow": self.state.workflow,
                    "version": self.state.version, "started_at": self.state.created_at},
        }

    # ---- events -----------------------------------------------------------------------------
    def start(self, event: StartRun, failure: str | None = None) -> None:
        """Record the start and run what can run; with `failure` (or an input over the
        limit), the run is recorded without its input and fails at once."""
        too_big = failure or self._oversized("input", event.input)
        if too_big:
            self.state.input = None
        self._record("run_started", input=self.state.input, trigger=event.trigger,
                     started_by=event.started_by, created_at=self.state.created_at)
        for step_id in self.workflow.steps:
            self.state.steps[step_id] = S.StepState()
            self._copied.add(step_id)
        if too_big:
            self.state.error = too_big
            self._finish(S.RUN_FAILED, error=too_big, failed_steps=[])
            return
        self.advance()

    def _oversized(self, what: str, value: Any) -> str | None:
        """An error when `value` encodes to more than the payload limit, else None."""
        limit = self.policy.max_payload_bytes
        if not limit or value is None:
            return None
        size = len(value) if isinstance(value, bytes) else len(msgspec.json.encode(value))
        if size <= limit:
            return None
        return f"{what} of {size} bytes exceeds the limit of {limit} bytes"

    def _reserved(self, topic: str) -> str | None:
        prefix = self.policy.reserved_topic_prefix
        if prefix and str(topic).startswith(prefix):
            return f"topic {topic!r} is reserved for Sluice (names starting with {prefix!r} are its own)"
        return None

    def on_result(self, result: StepResult) -> None:
        step = self.state.steps.get(result.step_id)
        # Only the first result for the current attempt of a running step counts: duplicates
        # (a worker redelivery) and late results (after a timeout or cancel) are ignored.
        if self.state.done or step is None or step.status != S.RUNNING or step.attempt != result.attempt:
            return
        if result.pending:
            # Handed on (a Celery task): picked up, and the outcome follows for this attempt.
            self._handed_on(result.step_id, result.output)
            return
        if result.handed_on is not None:
            # The outcome overtook the worker's report of the hand-on, which will be ignored.
            self._handed_on(result.step_id, result.handed_on)
        if result.ok:
            self._succeed(result.step_id, result.output, "out", ended_at=result.ended_at)
        else:
            self._attempt_failed(result.step_id, result.error or "step failed", retryable=True,
                                 ended_at=result.ended_at)
        self.advance()

    def _handed_on(self, step_id: str, details: Any) -> None:
        """Record once per attempt that it was handed on, with where (`details`, a dict)."""
        step = self.state.steps[step_id]
        if step.dispatch_deadline is None and step.handed_on:
            return
        step = self._step(step_id)
        step.dispatch_deadline, step.handed_on = None, True
        # The details come from a record: names the event itself uses are not theirs to set.
        where = {key: value for key, value in details.items() if key not in _HANDED_ON_RESERVED} \
            if isinstance(details, dict) else {}
        self._record("step_waiting", step_id, step.attempt, reason="handed_on", **where)

    def on_picked_up(self, notice: StepPickedUp) -> None:
        step = self.state.steps.get(notice.step_id)
        if self.state.done or step is None or step.status != S.RUNNING or step.attempt != notice.attempt:
            return
        if step.dispatch_deadline is not None:
            self._step(notice.step_id).dispatch_deadline = None
            # Recorded (not only a state change) so the replayer sees when it was applied.
            self._record("step_picked_up", notice.step_id, notice.attempt, worker=notice.worker)

    def on_rejected(self, rejected: Rejected) -> None:
        """What the run's records made of it cannot be stored: fail it, from the state before."""
        if self.state.done:
            return
        self._stop_in_flight()
        self.state.error = rejected.reason
        self._finish(S.RUN_FAILED, error=rejected.reason, failed_steps=[])

    def on_tick(self, _tick: Tick) -> None:
        if self.state.done:
            return
        for step_id, step in list(self.state.steps.items()):
            if step.dispatch_deadline is not None and step.dispatch_deadline <= self.now and step.status == S.RUNNING:
                self._redispatch(step_id)
        due = [step_id for step_id, step in self.state.steps.items()
               if step.wake_at is not None and step.wake_at <= self.now]
        for step_id in due:
            step = self._step(step_id)
            reason, step.wake_at, step.wake_reason = step.wake_reason, None, None
            if reason == "retry" and step.status == S.RETRYING:
                self._begin_attempt(step_id)
            elif reason == "delay" and step.status == S.WAITING:
                self._succeed(step_id, step.output, "out")
            elif reason == "timeout" and step.status == S.RUNNING:
                timeout = self.workflow.steps[step_id].timeout_seconds
                self._attempt_failed(step_id, f"timed out after {timeout:g}s", retryable=True)
            elif reason == "timeout" and step.status == S.WAITING:
                self._close_wait_if_any(step_id)
                self._apply(step_id, self._call(step_id, "on_timeout"))
        self.advance()

    def on_cancel(self, command: CancelRun) -> None:
        if self.state.done:
            return
        self._stop_in_flight()
        self._finish(S.RUN_CANCELLED, reason=command.reason, by=command.by)

    def on_retry(self, command: RetryRun) -> None:
        if self.state.status not in (S.RUN_FAILED, S.RUN_CANCELLED):
            return
        self.state.status, self.state.ended_at, self.state.error = S.RUN_RUNNING, None, None
        self._record("run_retried", by=command.by)
        for step_id, step in list(self.state.steps.items()):
            if step.status in (S.FAILED, S.CANCELLED):
                step = self._step(step_id)
                step.status, step.error, step.ended_at = S.PENDING, None, None
                step.retry_base = step.attempt
        self.advance()

    def on_signal(self, signal: SignalRun) -> None:
        if self.state.done:
            return
        waiting = [step_id for step_id, step in self.state.steps.items()
                   if step.status == S.WAITING and step.signal == signal.name]
        self._record("signal_received", name=signal.name, payload=signal.payload, by=signal.by,
                     matched=waiting[:1])
        if waiting:
            step_id = waiting[0]
            step = self._step(step_id)
            step.signal, step.wake_at, step.wake_reason = None, None, None
            self._apply(step_id, self._call(step_id, "on_signal", signal.payload))
            self.advance()

    def on_event(self, arrived: EventArrived) -> None:
        step = self.state.steps.get(arrived.step_id)
        if self.state.done or step is None or step.status != S.WAITING or step.attempt != arrived.attempt:
            return
        step = self._step(arrived.step_id)
        step.wake_at = step.wake_reason = None
        self.effects.append(CloseWait(self.state.run_id, arrived.step_id))
        self._apply(arrived.step_id, self._call(arrived.step_id, "on_event", arrived.event))
        self.advance()

    def on_child_finished(self, finished: ChildFinished) -> None:
        step = self.state.steps.get(finished.step_id)
        if (self.state.done or step is None or step.status != S.WAITING or step.attempt != finished.attempt
                or step.children is None or step.children.running.get(str(finished.index)) != finished.child_run_id):
            return  # late, duplicate, or for an attempt that is over
        step_id, index = finished.step_id, str(finished.index)
        kids = self._children(step_id)
        del kids.running[index]
        ok = finished.status == S.RUN_SUCCEEDED
        if ok:
            kids.results[index] = finished.output
        else:
            kids.failed[index] = finished.error or finished.status
        self._record("child_finished", step_id, step.attempt, index=finished.index,
                     child_run_id=finished.child_run_id, status=finished.status)
        what = f"child run {finished.child_run_id} {finished.status}" + (f": {finished.error}" if finished.error else "")
        if kids.items is None:
            if ok:
                self._succeed(step_id, finished.output, "out")
            else:
                self._attempt_failed(step_id, what, retryable=True)
        elif not ok and kids.on_item_failure == "fail":
            self._release(step_id, f"item {finished.index} failed")
            self._attempt_failed(step_id, f"item {finished.index}: {what}", retryable=True)
        else:
            self._launch(step_id)
        self._maybe_complete_children(step_id)
        self.advance()

    # ---- child runs ---------------------------------------------------------------------------
    def _children(self, step_id: str) -> S.Children:
        """The step's children, copied on write like the step itself."""
        step = self._step(step_id)
        kids = step.children
        step.children = msgspec.structs.replace(kids, running=dict(kids.running), results=dict(kids.results),
                                                failed=dict(kids.failed))
        return step.children

    def _run_children(self, step_id: str, instruction: RunChildren) -> None:
        step = self._step(step_id)
        total = 1 if instruction.items is None else len(instruction.items)
        step.status = S.WAITING
        step.children = S.Children(workflow=instruction.workflow, version=instruction.version, total=total,
                                   concurrency=max(1, instruction.concurrency), items=instruction.items,
                                   input=instruction.input, on_item_failure=instruction.on_item_failure)
        if self.workflow.steps[step_id].timeout_seconds:
            step.wake_at = self.now + self.workflow.steps[step_id].timeout_seconds
            step.wake_reason = "timeout"
        self._record("step_waiting", step_id, step.attempt, reason="children", workflow=instruction.workflow,
                     version=instruction.version or "live", total=total, until=step.wake_at)
        self._launch(step_id)
        self._maybe_complete_children(step_id)

    def _launch(self, step_id: str) -> None:
        """Start children until `concurrency` run at once or every item has started."""
        if self._status(step_id) != S.WAITING:
            return
        spec_step = self.workflow.steps[step_id]
        step_type = step_types.get(spec_step.type)
        kids = self._children(step_id)
        attempt = self.state.steps[step_id].attempt
        while len(kids.running) < kids.concurrency and kids.next < kids.total:
            index = kids.next
            kids.next += 1
            if kids.items is None:
                child_input = kids.input
                child_id = f"{self.state.run_id}.{step_id}.{attempt}"
            else:
                child_id = f"{self.state.run_id}.{step_id}.{attempt}.{index}"
                try:
                    child_input = step_type.child_input(spec_step.config, self.context(), kids.items[index], index)
                except ExpressionError as exc:
                    kids.failed[str(index)] = str(exc)
                    if kids.on_item_failure == "fail":
                        self._release(step_id, f"item {index} failed")
                        self._attempt_failed(step_id, f"item {index}: {exc}", retryable=False)
                        return
                    continue
            kids.running[str(index)] = child_id
            self.effects.append(StartChild(
                run_id=child_id, workflow=kids.workflow, version=kids.version, input=child_input,
                trigger={"type": "parent", "run_id": self.state.run_id, "workflow": self.state.workflow,
                         "step_id": step_id, "attempt": attempt, "index": index},
                started_by=f"run:{self.state.run_id}", parent=(self.state.run_id, step_id, attempt, index)))
            self._record("child_started", step_id, attempt, index=index, child_run_id=child_id)

    def _maybe_complete_children(self, step_id: str) -> None:
        step = self.state.steps[step_id]
        kids = step.children
        if step.status != S.WAITING or kids is None or kids.items is None or kids.running or kids.next < kids.total:
            return
        self._succeed(step_id, {
            "results": [kids.results.get(str(i)) for i in range(kids.total)],
            "failed": [{"index": int(i), "error": error} for i, error in sorted(kids.failed.items(), key=lambda x: int(x[0]))],
        }, "out")

    def _release(self, step_id: str, reason: str) -> None:
        """Cancel the step's running children (the step is cancelled, failed or timed out)."""
        step = self.state.steps.get(step_id)
        if step is None or step.children is None or not step.children.running:
            return
        kids = self._children(step_id)
        for child_id in kids.running.values():
            self.effects.append(CancelChild(child_id, reason))
        kids.running = {}

    # ---- graph ------------------------------------------------------------------------------
    def advance(self) -> None:
        """Start or skip every pending step whose inputs are resolved, until nothing changes."""
        if self.state.done:
            return
        changed = True
        while changed and not self.state.done:
            changed = False
            for step_id in self.workflow.steps:
                if self._status(step_id) != S.PENDING:
                    continue
                readiness = self._readiness(step_id)
                if readiness == "run":
                    self._begin_attempt(step_id)
                    changed = True
                elif readiness == "skip":
                    step = self._step(step_id)
                    step.status, step.ended_at = S.SKIPPED, self.now
                    self._record("step_skipped", step_id)
                    changed = True
                if self.state.done:
                    return
        self._maybe_finish()

    def _readiness(self, step_id: str) -> str | None:
        taken = False
        for edge in self.workflow.incoming.get(step_id, ()):
            source = self.state.steps.get(edge.source) or S.StepState()
            if source.status == S.SUCCEEDED:
                taken = taken or source.port == edge.port
            elif source.status != S.SKIPPED:
                return None  # an input is unresolved (or failed: the run is failing anyway)
        if not self.workflow.incoming.get(step_id):
            return "run"
        return "run" if taken else "skip"

    def _maybe_finish(self) -> None:
        if self.state.done:
            return
        statuses = [self._status(step_id) for step_id in self.workflow.steps]
        if any(status == S.FAILED for status in statuses):
            failed = [step_id for step_id in self.workflow.steps if self._status(step_id) == S.FAILED]
            self._stop_in_flight()
            error = self.state.steps[failed[0]].error or "step failed"
            self.state.error = f"step {failed[0]!r} failed: {error}"
            self._finish(S.RUN_FAILED, error=self.state.error, failed_steps=failed)
        elif all(status in (S.SUCCEEDED, S.SKIPPED) for status in statuses):
            self.state.output = self._run_output()
            self._finish(S.RUN_SUCCEEDED, output=self.state.output)

    def _run_output(self) -> Any:
        """The output of the steps nothing follows: one such step's output, or a map of them."""
        sinks = {step_id: self.state.steps[step_id].output for step_id in self.workflow.steps
                 if not self.workflow.outgoing.get(step_id) and self._status(step_id) == S.SUCCEEDED}
        if len(sinks) == 1:
            return next(iter(sinks.values()))
        return sinks

    def _finish(self, status: str, **data) -> None:
        self.state.status, self.state.ended_at = status, self.now
        kind = {S.RUN_SUCCEEDED: "run_succeeded", S.RUN_FAILED: "run_failed", S.RUN_CANCELLED: "run_cancelled"}[status]
        self._record(kind, **data)
        trigger = self.state.trigger or {}
        if trigger.get("type") == "parent":
            self.effects.append(NotifyParent(ChildFinished(
                run_id=str(trigger.get("run_id")), step_id=str(trigger.get("step_id")),
                attempt=int(trigger.get("attempt") or 0), index=int(trigger.get("index") or 0),
                child_run_id=self.state.run_id, status=status,
                output=self.state.output if status == S.RUN_SUCCEEDED else None, error=self.state.error,
                ts=self.now)))
        if status == S.RUN_FAILED and self.workflow.on_failure and trigger.get("type") != "on_failure":
            self._start_failure_handler(data.get("failed_steps") or [])

    def _start_failure_handler(self, failed_steps: list[str]) -> None:
        """The workflow's on_failure: start the handler workflow with what went wrong."""
        handler = self.workflow.on_failure
        version = handler.get("version", "live")
        run_id = f"{self.state.run_id}.on-failure.{self.state.seq}"
        self.effects.append(StartChild(
            run_id=run_id, workflow=handler["workflow"], version=None if version == "live" else version,
            input={"run_id": self.state.run_id, "workflow": self.state.workflow, "version": self.state.version,
                   "failed_step": failed_steps[0] if failed_steps else None, "error": self.state.error,
                   "input": self.state.input},
            trigger={"type": "on_failure", "run_id": self.state.run_id, "workflow": self.state.workflow},
            started_by=f"on_failure:{self.state.run_id}"))
        self._record("on_failure_started", workflow=handler["workflow"], run_id=run_id)

    def _stop_in_flight(self) -> None:
        for step_id, step in list(self.state.steps.items()):
            if step.status in (S.RUNNING, S.WAITING, S.RETRYING):
                step = self._step(step_id)
                self._close_wait_if_any(step_id)
                step.status, step.ended_at, step.wake_at, step.wake_reason, step.signal = (
                    S.CANCELLED, self.now, None, None, None)
                step.dispatch_deadline = None
                if step.attempts and step.attempts[-1].ended_at is None:
                    step.attempts[-1].ended_at = self.now
                    step.attempts[-1].error = "cancelled"
                self._record("step_cancelled", step_id, step.attempt)

    # ---- steps ------------------------------------------------------------------------------
    def _begin_attempt(self, step_id: str) -> None:
        spec_step = self.workflow.steps[step_id]
        step_type = step_types.get(spec_step.type)
        step = self._step(step_id)
        step.attempt += 1
        step.status, step.error, step.output, step.port = S.RUNNING, None, None, None
        step.started_at = step.started_at if step.attempt - step.retry_base > 1 else self.now
        step.ended_at = None
        step.attempts.append(S.Attempt(number=step.attempt, started_at=self.now))
        if step_type.runs_on == "worker":
            self._dispatch(step_id, spec_step, step_type)
        else:
            self._apply(step_id, self._call(step_id, "start"))

    def _dispatch(self, step_id: str, spec_step: Step, step_type) -> None:
        step = self.state.steps[step_id]
        try:
            config = step_type.render_config(spec_step.config, self.context())
        except ExpressionError as exc:
            self._attempt_failed(step_id, str(exc), retryable=False)
            return
        too_big = self._oversized("rendered configuration", config)
        if too_big:
            self._attempt_failed(step_id, too_big, retryable=False)
            return
        self._record("step_started", step_id, step.attempt, input=config)
        self._send_task(step_id, spec_step, step_type, config)
        step.redispatches, step.handed_on = 0, False
        if spec_step.timeout_seconds:
            step.wake_at, step.wake_reason = self.now + spec_step.timeout_seconds, "timeout"

    def _send_task(self, step_id: str, spec_step: Step, step_type, config: Any) -> None:
        step = self.state.steps[step_id]
        self.effects.append(Dispatch(step_type.queue, StepTask(
            run_id=self.state.run_id, workflow=self.state.workflow, version=self.state.version,
            step_id=step_id, type=spec_step.type, attempt=step.attempt, config=config,
            idempotency_key=f"{self.state.run_id}/{step_id}/{step.attempt}",
            timeout_seconds=spec_step.timeout_seconds, dispatched_at=self.now,
        )))
        wait = self.policy.schedule_to_start_seconds
        step.dispatch_deadline = self.now + wait * (2 ** step.redispatches) if wait else None

    def _redispatch(self, step_id: str) -> None:
        """No worker has picked the attempt up in time: the task may never have reached one.
        Send the same attempt again; its idempotency key is unchanged, so a worker that did
        have it and answers late is harmless (the engine keeps the first result)."""
        spec_step = self.workflow.steps[step_id]
        step_type = step_types.get(spec_step.type)
        try:
            config = step_type.render_config(spec_step.config, self.context())
        except ExpressionError as exc:
            self._attempt_failed(step_id, str(exc), retryable=False)
            return
        step = self._step(step_id)
        waited = self.now - step.attempts[-1].started_at if step.attempts else 0.0
        step.redispatches += 1
        self._record("step_redispatched", step_id, step.attempt, redispatches=step.redispatches,
                     reason=f"no worker picked the step up within {waited:.0f}s")
        self._send_task(step_id, spec_step, step_type, config)

    def _call(self, step_id: str, method: str, *args) -> Instruction:
        """Run an engine-side step hook; an expression error fails the step (not retried)."""
        spec_step = self.workflow.steps[step_id]
        try:
            return getattr(step_types.get(spec_step.type), method)(spec_step.config, self.context(), *args)
        except ExpressionError as exc:
            return Fail(str(exc), retryable=False)
        except Exception as exc:  # a bug or bad config in a step type must not stop the engine
            return Fail(f"{type(exc).__name__}: {exc}", retryable=False)

    def _apply(self, step_id: str, instruction: Instruction) -> None:
        step = self._step(step_id)
        refused = self._refuse(instruction)
        if refused:
            instruction = Fail(refused, retryable=False)
        if isinstance(instruction, Complete):
            self._succeed(step_id, instruction.output, instruction.port)
        elif isinstance(instruction, Emit):
            self.effects.append(Produce(instruction.topic, instruction.value, instruction.key, dict(instruction.headers)))
            self._succeed(step_id, instruction.output, "out")
        elif isinstance(instruction, Fail):
            retryable = instruction.retryable and step_types.get(self.workflow.steps[step_id].type).retryable
            self._attempt_failed(step_id, instruction.error, retryable=retryable)
        elif isinstance(instruction, Sleep):
            step.status, step.output = S.WAITING, instruction.output
            step.wake_at, step.wake_reason = self.now + max(0.0, float(instruction.seconds)), "delay"
            self._record("step_waiting", step_id, step.attempt, reason="delay", until=step.wake_at)
        elif isinstance(instruction, AwaitSignal):
            step.status, step.signal = S.WAITING, instruction.name or step_id
            if instruction.timeout_seconds:
                step.wake_at, step.wake_reason = self.now + instruction.timeout_seconds, "timeout"
            self._record("step_waiting", step_id, step.attempt, reason="signal", signal=step.signal,
                         until=step.wake_at, **instruction.details)
        elif isinstance(instruction, RunChildren):
            self._run_children(step_id, instruction)
        elif isinstance(instruction, AwaitEvent):
            step.status = S.WAITING
            if instruction.timeout_seconds:
                step.wake_at, step.wake_reason = self.now + instruction.timeout_seconds, "timeout"
            self.effects.append(OpenWait(WaitSubscription(
                run_id=self.state.run_id, step_id=step_id, attempt=step.attempt, topic=instruction.topic,
                correlation=str(instruction.correlation), key_expression=instruction.key_expression,
                deadline=step.wake_at,
            )))
            self._record("step_waiting", step_id, step.attempt, reason="event", topic=instruction.topic,
                         correlation=str(instruction.correlation), until=step.wake_at)
        else:
            self._attempt_failed(step_id, f"step type returned {instruction!r}", retryable=False)

    def _refuse(self, instruction: Instruction) -> str | None:
        """Why an engine-side step's instruction may not be carried out, if it may not."""
        if isinstance(instruction, (Emit, AwaitEvent)):
            reserved = self._reserved(instruction.topic)
            if reserved:
                return reserved
        if isinstance(instruction, Emit):
            return self._oversized("record value", instruction.value) or self._oversized("output", instruction.output)
        if isinstance(instruction, Complete):
            return self._oversized("output", instruction.output)
        return None

    def _succeed(self, step_id: str, output: Any, port: str, ended_at: float | None = None) -> None:
        step = self._step(step_id)
        step.status, step.output, step.port, step.error = S.SUCCEEDED, output, port, None
        step.wake_at = step.wake_reason = step.signal = None
        step.dispatch_deadline = None
        step.ended_at = self.now
        attempt = step.attempts[-1]
        attempt.ended_at = ended_at or self.now
        self._record("step_succeeded", step_id, step.attempt, output=output, port=port,
                     started_at=attempt.started_at, ended_at=attempt.ended_at)

    def _attempt_failed(self, step_id: str, error: str, retryable: bool, ended_at: float | None = None) -> None:
        spec_step = self.workflow.steps[step_id]
        step = self._step(step_id)
        step.wake_at = step.wake_reason = step.signal = None
        step.dispatch_deadline = None
        attempt = step.attempts[-1]
        attempt.ended_at, attempt.error = ended_at or self.now, error
        attempts_this_round = step.attempt - step.retry_base
        if retryable and attempts_this_round < spec_step.retry.max_attempts:
            backoff = spec_step.retry.delay_after(attempts_this_round)
            attempt.backoff_seconds = backoff
            step.status, step.error = S.RETRYING, error
            step.wake_at, step.wake_reason = self.now + backoff, "retry"
            self._record("step_retrying", step_id, step.attempt, error=error, backoff_seconds=backoff,
                         next_attempt_at=step.wake_at, started_at=attempt.started_at, ended_at=attempt.ended_at)
        else:
            step.status, step.error, step.ended_at = S.FAILED, error, self.now
            self._record("step_failed", step_id, step.attempt, error=error,
                         started_at=attempt.started_at, ended_at=attempt.ended_at)

    def _close_wait_if_any(self, step_id: str) -> None:
        """A waiting step stops waiting: close its event subscription, cancel its children."""
        if self._status(step_id) != S.WAITING:
            return
        if self.workflow.steps[step_id].type == "wait_for_event":
            self.effects.append(CloseWait(self.state.run_id, step_id))
        self._release(step_id, "the parent step stopped waiting")
