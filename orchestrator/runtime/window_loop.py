"""The window loop: wf.windows.in -> aggregates per workflow and key -> one run per closed window.

Windowed Kafka triggers write each matching record, re-keyed by its window key, to
wf.windows.in. This loop (one per runner, consumer group `windows`) folds them into the open
windows of that key (orchestrator/windows.py) and, when the wall clock passes a window's end
plus its grace period, starts the window's run and writes its result to `emit_topic`. Per
batch, in ONE transaction: the changelog record of every key it touched (wf.windows,
compacted, co-partitioned with wf.windows.in), the StartRun of every closed window, the
emitted records and the consumed offsets. So a window is counted and closed exactly once
across kill -9 and restarts; its state is restored from the changelog on assignment.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections import Counter

import msgspec
from confluent_kafka import Consumer

from .. import windows as W
from ..messages import StartRun
from . import codec
from .changelog import restore
from .definitions import DefinitionRegistry
from .kafka import consumer_config
from .loops import IdleBackoff, Loop, check_size, consumed_offsets, dead_letter, dead_letter_alone, poll_batch, rewind
from .topics import Topics

log = logging.getLogger(__name__)

_state_decoder = msgspec.json.Decoder(W.KeyWindows)


def window_key(slug: str, key) -> bytes:
    """The Kafka key of a workflow's window key, on wf.windows.in and wf.windows alike."""
    return json.dumps([slug, key], separators=(",", ":"), sort_keys=True, default=str).encode()


class _Close:
    """A unit of work: close the due windows of one key (no Kafka record behind it)."""

    def __init__(self, key: bytes):
        self.key = key


