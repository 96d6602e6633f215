"""Kafka triggers: a live workflow's topic -> filter -> StartRun on wf.runs (or, for a windowed
trigger, the record re-keyed to wf.windows.in for the window loop).

Each live workflow with a Kafka trigger has its own consumer group (`trigger.<slug>.<topic>`),
as in Kestra and Kafka Streams: its position, pause, rate limit and lag are its own, and
workflows on one topic never take records from each other. Each record that passes the
filter starts exactly one run, with a run id derived from the record's coordinates
(`<slug>-<topic>-<partition>-<offset>`), in the same transaction as the offset commit, so a
redelivered record never starts a second run.

Where a trigger starts reading (`start_from`): `published` (the default) starts at the first
record written after the workflow went live (`offsets_for_times`), so every record produced
after publishing starts its run, also on a topic created after publishing, and a workflow
published again after a spell unpublished does not start runs for the records of that spell;
`earliest` starts at the beginning of the topic; `latest` at its end when the trigger is first
assigned. Otherwise the committed offset rules, across restarts and pauses. A topic that does
not exist yet is picked up within about a second of its creation.

Pausing (a TriggerControl record on wf.definitions, kept across restarts) stops reading: records
wait in the topic. `max_runs_per_second` limits how fast runs start, also while a backlog
drains after a resume.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import Counter

import msgspec
from confluent_kafka import Consumer, KafkaException, TopicPartition
from django.conf import settings

from .. import expressions
from .. import windows as W
from ..messages import StartRun, WindowInput
from . import codec, metrics
from .definitions import DefinitionRegistry
from .kafka import consumer_config
from .loops import IdleBackoff, Loop, check_size, consumed_offsets, dead_letter, poll_batch, rewind
from .topics import Topics
from .window_loop import window_key

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0


def decode_value(raw: bytes | None):
    """A user record's value as the workflow sees it: JSON if it is JSON, else text, else base64."""
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}


def record_info(msg) -> dict:
    key = msg.key()
    if key is not None:
        try:
            key = key.decode("utf-8")
        except UnicodeDecodeError:
            key = key.hex()
    timestamp_type, timestamp = msg.timestamp()
    return {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "key": key,
        "headers": {name: (value or b"").decode("utf-8", "replace") for name, value in (msg.headers() or [])},
        "timestamp": timestamp / 1000.0 if timestamp_type else None,
    }


def trigger_run_id(slug: str, topic: str, partition: int, offset: int) -> str:
    return f"{slug}-{topic}-{partition}-{offset}"


class TokenBucket:
    """At most `rate` per second on average, bursts of up to one second's worth."""

    def __init__(self, rate: float | None):
        self.rate = rate
        self.tokens = rate or 0.0
        self.at = time.monotonic()

    def available(self) -> int:
        if not self.rate:
            return 1 << 30
        now = time.monotonic()
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.at) * self.rate)
        self.at = now
        return int(self.tokens)

    def take(self, count: int) -> None:
        if self.rate:
            self.tokens -= count

    def batch(self) -> int:
        """How many tokens to gather before reading: a fifth of a second's worth, so a throttled
        trigger still commits in batches rather than a transaction per record."""
        return 1 if not self.rate else max(1, int(self.rate / 5))

    def wait_seconds(self) -> float:
        missing = self.batch() - self.tokens
        return 0.0 if not self.rate or missing <= 0 else missing / self.rate


