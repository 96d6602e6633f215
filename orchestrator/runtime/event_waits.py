"""Event waits: records on user topics -> EventArrived on wf.runs for open wait_for_event steps.

Open subscriptions are read from the compacted wf.waits topic. One consumer (group
`event-waits`) follows the topics they name; a record whose key expression equals a
subscription's correlation value is sent to its run as EventArrived, in the same transaction as
the offset commit. Recent records are kept briefly so a subscription that is read after its
event arrived still matches.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter, defaultdict, deque

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from django.conf import settings

from ..messages import EventArrived, WaitSubscription
from ..steps import wait_for_event
from . import codec
from .kafka import consumer_config
from .loops import IdleBackoff, Loop, check_size, consumed_offsets, dead_letter_alone, poll_batch, rewind
from .topics import Topics
from .triggers import decode_value, record_info

log = logging.getLogger(__name__)

RECENT_RECORDS_PER_TOPIC = 2000
REFRESH_SECONDS = 1.0


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


class EventWaitLoop(Loop):
    stage = "waits"

    def __init__(self, topics: Topics, instance_id: str, stop: threading.Event, batch_size: int = 500):
        self.topics = topics
        self.instance_id = instance_id
        self.stop = stop
        self.batch_size = batch_size
        self.stats: Counter = Counter()
        self.subscribed: set[str] = set()
        self.recent: dict[str, deque] = defaultdict(lambda: deque(maxlen=RECENT_RECORDS_PER_TOPIC))
        # Waits already matched ("run/step#attempt"), so one is sent a record only once.
        self._fired: set[str] = set()
        self._pending_events: list[EventArrived] = []
        self._refused: set[str] = set()
        self._last_refresh = 0.0
        self.consumer: Consumer | None = None
        self.waits: WaitIndex | None = None

    def open(self) -> None:
        name = f"{self.instance_id}-event-waits"
        self.open_producer(self.topics, name)
        self.consumer = Consumer(consumer_config(self.topics.group("event-waits"), **{
            "group.instance.id": name,
            "session.timeout.ms": 30000,
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

    def _allowed(self, topic: str) -> bool:
        if not topic.startswith(self.topics.prefix):
            return True
        if topic not in self._refused:
            self._refused.add(topic)
            log.error("waits: a wait names %s, one of Sluice's own topics: ignored", topic)
        return False

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._last_refresh < REFRESH_SECONDS:
            return
        self._last_refresh = now
        for sub in self.waits.poll():
            self._match_recent(sub)
        # A closed wait can no longer match: forget that it fired (the set would only grow).
        open_waits = {key for subs in self.waits.by_topic.values() for key in subs}
        self._fired = {key for key in self._fired if key.partition("#")[0] in open_waits}
        wanted = {topic for topic in self.waits.topics() if self._allowed(topic)}
        if wanted != self.subscribed:
            if wanted:
                self.consumer.subscribe(sorted(wanted), on_assign=self._on_assign)
            else:
                self.consumer.unsubscribe()
            log.info("waits: following %s", ", ".join(sorted(wanted)) or "nothing")
            self.subscribed = wanted

    def _on_assign(self, consumer, partitions) -> None:
        committed = consumer.committed(partitions, timeout=10)
        for tp in committed:
            if tp.offset < 0:
                tp.offset = self._wait_start(consumer, tp)
        consumer.assign(committed)

    def _wait_start(self, consumer, tp) -> int:
        """First read of a topic that open waits watch: start a little before the oldest wait
        was opened, so an event written while we were subscribing is not skipped."""
        opened = self.waits.earliest_open(tp.topic)
        end = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10, cached=False)[1]
        if opened is None:
            return end
        found = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, max(0, opened - 5000))], timeout=10)
        return found[0].offset if found and found[0].offset >= 0 else end

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
            log.error("waits: %d look-back event(s) dropped: %s", len(self._pending_events), reason)
            self._pending_events = []
            return
        dead_letter_alone(self, self.topics.dlq, unit, reason)

    def _process(self, msgs) -> None:
        counts: Counter = Counter()
        producer = self.producer
        producer.begin_transaction()
        events, self._pending_events = self._pending_events, []
        for msg in msgs:
            if msg.topic() not in self.waits.by_topic:
                continue
            if len(msg.value() or b"") > settings.SLUICE_MAX_PAYLOAD_BYTES:
                counts["events_too_large"] += 1
                continue
            value, record = decode_value(msg.value()), record_info(msg)
            self.recent[msg.topic()].append((value, record))
            events.extend(self._match(msg.topic(), value, record))
        for event in events:
            encoded = codec.encode(event)
            check_size(self.topics.runs, encoded)
            producer.produce(self.topics.runs, key=event.run_id.encode(), value=encoded, headers=codec.headers_for(event))
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
