"""Run state: everything the engine knows about one run, snapshotted to `wf.state` (compacted).

Timers are part of the state (`StepState.wake_at`): a retry backoff, a delay, a step timeout
or an event-wait deadline. The engine loop keeps an index of the earliest wake time per run
and feeds the run a Tick when it is due, so timers survive restarts with the state itself.
"""

from __future__ import annotations

from typing import Any

import msgspec

# Step statuses
PENDING = "pending"
RUNNING = "running"  # dispatched to a worker, or an engine step in progress
WAITING = "waiting"  # delay, approval or wait_for_event
RETRYING = "retrying"  # failed attempt, next one after backoff
SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"
CANCELLED = "cancelled"

# Run statuses
RUN_RUNNING = "running"
RUN_SUCCEEDED = "succeeded"
RUN_FAILED = "failed"
RUN_CANCELLED = "cancelled"
RUN_DONE = frozenset({RUN_SUCCEEDED, RUN_FAILED, RUN_CANCELLED})


class Attempt(msgspec.Struct, kw_only=True):
    number: int
    started_at: float
    ended_at: float | None = None
    error: str | None = None
    # Delay the engine chose before the next attempt, when this one failed and another follows.
    backoff_seconds: float | None = None


# Run states live in the engine's memory by the ten thousand during a burst; they are trees of
# plain data (JSON in, JSON out), never cycles, so the cycle collector need not track them:
# gc=False (msgspec) keeps every collection from walking them (see orchestrator/runtime/heap.py).
class Children(msgspec.Struct, kw_only=True, gc=False):
    """The child runs of a `subworkflow` or `foreach` step's current attempt."""

    workflow: str
    version: int | None  # None: the live version
    total: int
    next: int = 0  # the next item to start
    running: dict[str, str] = {}  # item index (as text) -> child run id
    results: dict[str, Any] = {}  # item index -> output of its succeeded child
    failed: dict[str, str] = {}  # item index -> error
    concurrency: int = 1
    on_item_failure: str = "fail"
    items: list | None = None  # None: one child with `input`
    input: Any = None


class StepState(msgspec.Struct, kw_only=True, gc=False):
    status: str = PENDING
    attempt: int = 0
    # Attempt number at which the current round began: a run retry starts a new round, so the
    # retry policy counts afresh while attempt numbers (and idempotency keys) stay unique.
    retry_base: int = 0
    attempts: list[Attempt] = []
    output: Any = None
    error: str | None = None
    port: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    # Timer: when to wake this step, and why ("retry", "delay", "timeout").
    wake_at: float | None = None
    wake_reason: str | None = None
    # Approval steps: the signal name awaited.
    signal: str | None = None
    # Worker steps: when to dispatch the attempt again if no worker has picked it up (cleared
    # by the pick-up notice or the result), and how many times it was dispatched again.
    dispatch_deadline: float | None = None
    redispatches: int = 0
    # The current attempt was handed on by its worker (a Celery task); its outcome comes later.
    handed_on: bool = False
    # Sub-workflow and foreach steps: their child runs.
    children: Children | None = None


class RunState(msgspec.Struct, kw_only=True, gc=False):
    run_id: str
    workflow: str
    version: int
    status: str = RUN_RUNNING
    input: Any = None
    trigger: dict = {}
    started_by: str = ""
    created_at: float
    ended_at: float | None = None
    steps: dict[str, StepState] = {}
    output: Any = None
    error: str | None = None
    # Sequence number of the last history event emitted for this run.
    seq: int = 0

    @property
    def done(self) -> bool:
        return self.status in RUN_DONE

    def next_wake(self) -> float | None:
        earliest = None
        for step in self.steps.values():  # called for every run of every batch: one plain loop
            for wake in (step.wake_at, step.dispatch_deadline):
                if wake is not None and (earliest is None or wake < earliest):
                    earliest = wake
        return earliest
