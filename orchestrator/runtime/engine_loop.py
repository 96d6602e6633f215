"""The engine loop: wf.runs -> decide() -> one Kafka transaction of effects.

Per batch (up to `batch_size` records, plus runs whose timers are due) it produces, in ONE
transaction: step dispatches, history events, user records of kafka_produce steps, wait
subscriptions, one state snapshot per touched run, dead letters, and the consumed offsets
(KIP-447: `send_offsets_to_transaction` with the consumer's group metadata). Either all of it
becomes visible or none: a crash between two batches replays the batch from the last commit
against the state of the last commit, and decide() is deterministic given (state, event, now).

The in-memory state is only updated after the commit succeeds; an aborted batch is dropped
and its records re-read. State is restored from the compacted `wf.state` changelog whenever
partitions are assigned (wf.runs and wf.state are co-partitioned: same key, same partitioner,
same partition count).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import Counter, OrderedDict, defaultdict

import msgspec
from confluent_kafka import Consumer
from django.conf import settings

from ..engine import (CancelChild, CloseWait, Dispatch, NotifyParent, OpenWait, Policy, Produce, Record, Rejected,
                      StartChild, Tick, decide)
from ..engine.state import RUN_SUCCEEDED, RunState
from ..messages import CancelRun, ChildFinished, StartRun
from ..observability import logs
from . import codec, metrics
from .changelog import restore
from .definitions import DefinitionRegistry
from .kafka import consumer_config
from .loops import (IdleBackoff, Loop, check_size, consumed_offsets, dead_letter, dead_letter_alone, poll_batch,
                    rewind)
from .topics import Topics

log = logging.getLogger(__name__)

_MISSING = object()
# Finished runs' states are tombstoned; remember recent ids (also rebuilt from the tombstones
# on restore) so a late duplicate of a finished run's records is told apart from a record for
# a run whose state is missing.
RECENTLY_FINISHED = 100_000


# A history event's `cause` names the input of the decision that wrote it, so a replayer can
# feed the same inputs to decide() again: a wf.runs record, a timer, or a rejection (which
# dropped what the listed records had done to the run).
TIMER_CAUSE = "timer"


def record_cause(partition: int, offset: int) -> str:
    return f"runs/{partition}/{offset}"


def rejected_cause(dropped: list[str]) -> str:
    return "rejected:" + ",".join(cause for cause in dropped if cause != TIMER_CAUSE)


class MissingState(LookupError):
    """A record for a run this engine has no state for (and did not see finish)."""


def engine_policy(topics: Topics) -> Policy:
    return Policy(reserved_topic_prefix=topics.prefix, max_payload_bytes=settings.SLUICE_MAX_PAYLOAD_BYTES,
                  schedule_to_start_seconds=settings.SLUICE_SCHEDULE_TO_START_SECONDS or None)


class EngineLoop(Loop):
    stage = "engine"

    def __init__(self, topics: Topics, registry: DefinitionRegistry, instance_id: str,
                 stop: threading.Event, batch_size: int = 500, clock=time.time):
        self.topics = topics
        self.registry = registry
        self.instance_id = instance_id
        self.stop = stop
        self.batch_size = batch_size
        self.clock = clock
        self.policy = engine_policy(topics)
        self.states: dict[str, RunState] = {}
        self.partition_of: dict[str, int] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._wakes: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self.stats: Counter = Counter()
        self.consumer: Consumer | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def open(self) -> None:
        self.open_producer(self.topics, f"engine-{self.instance_id}")
        self.consumer = Consumer(consumer_config(self.topics.group("engine"), **{
            "group.instance.id": f"{self.instance_id}-engine",
            "session.timeout.ms": 30000,
            "max.poll.interval.ms": 300000,
        }))
        self.consumer.subscribe([self.topics.runs], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        self.idle = IdleBackoff(self.consumer, self.stop)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        self.close_producer()

    # ---- rebalance: restore from the changelog ------------------------------------------------
    def _on_assign(self, consumer, partitions) -> None:
        numbers = [tp.partition for tp in partitions]
        restored = self._restore(numbers)
        log.info("engine: assigned wf.runs partitions %s, restored %d run states", numbers, restored)

    def _on_revoke(self, consumer, partitions) -> None:
        revoked = {tp.partition for tp in partitions}
        for run_id in [r for r, p in self.partition_of.items() if p in revoked]:
            self.states.pop(run_id, None)
            self.partition_of.pop(run_id, None)
            self._wakes.pop(run_id, None)
        log.info("engine: revoked partitions %s", sorted(revoked))

    def _restore(self, partitions: list[int]) -> int:
        count = 0
        for key, (partition, state) in restore(self.topics.state, partitions, codec.decode_state).items():
            run_id = key.decode()
            if state is None:
                self._remember_finished(run_id)
                continue
            self.states[run_id] = state
            self.partition_of[run_id] = partition
            self._schedule(run_id, state)
            count += 1
        return count

    def _remember_finished(self, run_id: str) -> None:
        self._finished[run_id] = None
        self._finished.move_to_end(run_id)
        if len(self._finished) > RECENTLY_FINISHED:
            self._finished.popitem(last=False)

    # ---- timers -------------------------------------------------------------------------------
    def _schedule(self, run_id: str, state: RunState | None) -> None:
        wake = state.next_wake() if state is not None and not state.done else None
        if wake is None:
            self._wakes.pop(run_id, None)
        elif self._wakes.get(run_id) != wake:
            self._wakes[run_id] = wake
            heapq.heappush(self._heap, (wake, run_id))

    def _take_due(self, now: float, limit: int) -> list[tuple[float, str]]:
        due = []
        while self._heap and self._heap[0][0] <= now and len(due) < limit:
            wake, run_id = heapq.heappop(self._heap)
            if self._wakes.get(run_id) == wake:
                due.append((wake, run_id))
        return due

    def next_timer(self) -> float | None:
        while self._heap and self._wakes.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    # ---- one batch ----------------------------------------------------------------------------
    def run_once(self) -> int:
        """Consume and process one batch; returns the number of records and timers handled."""
        next_timer = self.next_timer()
        until_timer = None if next_timer is None else max(0.0, next_timer - self.clock())
        wait = 0.1 if until_timer is None else min(0.1, until_timer)
        msgs = poll_batch(self.consumer, self.batch_size, self.idle.timeout(wait))
        now = self.clock()
        due = [Tick(run_id) for _wake, run_id in self._take_due(now, limit=2000)]
        if not msgs and not due:
            self.idle.idle(max_pause=until_timer)
            return 0
        self.idle.busy()
        # Timers first, in a unit list with the records: a failed transaction is narrowed down
        # to the one record (or timer) that causes it, and the rest is committed.
        self.commit_isolated([*due, *msgs], lambda units: self._process(units, self.clock()), self._rewind)
        return len(msgs) + len(due)

    def _rewind(self, units) -> None:
        rewind(self.consumer, [unit for unit in units if not isinstance(unit, Tick)])
        for unit in units:
            wake = self._wakes.get(unit.run_id) if isinstance(unit, Tick) else None
            if wake is not None:
                heapq.heappush(self._heap, (wake, unit.run_id))

    def dead_letter_unit(self, unit, reason: str) -> None:
        if isinstance(unit, Tick):
            # A timer whose effects cannot be committed: park the run (it wakes again on its next
            # record) and leave a record of it where operators look.
            self._wakes.pop(unit.run_id, None)
            producer = self.producer
            producer.begin_transaction()
            producer.produce(self.topics.dlq, key=unit.run_id.encode(),
                             value=msgspec.json.encode({"run_id": unit.run_id, "event": "timer"}),
                             headers=[("sluice-error", reason[:2000].encode()), ("sluice-stage", b"engine")])
            producer.commit_transaction(60)
            log.error("engine: timer of run %s parked: %s", unit.run_id, reason, extra={"run_id": unit.run_id})
            return
        dead_letter_alone(self, self.topics.dlq, unit, reason)

    def _process(self, units: list, now: float) -> None:
        working: dict[str, RunState | None] = {}
        started: dict[str, StartRun] = {}
        partitions: dict[str, int] = {}
        effects: dict[str, list] = defaultdict(list)
        consumed: dict[str, list[str]] = defaultdict(list)  # causes of each run's decisions
        counts: Counter = Counter()
        producer = self.producer
        producer.begin_transaction()
        msgs = [unit for unit in units if not isinstance(unit, Tick)]

        def current(run_id):
            state = working.get(run_id, _MISSING)
            return self.states.get(run_id) if state is _MISSING else state

        def workflow_of(run_id, event):
            state = current(run_id)
            if isinstance(event, StartRun):
                if state is None and run_id in self._finished:
                    return None, None  # a late duplicate start of a finished run
                workflow = self.registry.ensure(event.workflow, event.version)
                if workflow is None:
                    raise LookupError(f"workflow {event.workflow}@{event.version} is not published "
                                      f"(nothing on {self.topics.definitions})")
                return state, workflow
            if state is None:
                if run_id in self._finished:
                    counts["late_records"] += 1
                    return None, None  # e.g. a result that arrives after the run finished
                raise MissingState(f"no state for run {run_id}: it is not running on this engine and did "
                                   f"not finish here recently ({type(event).__name__} cannot be applied)")
            return state, self.registry.ensure(state.workflow, state.version)

        def apply(run_id, event, partition, cause):
            state, workflow = workflow_of(run_id, event)
            if workflow is None:
                return
            decision = decide(workflow, state, event, now, self.policy)
            if not decision.effects:
                return  # nothing changed (decisions that change the state also write history)
            for event_ in decision.history:
                event_.cause = cause  # what the replayer (verify_history) feeds decide() again
            if isinstance(event, StartRun):
                started[run_id] = event
            consumed[run_id].append(cause)
            working[run_id] = decision.state
            partitions[run_id] = partition
            effects[run_id].extend(self._effect_records(run_id, decision.effects, counts))

        for unit in units:
            if isinstance(unit, Tick):
                if current(unit.run_id) is not None:  # else the run moved to another engine
                    logs.RUN_ID.set(unit.run_id)
                    apply(unit.run_id, unit, self.partition_of.get(unit.run_id), TIMER_CAUSE)
                continue
            try:
                command = codec.decode_run_command(unit.value(), unit.headers())
            except (codec.DecodeError, ValueError, TypeError) as exc:
                dead_letter(producer, self.topics.dlq, unit, "engine", f"undecodable record: {exc}")
                counts["dlq"] += 1
                continue
            logs.RUN_ID.set(command.run_id)  # log lines while applying it name the run
            try:
                apply(command.run_id, command, unit.partition(), record_cause(unit.partition(), unit.offset()))
            except Exception as exc:  # one bad record must never stop the loop
                dead_letter(producer, self.topics.dlq, unit, "engine", f"{type(exc).__name__}: {exc}")
                counts["dlq"] += 1
        logs.RUN_ID.set(None)

        snapshots = {}
        for run_id, state in working.items():
            value = None if state.status == RUN_SUCCEEDED else codec.encode(state)
            if value is not None and len(value) > settings.SLUICE_MAX_STATE_BYTES:
                state, value = self._reject(run_id, state, len(value), started.get(run_id), now, effects, counts,
                                            consumed[run_id])
                working[run_id] = state
            snapshots[run_id] = value
        for run_id, records in effects.items():
            for topic, key, value, headers in records:
                check_size(topic, value, key, headers)
                producer.produce(topic, key=key, value=value, headers=headers)
        for run_id, value in snapshots.items():
            producer.produce(self.topics.state, key=run_id.encode(), value=value,
                             headers=codec.headers_for(working[run_id]))
        if msgs:
            producer.send_offsets_to_transaction(consumed_offsets(msgs), self.consumer.consumer_group_metadata(), 30)
        committing = time.perf_counter()
        producer.commit_transaction(60)
        # Before the loop's states are updated: the metrics compare them with the batch's.
        metrics.engine_committed(self.states, working, self.registry, len(units), time.perf_counter() - committing)

        # Committed: now the batch's state becomes the loop's state.
        for run_id, state in working.items():
            if state.done:
                counts["runs_finished"] += 1
            if state.status == RUN_SUCCEEDED:
                self.states.pop(run_id, None)
                self.partition_of.pop(run_id, None)
                self._remember_finished(run_id)
            else:
                self.states[run_id] = state
                if partitions.get(run_id) is not None:
                    self.partition_of[run_id] = partitions[run_id]
            self._schedule(run_id, state)
        counts["records"] += len(msgs)
        counts["timers"] += len(units) - len(msgs)
        counts["batches"] += 1
        self.stats.update(counts)

    def _reject(self, run_id: str, state: RunState, size: int, start: StartRun | None, now: float,
                effects: dict, counts: Counter, dropped: list[str]):
        """The batch grew a run's state past the limit: drop what the batch did to that run and
        fail it from the state before, which fitted. Returns the new state and its snapshot."""
        reason = (f"run state of {size} bytes exceeds the limit of {settings.SLUICE_MAX_STATE_BYTES} bytes "
                  f"(SLUICE_MAX_STATE_BYTES): step outputs or input are too large")
        before = self.states.get(run_id)
        workflow = self.registry.ensure(state.workflow, state.version)
        decision = decide(workflow, before, Rejected(run_id, reason, start=start if before is None else None),
                          now, self.policy)
        for event in decision.history:
            event.cause = rejected_cause(dropped)
        effects[run_id] = self._effect_records(run_id, decision.effects, counts)
        counts["rejected_states"] += 1
        log.error("engine: run %s failed: %s", run_id, reason, extra={"run_id": run_id})
        return decision.state, codec.encode(decision.state)

    def _effect_records(self, run_id: str, effects, counts: Counter) -> list:
        out = []
        key = run_id.encode()
        for effect in effects:
            if isinstance(effect, Record):
                out.append((self.topics.history, key, codec.encode(effect.event), codec.headers_for(effect.event)))
                if effect.event.kind == "run_started":
                    counts["runs_started"] += 1
            elif isinstance(effect, Dispatch):
                out.append((self.topics.tasks(effect.queue), key, codec.encode(effect.task),
                            codec.headers_for(effect.task)))
            elif isinstance(effect, Produce):
                value = effect.value if isinstance(effect.value, bytes) else msgspec.json.encode(effect.value)
                headers = [(name, str(v).encode()) for name, v in effect.headers.items()]
                headers.append(("sluice-run-id", key))
                out.append((effect.topic, None if effect.key is None else str(effect.key).encode(), value, headers))
            elif isinstance(effect, OpenWait):
                sub = effect.subscription
                out.append((self.topics.waits, f"{sub.run_id}/{sub.step_id}".encode(), codec.encode(sub),
                            codec.headers_for(sub)))
            elif isinstance(effect, CloseWait):
                out.append((self.topics.waits, f"{effect.run_id}/{effect.step_id}".encode(), None, []))
            elif isinstance(effect, StartChild):
                out.append(self._start_child(effect, counts))
            elif isinstance(effect, CancelChild):
                cancel = CancelRun(run_id=effect.run_id, reason=effect.reason, by=f"run:{run_id}", ts=time.time())
                out.append((self.topics.runs, effect.run_id.encode(), codec.encode(cancel), codec.headers_for(cancel)))
            elif isinstance(effect, NotifyParent):
                finished = effect.finished
                out.append((self.topics.runs, finished.run_id.encode(), codec.encode(finished),
                            codec.headers_for(finished)))
        return out

    def _start_child(self, effect: StartChild, counts: Counter) -> tuple:
        """The start of a child run on wf.runs, with "live" resolved to a version now; or, when
        the workflow has no such version, a failed ChildFinished for the parent instead."""
        version = effect.version if effect.version is not None else self.registry.live_version(effect.workflow)
        if version is not None and self.registry.ensure(effect.workflow, version) is not None:
            start = StartRun(run_id=effect.run_id, workflow=effect.workflow, version=version, input=effect.input,
                             trigger=effect.trigger, started_by=effect.started_by, ts=time.time())
            counts["children_started"] += 1
            return (self.topics.runs, effect.run_id.encode(), codec.encode(start), codec.headers_for(start))
        problem = (f"workflow {effect.workflow!r} has no live version" if effect.version is None
                   else f"workflow {effect.workflow!r} has no version {effect.version}")
        if effect.parent is None:  # an on_failure handler: nobody waits for it
            counts["children_not_started"] += 1
            log.error("engine: %s not started: %s", effect.run_id, problem)
            note = {"run_id": effect.run_id, "workflow": effect.workflow, "input": effect.input}
            return (self.topics.dlq, effect.run_id.encode(), msgspec.json.encode(note),
                    [("sluice-error", f"not started: {problem}".encode()), ("sluice-stage", b"engine")])
        parent, step_id, attempt, index = effect.parent
        finished = ChildFinished(run_id=parent, step_id=step_id, attempt=attempt, index=index,
                                 child_run_id=effect.run_id, status="failed", error=f"not started: {problem}",
                                 ts=time.time())
        return (self.topics.runs, parent.encode(), codec.encode(finished), codec.headers_for(finished))
