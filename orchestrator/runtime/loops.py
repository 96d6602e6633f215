"""Pieces every runtime loop shares: stop flags, idle back-off, transactions, dead letters."""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from django.conf import settings

from .. import messages
from .kafka import producer_config

log = logging.getLogger(__name__)

class Loop:
    """A runtime loop: open its Kafka clients, run batches until `stop` is set, close them.

    Subclasses define open(), run_once() and close(), and set `self.stop`.
    """

    stop: threading.Event

    def open(self) -> None:
        raise NotImplementedError

    def run_once(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        self.open()
        try:
            while not self.stop.is_set():
                self.run_once()
        finally:
            self.close()

    def abort_batch(self, exc: KafkaException, msgs: list[Message], what: str) -> None:
        """A batch's transaction failed: abort it and seek back so its records are read again.

        A fatal error (this producer was fenced by a newer incarnation) is raised instead: the
        runner stops rather than work on with a producer that can no longer commit.
        """
        if is_fatal(exc):
            raise exc
        log.warning("%s: batch of %d records aborted, it will be read again: %s", what, len(msgs), exc)
        try:
            self.producer.abort_transaction(30)
        except KafkaException as abort_exc:
            if is_fatal(abort_exc):
                raise
        rewind(self.consumer, msgs)


class IdleBackoff:
    """Keeps an idle consumer from spinning on the embedded broker, without slowing a busy one.

    That broker answers fetches at once instead of holding them until data arrives (it
    ignores the long-poll wait), so librdkafka refetches in a tight loop while partitions are
    assigned: ~30% of a core per idle consumer. So, after a quiet spell, the assignment is
    paused, and every 20 ms (100 ms after a second of quiet) the high watermarks are compared
    with our positions (a cheap ListOffsets request); it is resumed only when there is
    something new. Two measured librdkafka behaviours shape this:
    - a resume is acted on only when the broker thread next wakes, up to a second later, so
      right after resuming we send one more ListOffsets request to wake it (delivery then
      takes milliseconds instead of up to 1 s);
    - pausing on a blind timer drops in-flight fetches as outdated and stalled delivery for
      seconds, so we pause only after `GRACE` seconds without records.
    On a real broker the poll itself waits and none of this runs.
    """

    FAST_CHECK = 0.02
    SLOW_CHECK = 0.1
    SLOW_AFTER = 1.0
    GRACE = 0.25
    SETTLE = 2.0

    def __init__(self, consumer: Consumer, stop: threading.Event):
        self.consumer = consumer
        self.stop = stop
        self.enabled = settings.SLUICE_EMBEDDED_BROKER
        self.paused: list = []
        self.idle_since: float | None = None
        self._baseline: dict[tuple[str, int], int] = {}
        self._first_seen: dict[tuple[str, int], float] = {}

    def timeout(self, busy_timeout: float) -> float:
        """How long the next poll may wait: not at all while paused (nothing will come)."""
        return 0.0 if self.paused else busy_timeout

    def busy(self) -> None:
        self.idle_since = None

    def idle(self, max_pause: float | None = None) -> None:
        """Called after an empty poll; waits at most `max_pause` (a timer is due)."""
        now = time.monotonic()
        if self.idle_since is None:
            self.idle_since = now
        if not self.enabled:
            return
        check = self.SLOW_CHECK if now - self.idle_since > self.SLOW_AFTER else self.FAST_CHECK
        if max_pause is not None:
            check = max(0.0, min(check, max_pause))
        assignment = self.consumer.assignment()
        if not assignment:
            self.stop.wait(check)
            return
        if self.paused != assignment:
            if now - self.idle_since < self.GRACE:
                return  # recently busy: keep fetching, records may be on their way
            if not self._pause(assignment):
                return
        self.stop.wait(check)
        if self._has_new_records(assignment):
            self.consumer.resume(assignment)
            self.paused = []
            self.idle_since = time.monotonic()
            self._wake_fetcher(assignment)

    def _pause(self, assignment) -> bool:
        """Pause, noting where each partition's data ends; False if it is too early to know."""
        now = time.monotonic()
        starts = {}
        unread = [tp for tp in self.consumer.position(assignment) if tp.offset < 0]
        committed = {(tp.topic, tp.partition): tp.offset
                     for tp in (self.consumer.committed(unread, timeout=5) if unread else [])}
        for tp in unread:
            key = (tp.topic, tp.partition)
            if committed.get(key, -1) >= 0:
                starts[key] = committed[key]
            elif now - self._first_seen.setdefault(key, now) > self.SETTLE:
                # Never read and nothing committed: once the fetcher has surely started, the
                # data that was there was skipped on purpose (reading from the end).
                starts[key] = self.consumer.get_watermark_offsets(tp, timeout=2, cached=False)[1]
            else:
                return False
        self._baseline.update(starts)
        self.consumer.pause(assignment)
        self.paused = assignment
        return True

    def _has_new_records(self, assignment) -> bool:
        try:
            for tp in self.consumer.position(assignment):
                _low, high = self.consumer.get_watermark_offsets(tp, timeout=2, cached=False)
                position = tp.offset if tp.offset >= 0 else self._baseline.get((tp.topic, tp.partition), 0)
                if high > position:
                    return True
        except KafkaException:
            return True  # when in doubt, read
        return False

    def _wake_fetcher(self, assignment) -> None:
        try:
            self.consumer.get_watermark_offsets(assignment[0], timeout=2, cached=False)
        except KafkaException:
            pass


def poll_batch(consumer: Consumer, max_records: int, timeout: float) -> list[Message]:
    """Up to `max_records` records, returning as soon as one is there.

    `consume(n, timeout)` waits out its whole timeout unless n records are ready, which adds
    that timeout to every hop of a run at moderate load. Waiting for the first record with
    poll() and then draining what is already fetched with consume(timeout=0) does not.
    Errors (other than end-of-partition) are logged and dropped.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    batch = [first]
    if max_records > 1:
        batch.extend(consumer.consume(max_records - 1, timeout=0))
    records = []
    for msg in batch:
        error = msg.error()
        if error is None:
            records.append(msg)
        elif error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error on %s: %s", msg.topic(), error)
    return records


def transactional_producer(transactional_id: str) -> Producer:
    """A transactional producer. init_transactions() with a stable id fences any earlier
    incarnation (e.g. a runner killed with -9) and aborts its open transaction, which would
    otherwise block read_committed readers on the embedded broker."""
    producer = Producer(producer_config(**{
        "transactional.id": transactional_id,
        "transaction.timeout.ms": 60000,
        "linger.ms": 2,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000,
    }))
    producer.init_transactions(60)
    return producer


def is_fatal(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return bool(error and hasattr(error, "fatal") and (error.fatal() or error.code() == KafkaError._FENCED))


def dead_letter(producer: Producer, dlq_topic: str, msg: Message, stage: str, reason: str) -> None:
    """Copy `msg` to the dead-letter topic with headers saying why. Inside the caller's
    transaction, so the record is moved exactly once: it never vanishes and never repeats."""
    headers = list(msg.headers() or [])
    headers += [
        (messages.DLQ_ERROR, reason[:2000].encode()),
        (messages.DLQ_STAGE, stage.encode()),
        (messages.DLQ_SOURCE_TOPIC, (msg.topic() or "").encode()),
        (messages.DLQ_SOURCE_PARTITION, str(msg.partition()).encode()),
        (messages.DLQ_SOURCE_OFFSET, str(msg.offset()).encode()),
        (messages.DLQ_FAILED_AT, f"{time.time():.3f}".encode()),
    ]
    producer.produce(dlq_topic, key=msg.key(), value=msg.value(), headers=headers)
    log.warning("dead-lettered %s[%s]@%s (%s): %s", msg.topic(), msg.partition(), msg.offset(), stage, reason)


def consumed_offsets(messages_: list[Message]) -> list:
    """Next offsets to commit for a batch: one past the last message of each partition."""
    from confluent_kafka import TopicPartition

    last: dict[tuple[str, int], int] = {}
    for msg in messages_:
        last[(msg.topic(), msg.partition())] = msg.offset()
    return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]


def rewind(consumer: Consumer, messages_: list[Message]) -> None:
    """Seek back to the first message of each partition of an aborted batch."""
    from confluent_kafka import TopicPartition

    first: dict[tuple[str, int], int] = {}
    for msg in messages_:
        first.setdefault((msg.topic(), msg.partition()), msg.offset())
    for (topic, partition), offset in first.items():
        try:
            consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            log.warning("could not seek %s[%s] back to %s: %s", topic, partition, offset, exc)