class WorkflowTrigger(Loop):
    """One live workflow's Kafka trigger: its own consumer group, producer and position."""

    stage = "trigger"

    def __init__(self, topics: Topics, registry: DefinitionRegistry, instance_id: str, slug: str, topic: str,
                 stop: threading.Event, batch_size: int = 500):
        self.topics = topics
        self.registry = registry
        self.instance_id = instance_id
        self.slug = slug
        self.topic = topic
        self.stop = stop
        self.batch_size = batch_size
        self.stats: Counter = Counter()
        self.consumer: Consumer | None = None
        self.paused = False
        self.bucket = TokenBucket(None)
        self._assigned_at: dict[int, int] = {}  # where each partition started, until it is read

    def open(self) -> None:
        name = f"{self.instance_id}-trigger-{self.slug}"
        self.open_producer(self.topics, name)
        self.consumer = Consumer(consumer_config(self.topics.group(f"trigger.{self.slug}.{self.topic}"), **{
            "group.instance.id": name,
            "session.timeout.ms": 30000,
            # A topic created after its workflow was published is seen within about a second.
            "topic.metadata.refresh.interval.ms": 1000,
        }))
        self.consumer.subscribe([self.topic], on_assign=self._on_assign)
        self.idle = IdleBackoff(self.consumer, self.stop)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        self.close_producer()

    def workflow(self):
        return self.registry.live().get(self.slug)

    # ---- where to start -----------------------------------------------------------------------
    def _on_assign(self, consumer, partitions) -> None:
        workflow = self.workflow()
        start_from = (workflow.trigger.config.get("start_from") if workflow else None) or "published"
        since = self.registry.live_since(self.slug)
        started_at = self.registry.trigger_start(self.slug, self.topic)
        positions = []
        for tp in consumer.committed(partitions, timeout=10):
            low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10, cached=False)
            if start_from == "published" and started_at is not None:
                # Never before where the topic ended when the workflow (re)went live.
                offset = max(tp.offset, min(started_at.get(str(tp.partition), low), high))
            elif start_from == "published" and since is not None:
                # A live version recorded without offsets: go by record times instead.
                found = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, since)], timeout=10)
                published = found[0].offset if found and found[0].offset >= 0 else high
                offset = max(tp.offset, min(published, high))
            elif tp.offset >= 0:
                offset = tp.offset
            else:
                offset = low if start_from == "earliest" else high
            positions.append(TopicPartition(tp.topic, tp.partition, offset))
            self._assigned_at[tp.partition] = offset
        consumer.assign(positions)

    # ---- one batch ----------------------------------------------------------------------------
    def run_once(self) -> int:
        workflow = self.workflow()
        if workflow is None:
            self.stop.wait(0.2)
            return 0
        if self._hold(self.registry.paused(self.slug)):
            return 0
        self.bucket.rate = workflow.trigger.config.get("max_runs_per_second") or None
        allowed = self.bucket.available()
        if allowed < self.bucket.batch():
            self.stop.wait(min(0.2, self.bucket.wait_seconds()))
            return 0
        msgs = poll_batch(self.consumer, min(self.batch_size, allowed), self.idle.timeout(0.1))
        if not msgs:
            self.idle.idle()
            return 0
        self.idle.busy()
        self.commit_isolated(msgs, lambda chunk: self._process(workflow, chunk), lambda units: rewind(self.consumer, units))
        return len(msgs)

    def _hold(self, paused: bool) -> bool:
        """While paused, keep the group membership and read nothing: records wait in the topic."""
        if paused != self.paused:
            assignment = self.consumer.assignment()
            if paused and assignment:
                self.consumer.pause(assignment)
            elif assignment:
                self.consumer.resume(assignment)
                self.idle.paused = []
            self.paused = paused
            log.info("trigger of %s %s", self.slug, "paused" if paused else "resumed")
        if paused:
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.pause(assignment)  # a rebalance may have handed over new partitions
            # Polled now and then to stay in the group; a record fetched before the pause is
            # put back, never dropped.
            msg = self.consumer.poll(0)
            if msg is not None and msg.error() is None:
                self.consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
            self.stop.wait(0.2)
        return paused

    def _process(self, workflow, msgs) -> None:
        counts: Counter = Counter()
        producer = self.producer
        producer.begin_transaction()
        version = self.registry.live_version(self.slug)
        window = workflow.trigger.config.get("window")
        window_spec = W.WindowSpec.from_config(window) if window else None
        for msg in msgs:
            value, record = decode_value(msg.value()), record_info(msg)
            context = {"trigger": value, "record": record}
            try:
                matched = workflow.trigger.filter is None or expressions.truthy(workflow.trigger.filter, context)
            except expressions.ExpressionError as exc:
                dead_letter(producer, self.topics.dlq, msg, self.stage, f"filter of {self.slug} failed: {exc}",
                            workflow=self.slug)
                counts["dlq"] += 1
                continue
            if not matched:
                counts["skipped"] += 1
                continue
            if len(msg.value() or b"") > settings.SLUICE_MAX_PAYLOAD_BYTES:
                dead_letter(producer, self.topics.dlq, msg, self.stage,
                            f"record of {len(msg.value())} bytes is over the run input limit of "
                            f"{settings.SLUICE_MAX_PAYLOAD_BYTES} bytes (SLUICE_MAX_PAYLOAD_BYTES); "
                            f"no run of {self.slug} started", workflow=self.slug)
                counts["dlq"] += 1
                continue
            if window_spec is not None:
                problem = self._to_window(producer, window_spec, msg, value, record)
                if problem:
                    dead_letter(producer, self.topics.dlq, msg, self.stage, f"window of {self.slug}: {problem}",
                                workflow=self.slug)
                    counts["dlq"] += 1
                else:
                    counts["windowed"] += 1
                continue
            start = StartRun(
                run_id=trigger_run_id(self.slug, msg.topic(), msg.partition(), msg.offset()),
                workflow=self.slug, version=version, input=value,
                trigger={"type": "kafka", **record}, started_by=f"trigger:{msg.topic()}", ts=time.time())
            encoded, headers = codec.encode(start), codec.headers_for(start)
            check_size(self.topics.runs, encoded, None, headers)
            producer.produce(self.topics.runs, key=start.run_id.encode(), value=encoded, headers=headers)
            counts["runs_started"] += 1
        producer.send_offsets_to_transaction(consumed_offsets(msgs), self.consumer.consumer_group_metadata(), 30)
        committing = time.perf_counter()
        producer.commit_transaction(60)
        metrics.committed(self.stage, time.perf_counter() - committing)
        self.bucket.take(counts["runs_started"] + counts["windowed"])
        counts["records"] += len(msgs)
        self.stats.update(counts)
        metrics.trigger_batch(self.slug, counts)

    def _to_window(self, producer, spec: W.WindowSpec, msg, value, record) -> str | None:
        """Re-key a matching record by its window key for the window loop; why not, if not."""
        context = {"trigger": value, "record": record}
        try:
            key = record["key"] if spec.key is None else expressions.render(spec.key, context)
            values = {name: None if aggregate.of is None else expressions.evaluate(aggregate.of, context)
                      for name, aggregate in spec.aggregates.items()}
        except expressions.ExpressionError as exc:
            return str(exc)
        for name, aggregate in spec.aggregates.items():
            problem = W.check_value(aggregate, values[name]) if aggregate.of is not None else None
            if problem:
                return f"aggregates.{name}: {problem}"
        _kind, timestamp = msg.timestamp()
        item = WindowInput(slug=self.slug, key=key, ts=timestamp if timestamp > 0 else int(time.time() * 1000),
                           values=values, source={"topic": msg.topic(), "partition": msg.partition(),
                                                  "offset": msg.offset()})
        encoded = msgspec.json.encode(item)
        check_size(self.topics.windows_in, encoded)
        producer.produce(self.topics.windows_in, key=window_key(self.slug, key), value=encoded,
                         headers=codec.headers_for(item))
        return None

    def lag(self) -> int | None:
        """Records not yet read on the partitions this runner holds (None: not known yet)."""
        if self.consumer is None:
            return None
        total = 0
        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                _low, high = self.consumer.get_watermark_offsets(tp, timeout=2, cached=False)
                position = tp.offset if tp.offset >= 0 else self._assigned_at.get(tp.partition, high)
                total += max(0, high - position)
        except (KafkaException, RuntimeError):  # RuntimeError: the trigger closed its consumer meanwhile
            return None
        return total