class WindowLoop(Loop):
    stage = "windows"

    def __init__(self, topics: Topics, registry: DefinitionRegistry, instance_id: str, stop: threading.Event,
                 batch_size: int = 1000, clock=time.time):
        self.topics = topics
        self.registry = registry
        self.instance_id = instance_id
        self.stop = stop
        self.batch_size = batch_size
        self.clock = clock
        self.states: dict[bytes, W.KeyWindows] = {}
        self.partition_of: dict[bytes, int] = {}
        self._closes: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []
        self.stats: Counter = Counter()
        self.consumer: Consumer | None = None

    def open(self) -> None:
        self.open_producer(self.topics, f"windows-{self.instance_id}")
        self.consumer = Consumer(consumer_config(self.topics.group("windows"), **{
            "group.instance.id": f"{self.instance_id}-windows",
            "session.timeout.ms": 30000,
        }))
        self.consumer.subscribe([self.topics.windows_in], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        self.idle = IdleBackoff(self.consumer, self.stop)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        self.close_producer()

    # ---- assignment: restore from the changelog -----------------------------------------------
    def _on_assign(self, consumer, partitions) -> None:
        restored = restore(self.topics.windows, [tp.partition for tp in partitions], _state_decoder.decode)
        for key, (partition, state) in restored.items():
            if state is not None:
                self.states[key], self.partition_of[key] = state, partition
                self._schedule(key)
        log.info("windows: assigned partitions %s, %d keys with open windows",
                 [tp.partition for tp in partitions], sum(1 for _p, s in restored.values() if s is not None))

    def _on_revoke(self, consumer, partitions) -> None:
        revoked = {tp.partition for tp in partitions}
        for key in [k for k, p in self.partition_of.items() if p in revoked]:
            self.states.pop(key, None)
            self.partition_of.pop(key, None)
            self._closes.pop(key, None)

    # ---- timers -------------------------------------------------------------------------------
    def _spec_of(self, key: bytes) -> W.WindowSpec | None:
        slug = json.loads(key)[0]
        workflow = self.registry.live().get(slug)
        window = workflow.trigger.config.get("window") if workflow is not None and workflow.trigger.type == "kafka" else None
        return W.WindowSpec.from_config(window) if window else None

    def _schedule(self, key: bytes) -> None:
        spec = self._spec_of(key)
        closes = W.next_close(spec, self.states.get(key)) if spec else None
        if closes is None:
            self._closes.pop(key, None)
        elif self._closes.get(key) != closes:
            self._closes[key] = closes
            heapq.heappush(self._heap, (closes, key))

    def _due(self, now_ms: int, limit: int = 1000) -> list[_Close]:
        due = []
        while self._heap and self._heap[0][0] <= now_ms and len(due) < limit:
            closes, key = heapq.heappop(self._heap)
            if self._closes.get(key) == closes:
                due.append(_Close(key))
        return due

    def _next_close(self) -> int | None:
        while self._heap and self._closes.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    # ---- one batch ----------------------------------------------------------------------------
    def run_once(self) -> int:
        next_close = self._next_close()
        until = None if next_close is None else max(0.0, next_close / 1000 - self.clock())
        msgs = poll_batch(self.consumer, self.batch_size, self.idle.timeout(0.1 if until is None else min(0.1, until)))
        due = self._due(int(self.clock() * 1000))
        if not msgs and not due:
            self.idle.idle(max_pause=until)
            return 0
        self.idle.busy()
        self.commit_isolated([*due, *msgs], self._process, self._rewind)
        return len(msgs) + len(due)

    def _rewind(self, units) -> None:
        rewind(self.consumer, [unit for unit in units if not isinstance(unit, _Close)])
        for unit in units:
            if isinstance(unit, _Close) and unit.key in self._closes:
                heapq.heappush(self._heap, (self._closes[unit.key], unit.key))

    def dead_letter_unit(self, unit, reason: str) -> None:
        if isinstance(unit, _Close):
            self._closes.pop(unit.key, None)  # parked until the key's next record
            log.error("windows: closing %s failed and is parked: %s", unit.key.decode(), reason)
            return
        dead_letter_alone(self, self.topics.dlq, unit, reason)

    def _process(self, units: list) -> None:
        now_ms = int(self.clock() * 1000)
        working: dict[bytes, W.KeyWindows | None] = {}
        partitions: dict[bytes, int] = {}
        counts: Counter = Counter()
        producer = self.producer
        producer.begin_transaction()
        msgs = [unit for unit in units if not isinstance(unit, _Close)]

        def current(key):
            return working[key] if key in working else self.states.get(key)

        for msg in msgs:
            try:
                item = codec.decode_window_input(msg.value(), msg.headers())
            except (codec.DecodeError, ValueError, TypeError) as exc:
                dead_letter(producer, self.topics.dlq, msg, self.stage, f"undecodable window input: {exc}")
                counts["dlq"] += 1
                continue
            spec = self._spec_of(msg.key())
            if spec is None:
                counts["dropped_unpublished"] += 1  # the workflow is no longer live with a window
                continue
            state, late = W.add(spec, current(msg.key()), item.ts, item.values, now_ms)
            working[msg.key()] = state
            partitions[msg.key()] = msg.partition()
            if late:
                counts["late"] += 1
                counts[f"late:{item.slug}"] += 1
        # Close what is due: the keys whose timers fired, and any key this batch touched.
        closing = {unit.key for unit in units if isinstance(unit, _Close)} | set(working)
        out = []
        for key in closing:
            state, spec = current(key), self._spec_of(key)
            if state is None or spec is None:
                continue
            closed = W.due(spec, state, now_ms)
            if not closed:
                continue
            slug, window_key_value = json.loads(key)
            for window in closed:
                out.extend(self._close(slug, window_key_value, spec, window, state.late, counts))
            working[key] = W.without(state, closed)
            partitions.setdefault(key, self.partition_of.get(key, 0))
        for key, state in working.items():
            value = None if state is None else msgspec.json.encode(state)
            out.append((self.topics.windows, key, value, []))
        for topic, key, value, headers in out:
            check_size(topic, value, key, headers)
            producer.produce(topic, key=key, value=value, headers=headers)
        if msgs:
            producer.send_offsets_to_transaction(consumed_offsets(msgs), self.consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(60)
        for key, state in working.items():
            if state is None:
                self.states.pop(key, None)
                self.partition_of.pop(key, None)
            else:
                self.states[key] = state
                self.partition_of[key] = partitions.get(key, self.partition_of.get(key, 0))
            self._schedule(key)
        counts["records"] += len(msgs)
        self.stats.update(counts)

    def _close(self, slug: str, key, spec: W.WindowSpec, window: W.Window, late: int, counts: Counter) -> list:
        """The records a closed window writes: its run's start, and its result on emit_topic."""
        result = W.result(spec, key, window)
        version = self.registry.live_version(slug)
        records = []
        if version is not None:
            start = StartRun(run_id=W.run_id(slug, key, window), workflow=slug, version=version, input=result,
                             trigger={"type": "window", "key": key, "window_start": result["window_start"],
                                      "window_end": result["window_end"], "records": window.records,
                                      "late_records": late},
                             started_by="trigger:window", ts=time.time())
            records.append((self.topics.runs, start.run_id.encode(), codec.encode(start), codec.headers_for(start)))
            counts["runs_started"] += 1
        if spec.emit_topic:
            emitted_key = key if isinstance(key, str) else json.dumps(key, default=str)
            records.append((spec.emit_topic, None if key is None else emitted_key.encode(),
                            msgspec.json.encode(result), [("sluice-workflow", slug.encode())]))
        counts["windows_closed"] += 1
        return records
