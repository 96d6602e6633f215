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
import uuid
from collections import Counter, OrderedDict

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from ..engine import CloseWait, Dispatch, OpenWait, Produce, Record, Tick, decide
from ..engine.state import RUN_SUCCEEDED, RunState
from ..messages import StartRun
from . import codec
from .definitions import DefinitionRegistry
from .kafka import consumer_config
from .loops import IdleBackoff, Loop, consumed_offsets, dead_letter, poll_batch, transactional_producer
from .topics import Topics

log = logging.getLogger(__name__)

_MISSING = object()
# Finished runs' states are tombstoned; remember recent ids so a late duplicate start of a
# finished run (e.g. a retried webhook) is not mistaken for a new run.
RECENTLY_FINISHED = 100_000


class EngineLoop(Loop):
    def __init__(self, topics: Topics, registry: DefinitionRegistry, instance_id: str,
                 stop: threading.Event, batch_size: int = 500, clock=time.time):
        self.topics = topics
        self.registry = registry
        self.instance_id = instance_id
        self.stop = stop
        self.batch_size = batch_size
        self.clock = clock
        self.states: dict[str, RunState] = {}
        self.partition_of: dict[str, int] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._wakes: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self.stats: Counter = Counter()
        self.consumer: Consumer | None = None
        self.producer = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def open(self) -> None:
        self.producer = transactional_producer(f"{self.topics.prefix}engine-{self.instance_id}")
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
        if self.producer is not None:
            self.producer.flush(10)
            self.producer = None

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
        if not partitions:
            return 0
        reader = Consumer(consumer_config(f"sluice-restore-{uuid.uuid4().hex}"))
        try:
            tps = [TopicPartition(self.topics.state, p, OFFSET_BEGINNING) for p in partitions]
            reader.assign(tps)
            ends = {p: reader.get_watermark_offsets(TopicPartition(self.topics.state, p), timeout=10)
                    for p in partitions}
            pending = {p for p, (low, high) in ends.items() if high > low}
            restored: dict[str, RunState | None] = {}
            owner: dict[str, int] = {}
            deadline = time.monotonic() + 120
            while pending and time.monotonic() < deadline:
                for msg in reader.consume(1000, timeout=0.2):
                    if msg.error():
                        continue
                    run_id = msg.key().decode()
                    owner[run_id] = msg.partition()
                    restored[run_id] = None if msg.value() is None else codec.decode_state(msg.value())
                # Done when the position (not the last message) reaches the end: transaction
                # markers take offsets too.
                for tp in reader.position([TopicPartition(self.topics.state, p) for p in list(pending)]):
                    if tp.offset >= ends[tp.partition][1]:
                        pending.discard(tp.partition)
            if pending:
                log.warning("engine: restore of wf.state partitions %s did not reach the end", sorted(pending))
            count = 0
            for run_id, state in restored.items():
                if state is None:
                    continue
                self.states[run_id] = state
                self.partition_of[run_id] = owner[run_id]
                self._schedule(run_id, state)
                count += 1
            return count
        finally:
            reader.close()

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
        due = self._take_due(now, limit=2000)
        if not msgs and not due:
            self.idle.idle(max_pause=until_timer)
            return 0
        self.idle.busy()
        try:
            self._process(msgs, due, now)
        except KafkaException as exc:
            for entry in due:
                heapq.heappush(self._heap, entry)
            self.stats["aborted_batches"] += 1
            self.abort_batch(exc, msgs, "engine")
            return 0
        return len(msgs) + len(due)

    def _process(self, msgs, due, now: float) -> None:
        working: dict[str, RunState | None] = {}
        partitions: dict[str, int] = {}
        out: list[tuple[str, bytes | None, bytes | None, list]] = []
        counts: Counter = Counter()
        producer = self.producer
        producer.begin_transaction()

        def current(run_id):
            state = working.get(run_id, _MISSING)
            return self.states.get(run_id) if state is _MISSING else state

        def apply(run_id, event, partition):
            state = current(run_id)
            if isinstance(event, StartRun):
                if state is None and run_id in self._finished:
                    return  # a late duplicate start of a finished run
                workflow = self.registry.ensure(event.workflow, event.version)
                if workflow is None:
                    raise LookupError(f"workflow {event.workflow}@{event.version} is not published "
                                      f"(nothing on {self.topics.definitions})")
            elif state is not None:
                workflow = self.registry.ensure(state.workflow, state.version)
            else:
                return
            decision = decide(workflow, state, event, now)
            if not decision.effects:
                return
            working[run_id] = decision.state
            partitions[run_id] = partition
            self._collect(run_id, decision.effects, out, counts)

        for msg in msgs:
            try:
                command = codec.decode_run_command(msg.value(), msg.headers())
            except (codec.DecodeError, ValueError, TypeError) as exc:
                dead_letter(producer, self.topics.dlq, msg, "engine", f"undecodable record: {exc}")
                counts["dlq"] += 1
                continue
            try:
                apply(command.run_id, command, msg.partition())
            except Exception as exc:  # one bad record must never stop the loop
                dead_letter(producer, self.topics.dlq, msg, "engine", f"{type(exc).__name__}: {exc}")
                counts["dlq"] += 1
        for _wake, run_id in due:
            try:
                apply(run_id, Tick(run_id), self.partition_of.get(run_id, partitions.get(run_id)))
            except Exception:
                log.exception("engine: timer of run %s failed", run_id)

        for run_id, state in working.items():
            value = None if state.status == RUN_SUCCEEDED else codec.encode(state)
            out.append((self.topics.state, run_id.encode(), value, codec.headers_for(state)))
        for topic, key, value, headers in out:
            producer.produce(topic, key=key, value=value, headers=headers)
        if msgs:
            producer.send_offsets_to_transaction(consumed_offsets(msgs), self.consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(60)

        # Committed: now the batch's state becomes the loop's state.
        for run_id, state in working.items():
            if state.done:
                counts["runs_finished"] += 1
            if state.status == RUN_SUCCEEDED:
                self.states.pop(run_id, None)
                self.partition_of.pop(run_id, None)
                self._finished[run_id] = None
                if len(self._finished) > RECENTLY_FINISHED:
                    self._finished.popitem(last=False)
            else:
                self.states[run_id] = state
                if partitions.get(run_id) is not None:
                    self.partition_of[run_id] = partitions[run_id]
            self._schedule(run_id, state)
        counts["records"] += len(msgs)
        counts["timers"] += len(due)
        counts["batches"] += 1
        self.stats.update(counts)

    def _collect(self, run_id: str, effects, out: list, counts: Counter) -> None:
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