class TriggerSupervisor:
    """Runs one WorkflowTrigger per live workflow with a Kafka trigger, in a thread each, started
    and stopped as workflows are published, changed and unpublished."""

    stage = "triggers"

    def __init__(self, topics: Topics, registry: DefinitionRegistry, instance_id: str, stop: threading.Event):
        self.topics = topics
        self.registry = registry
        self.instance_id = instance_id
        self.stop = stop
        self.running: dict[str, tuple[WorkflowTrigger, threading.Event, threading.Thread]] = {}
        self.failure: BaseException | None = None
        self._refused: set[str] = set()
        self.retired: Counter = Counter()

    @property
    def stats(self) -> Counter:
        total = Counter(self.retired)
        for slug, (trigger, _stop, _thread) in list(self.running.items()):
            total.update({f"{key}:{slug}" if key in ("records", "runs_started", "skipped") else key: value
                          for key, value in trigger.stats.items()})
            total.update({key: value for key, value in trigger.stats.items() if key in ("records", "runs_started",
                                                                                        "skipped")})
        return total

    def wanted(self) -> dict[str, str]:
        """slug -> topic of every live workflow with a Kafka trigger on a topic it may use."""
        wanted = {}
        for slug, workflow in self.registry.live().items():
            topic = workflow.trigger.topic
            if workflow.trigger.type != "kafka" or not topic:
                continue
            if topic.startswith(self.topics.prefix):
                if slug not in self._refused:
                    self._refused.add(slug)
                    log.error("triggers: %s listens on %s, one of Sluice's own topics: ignored", slug, topic)
                continue
            wanted[slug] = topic
        return wanted

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.registry.refresh(timeout=2)
                self._reconcile(self.wanted())
                for slug, (_trigger, _stop, thread) in list(self.running.items()):
                    if not thread.is_alive() and self.failure is not None:
                        raise self.failure
                self.stop.wait(REFRESH_SECONDS)
        finally:
            self._reconcile({})

    def _reconcile(self, wanted: dict[str, str]) -> None:
        for slug in [s for s, (trigger, _stop, _thread) in self.running.items() if wanted.get(s) != trigger.topic]:
            trigger, stop, thread = self.running.pop(slug)
            stop.set()
            thread.join(30)
            self.retired.update({key: value for key, value in trigger.stats.items()
                                 if key in ("records", "runs_started", "skipped", "dlq")})
            log.info("triggers: stopped following %s for %s", trigger.topic, slug)
        for slug, topic in wanted.items():
            if slug in self.running or self.stop.is_set():
                continue
            stop = threading.Event()
            trigger = WorkflowTrigger(self.topics, self.registry, self.instance_id, slug, topic, _Either(self.stop, stop))
            thread = threading.Thread(target=self._guard, args=(trigger,), name=f"trigger-{slug}", daemon=True)
            self.running[slug] = (trigger, stop, thread)
            thread.start()
            log.info("triggers: following %s for %s", topic, slug)

    def _guard(self, trigger: WorkflowTrigger) -> None:
        try:
            trigger.run()
        except BaseException as exc:  # noqa: BLE001 - the supervisor re-raises it: the runner stops
            log.exception("triggers: the trigger of %s stopped with an error", trigger.slug)
            self.failure = exc

    def lags(self) -> dict[str, int]:
        return {slug: lag for slug, (trigger, _s, _t) in list(self.running.items())
                if (lag := trigger.lag()) is not None}


class _Either:
    """An Event-like stop flag set when either of two events is (the runner's, or this trigger's)."""

    def __init__(self, first: threading.Event, second: threading.Event):
        self.first, self.second = first, second

    def is_set(self) -> bool:
        return self.first.is_set() or self.second.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            remaining = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if remaining <= 0:
                break
            self.second.wait(remaining)
        return self.is_set()
