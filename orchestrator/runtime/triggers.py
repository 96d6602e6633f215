"""Kafka triggers and event waits: user topics -> StartRun / EventArrived on wf.runs.

One consumer (group `sluice-triggers`) follows the union of
- the topics of live workflows with a `kafka` trigger: each record that passes a workflow's
  filter starts exactly one run of it, with a run id derived from the record's coordinates
  (`<slug>-<topic>-<partition>-<offset>`), in the same transaction as the offset commit, so a
  redelivered record never starts a second run;
- the topics named by open `wait_for_event` subscriptions (read from the compacted `wf.waits`
  topic): a record whose key expression equals a subscription's correlation value is sent to
  its run as EventArrived. Recent records are kept briefly so a subscription that is read
  after its event arrived still matches.

Where a trigger starts reading (`start_from`): `published` (the default) starts at the first
record written after the workflow went live (`offsets_for_times`), so every record produced
after publishing starts its run, also on a topic created after publishing; `earliest` starts
at the beginning of the topic; `latest` at its end when the trigger is first assigned. Once
the trigger has consumed a partition, its committed offset rules, across restarts.
A topic that does not exist yet is picked up within about a second of its creation.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections import Counter, defaultdict, deque

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from django.conf import settings

from .. import expressions
from ..steps import wait_for_event
from ..messages import EventArrived, StartRun, WaitSubscription
from . import codec
from .definitions import DefinitionRegistry
from .kafka import consumer_config
from .loops import (IdleBackoff, Loop, check_size, consumed_offsets, dead_letter, dead_letter_alone, poll_batch,
                    rewind)
from .topics import Topics

log = logging.getLogger(__name__)

RECENT_RECORDS_PER_TOPIC = 2000
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


class WaitIndex:
    """Open wait_for_event subscriptions, followed from the compacted wf.waits topic."""

    def __init__(self, topic: str):
        self.topic = topic
        self.by_topic: dict[str, dict[str, WaitSubscription]] = defaultdict(dict)
        self.opened_at: dict[str, int] = {}  # subscription key -> when it was written (ms)
        self.consumer = Consumer(consumer_config(f"sluice-waits-{uuid.uuid4().hex}"))
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.consumer.pause([TopicPartition(topic, 0)])

    def poll(self) -> list[WaitSubscription]:
        """Apply new subscription records; returns the subscriptions that were opened."""
        opened = []
        # Paused between reads: an assigned partition would otherwise be refetched in a
        # tight loop on the embedded broker (see IdleBackoff).
        partition = TopicPartition(self.topic, 0)
        low, high = self.consumer.get_watermark_offsets(partition, timeout=5)
        position = self.consumer.position([partition])[0].offset
        if high <= max(position, low):
            return opened
        self.consumer.resume([partition])
        self.consumer.get_watermark_offsets(partition, timeout=5)  # wakes the fetcher (see IdleBackoff)
        batch = poll_batch(self.consumer, 1000, 0.5)
        self.consumer.pause([partition])
        for msg in batch:
            key = msg.key().decode()
            for subs in self.by_topic.values():
                subs.pop(key, None)
            if msg.value() is None:
                continue
            try:
                sub = codec.decode_wait(msg.value())
            except codec.DecodeError:
                log.error("waits: undecodable subscription %s", key)
                continue
            self.by_topic[sub.topic][key] = sub
            _kind, timestamp = msg.timestamp()
            self.opened_at[key] = timestamp if timestamp > 0 else int(time.time() * 1000)
            opened.append(sub)
        return opened

    def earliest_open(self, topic: str) -> int | None:
        """When the oldest open subscription on `topic` was written (ms), if any."""
        times = [self.opened_at[key] for key in self.by_topic.get(topic, {}) if key in self.opened_at]
        return min(times) if times else None

    def topics(self) -> set[str]:
        return {topic for topic, subs in self.by_topic.items() if subs}

    def close(self) -> None:
        self.consumer.close()


class TriggerLoop(Loop):
    stage = "trigger"

    def __init__(self, topics: Topics, registry: DefinitionRegistry, instance_id: str, stop: threading.Event,
                 batch_size: int = 500):
        self.topics = topics
        self.registry = registry
        self.instance_id = instance_id
        self.stop = stop
        self.batch_size = batch_size
        self.stats: Counter = Counter()
        self.subscribed: set[str] = set()
        self.recent: dict[str, deque] = defaultdict(lambda: deque(maxlen=RECENT_RECORDS_PER_TOPIC))
        # Waits already matched ("run/step#attempt"), so one is sent a record only once.
        self._fired: set[str] = set()
        self._pending_events: list[EventArrived] = []
        # (slug, live since, topic, partition) -> first offset that workflow's trigger reads.
        self._starts: dict[tuple, int] = {}
        self._refused: set[str] = set()
        self._last_refresh = 0.0
        self.consumer: Consumer | None = None
        self.waits: WaitIndex | None = None

    def open(self) -> None:
        name = f"{self.instance_id}-triggers"
        self.open_producer(self.topics, name)
        self.consumer = Consumer(consumer_config(self.topics.group("triggers"), **{
            "group.instance.id": name,
            "session.timeout.ms": 30000,
            # A topic created after its workflow was published is seen within about a second.
            "topic.metadata.refresh.interval.ms": 1000,
        }))
        self.waits = WaitIndex(self.topics.waits)
        self.idle = IdleBackoff(self.consumer, self.stop)

    def close(self) -> None:
        for closeable in (self.consumer, self.waits):
            if closeable is not None:
                closeable.close()
        self.consumer = self.waits = None
        self.close_producer()

    # ---- what to follow -----------------------------------------------------------------------
    def _allowed(self, topic: str, what: str) -> bool:
        """Sluice's own topics are never a workflow's (validation refuses them; a definition
        published before that rule existed is refused here again)."""
        if not topic.startswith(self.topics.prefix):
            return True
        if (what, topic) not in self._refused:
            self._refused.add((what, topic))
            log.error("triggers: %s names %s, one of Sluice's own topics: ignored", what, topic)
        return False

    def _kafka_triggers(self) -> dict[str, list]:
        by_topic: dict[str, list] = defaultdict(list)
        for slug, workflow in self.registry.live().items():
            topic = workflow.trigger.topic
            if workflow.trigger.type == "kafka" and topic and self._allowed(topic, f"the trigger of {slug}"):
                by_topic[topic].append((slug, workflow))
        return by_topic

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._last_refresh < REFRESH_SECONDS:
            return
        self._last_refresh = now
        self.registry.refresh(timeout=2)
        for sub in self.waits.poll():
            self._match_recent(sub)
        # A closed wait can no longer match: forget that it fired (the set would only grow).
        open_waits = {key for subs in self.waits.by_topic.values() for key in subs}
        self._fired = {key for key in self._fired if key.partition("#")[0] in open_waits}
        wanted = set(self._kafka_triggers()) | {t for t in self.waits.topics() if self._allowed(t, "a wait")}
        if wanted != self.subscribed:
            if wanted:
                self.consumer.subscribe(sorted(wanted), on_assign=self._on_assign)
            else:
                self.consumer.unsubscribe()
            log.info("triggers: following %s", ", ".join(sorted(wanted)) or "nothing")
            self.subscribed = wanted

    def _on_assign(self, consumer, partitions) -> None:
        committed = consumer.committed(partitions, timeout=10)
        triggers = self._kafka_triggers()
        for tp in committed:
            if tp.offset >= 0:
                continue
            starts = [self._start_of(slug, workflow, tp.topic, tp.partition) for slug, workflow in
                      triggers.get(tp.topic, ())]
            if tp.topic in self.waits.by_topic:
                starts.append(self._wait_start(consumer, tp))
            tp.offset = min(starts) if starts else self._end_offset(tp.topic, tp.partition)
        consumer.assign(committed)

    def _start_of(self, slug: str, workflow, topic: str, partition: int) -> int:
        """The first offset `slug`'s trigger reads on a partition it has never consumed."""
        start_from = workflow.trigger.config.get("start_from") or "published"
        if start_from == "earliest":
            return self._begin_offset(topic, partition)
        since = self.registry.live_since(slug)
        if start_from == "latest" or since is None:
            return self._end_offset(topic, partition)
        key = (slug, since, topic, partition)
        if key not in self._starts:
            # Read the end first: if no record is as recent as `since`, everything from this end
            # on came after publishing.
            end = self._end_offset(topic, partition)
            found = self.consumer.offsets_for_times([TopicPartition(topic, partition, since)], timeout=10)
            offset = found[0].offset if found and found[0].offset >= 0 else end
            self._starts[key] = min(offset, end)
        return self._starts[key]

    def _begin_offset(self, topic: str, partition: int) -> int:
        return self.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)[0]

    def _end_offset(self, topic: str, partition: int) -> int:
        return self.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)[1]

    def _wait_start(self, consumer, tp) -> int:
        """First read of a topic that open waits watch: start a little before the oldest wait
        was opened, so an event written while we were subscribing is not skipped."""
        opened = self.waits.earliest_open(tp.topic)
        end = self._end_offset(tp.topic, tp.partition)
        if opened is None:
            return end
        found = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, max(0, opened - 5000))], timeout=10)
        return found[0].offset if found and found[0].offset >= 0 else end

    def _reads(self, slug: str, workflow, msg) -> bool:
        """Whether `slug`'s trigger takes this record (not one from before it went live)."""
        start_from = workflow.trigger.config.get("start_from") or "published"
        since = self.registry.live_since(slug)
        if start_from != "published" or since is None:
            return True
        return msg.offset() >= self._start_of(slug, workflow, msg.topic(), msg.partition())

    # ---- one batch ----------------------------------------------------------------------------
    def run_once(self) -> int:
        self._refresh()
        if not self.subscribed and not self._pending_events:
            self.stop.wait(0.2)
            return 0
        msgs = []
        if self.subscribed:
            msgs = poll_batch(self.consumer, self.batch_size, self.idle.timeout(0.1))
        if not msgs and not self._pending_events:
            self.idle.idle()
            return 0
        self.idle.busy()
        self.commit_isolated(msgs or [None], self._attempt, lambda units: rewind(self.consumer, [u for u in units if u]))
        return len(msgs)

    def _attempt(self, msgs) -> None:
        """One transaction; if it fails, its matches are forgotten (the records are read again)
        and look-back matches that were waiting stay waiting."""
        fired, pending = set(self._fired), list(self._pending_events)
        try:
            self._process([msg for msg in msgs if msg is not None])
        except BaseException:
            self._fired, self._pending_events = fired, pending
            raise

    def dead_letter_unit(self, unit, reason: str) -> None:
        if unit is None:  # only look-back events, and they cannot be committed: drop them
            log.error("triggers: %d look-back event(s) dropped: %s", len(self._pending_events), reason)
            self._pending_events = []
            return
        dead_letter_alone(self, self.topics.dlq, unit, reason)

    def _process(self, msgs) -> None:
        triggers = self._kafka_triggers()
        counts: Counter = Counter()
        producer = self.producer
        producer.begin_transaction()
        events, self._pending_events = self._pending_events, []
        for msg in msgs:
            value, record = decode_value(msg.value()), record_info(msg)
            for slug, workflow in triggers.get(msg.topic(), ()):
                if not self._reads(slug, workflow, msg):
                    counts["before_publish"] += 1
                    continue
                context = {"trigger": value, "record": record}
                try:
                    matched = workflow.trigger.filter is None or expressions.truthy(workflow.trigger.filter, context)
                except expressions.ExpressionError as exc:
                    dead_letter(producer, self.topics.dlq, msg, "trigger", f"filter of {slug} failed: {exc}")
                    counts["dlq"] += 1
                    continue
                if not matched:
                    counts[f"skipped:{slug}"] += 1
                    counts["skipped"] += 1
                    continue
                start = StartRun(
                    run_id=trigger_run_id(slug, msg.topic(), msg.partition(), msg.offset()),
                    workflow=slug, version=self.registry.live_version(slug), input=value,
                    trigger={"type": "kafka", **record}, started_by=f"trigger:{msg.topic()}", ts=time.time())
                encoded = codec.encode(start)
                if len(msg.value() or b"") > settings.SLUICE_MAX_PAYLOAD_BYTES:
                    dead_letter(producer, self.topics.dlq, msg, "trigger",
                                f"record of {len(msg.value())} bytes is over the run input limit of "
                                f"{settings.SLUICE_MAX_PAYLOAD_BYTES} bytes (SLUICE_MAX_PAYLOAD_BYTES); "
                                f"no run of {slug} started")
                    counts["dlq"] += 1
                    continue
                check_size(self.topics.runs, encoded, None, codec.headers_for(start))
                producer.produce(self.topics.runs, key=start.run_id.encode(), value=encoded,
                                 headers=codec.headers_for(start))
                counts["runs_started"] += 1
            if msg.topic() in self.waits.by_topic:
                if len(msg.value() or b"") > settings.SLUICE_MAX_PAYLOAD_BYTES:
                    counts["events_too_large"] += 1
                    continue
                self.recent[msg.topic()].append((value, record))
                events.extend(self._match(msg.topic(), value, record))
        for event in events:
            producer.produce(self.topics.runs, key=event.run_id.encode(), value=codec.encode(event),
                             headers=codec.headers_for(event))
        if msgs:
            producer.send_offsets_to_transaction(consumed_offsets(msgs), self.consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(60)
        counts["records"] += len(msgs)
        counts["events_matched"] += len(events)
        self.stats.update(counts)

    def _match(self, topic: str, value, record) -> list[EventArrived]:
        events = (self._match_one(sub, value, record) for sub in list(self.waits.by_topic.get(topic, {}).values()))
        return [event for event in events if event is not None]

    def _match_one(self, sub: WaitSubscription, value, record) -> EventArrived | None:
        fired_key = f"{sub.run_id}/{sub.step_id}#{sub.attempt}"
        if fired_key in self._fired:
            return None
        if not wait_for_event.matches(sub.key_expression, sub.correlation, value, record):
            return None
        self._fired.add(fired_key)
        return EventArrived(run_id=sub.run_id, step_id=sub.step_id, attempt=sub.attempt,
                            event={"value": value, "record": record}, ts=time.time())

    def _match_recent(self, sub: WaitSubscription) -> None:
        """A subscription read after its event may already have passed by: look back."""
        for value, record in self.recent.get(sub.topic, ()):
            event = self._match_one(sub, value, record)
            if event is not None:
                self._pending_events.append(event)
                return
