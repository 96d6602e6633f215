"""Pieces every runtime loop shares: stop flags, idle back-off, transactions, dead letters."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from django.conf import settings

from .. import messages
from .transactions import ProducerIdLog, RotatingProducer, is_fatal

log = logging.getLogger(__name__)

class Poisoned(Exception):
    """Processing a unit of work produced something that can never be committed (a record over
    the size limit, a value that cannot be encoded): isolate the unit, do not retry the batch."""


# Errors that say "the data is the problem", not the broker: the same records would fail again.
_DATA_ERRORS = {
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG, KafkaError.INVALID_TIMESTAMP,
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.POLICY_VIOLATION, KafkaError._INVALID_ARG,
    KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART,
}


def caused_by_data(exc: BaseException) -> bool:
    """True when a failed transaction was caused by what it carried, so retrying the same batch
    would fail forever; False for broker trouble (timeouts, coordinator moves, rebalances)."""
    if isinstance(exc, Poisoned):
        return True
    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        if not hasattr(error, "code"):
            return False
        if error.code() in _DATA_ERRORS:
            return True
        # An abortable error that a retry will not fix (e.g. a record the broker refused).
        return bool(error.txn_requires_abort() and not error.retriable())
    if isinstance(exc, BufferError):
        return False  # the local queue is full: wait and try again
    return True  # encoding and programming errors travel with the data


class Loop:
    """A runtime loop: open its Kafka clients, run batches until `stop` is set, close them.

    Subclasses define open(), run_once() and close(), and set `self.stop`. Their producer is a
    RotatingProducer (see transactions.py): `self.producer` is the Producer to use now.
    """

    stop: threading.Event
    txn: RotatingProducer | None = None
    consumer: Consumer | None = None
    stage = "loop"
    stats: Counter

    @property
    def producer(self) -> Producer | None:
        return self.txn.producer if self.txn is not None else None

    def open_producer(self, topics, name: str) -> None:
        """Fence the previous incarnation of `name` and start on a fresh transactional id."""
        self.txn = RotatingProducer(f"{topics.prefix}{name}", ProducerIdLog(topics.producers), **{
            "linger.ms": 2,
            # A begin or commit right after a commit can be answered "concurrent transactions"
            # while the markers are written; librdkafka retries with exponential back-off up to
            # retry.backoff.max.ms (default 1 s), which showed as a 50-170 ms tail on single
            # commits at 50/s. Short retries, capped at 20 ms: the wait is milliseconds.
            "retry.backoff.ms": 2,
            "retry.backoff.max.ms": 20,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500000,
        })
        self.txn.open()

    def close_producer(self) -> None:
        if self.txn is not None:
            self.txn.close()
            self.txn = None

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

    # ---- committing a batch, with poison isolated -------------------------------------------
    def commit_isolated(self, units: list, attempt, rewind_units) -> bool:
        """Commit `units` (records, or other work) through `attempt(units)`, which runs one
        whole transaction and raises if it fails.

        A failure caused by the data is narrowed down by halving the failed part until the one
        unit that makes the transaction fail stands alone; that unit goes to the dead-letter
        topic with the reason (`dead_letter_unit`) and everything else is committed. Broker
        trouble instead rewinds what is left (`rewind_units`) to be read again after a pause.
        Returns False when something was rewound.
        """
        pending = [units]
        while pending:
            chunk = pending.pop(0)
            try:
                attempt(chunk)
                continue
            except Exception as exc:  # noqa: BLE001 - classified below; fatal ones re-raised
                self._abort_after(exc, len(chunk))
                if not caused_by_data(exc):
                    rewind_units([unit for part in [chunk, *pending] for unit in part])
                    self.stats["aborted_batches"] += 1
                    self.stop.wait(0.5)  # let the broker recover instead of spinning on it
                    return False
                reason = describe(exc)
            if len(chunk) > 1:
                middle = len(chunk) // 2
                pending[:0] = [chunk[:middle], chunk[middle:]]
                continue
            try:
                self.dead_letter_unit(chunk[0], reason)
                self.stats["dlq"] += 1
            except Exception as exc:  # noqa: BLE001
                self._abort_after(exc, 1)
                rewind_units([unit for part in [chunk, *pending] for unit in part])
                self.stop.wait(0.5)
                return False
        return True

    def dead_letter_unit(self, unit, reason: str) -> None:
        """Move one isolated unit to the dead-letter topic in its own transaction."""
        raise NotImplementedError

    def _abort_after(self, exc: BaseException, size: int) -> None:
        if isinstance(exc, KafkaException) and is_fatal(exc):
            raise exc
        log.warning("%s: transaction of %d unit(s) failed and was aborted: %s", self.stage, size, describe(exc))
        self.txn.abort()


def describe(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and hasattr(exc.args[0], "str"):
        return exc.args[0].str()
    return f"{type(exc).__name__}: {exc}"


class IdleBackoff:
    """Keeps an idle consumer from spinning on the embedded broker, without slowing a busy one.

    That broker answers fetches at once instead of holding them until data arrives (it
    ignores the long-poll wait), so librdkafka refetches in a tight loop while partitions are
    assigned: ~30% of a core per idle consumer. So, after a quiet spell, the assignment is
    paused, and the end offsets are compared with our positions (one ListOffsets request)
    every 20 ms, every 50 ms after a second of quiet and every 100 ms after ten: a run that
    follows soon after another is noticed sooner, and a stack left alone costs what it did
    with 100 ms checks. It is resumed only when there is something new. Two measured librdkafka behaviours shape this:
    - a resume is acted on only when the broker thread next wakes, up to a second later, so
      right after resuming we send one more ListOffsets request to wake it (delivery then
      takes milliseconds instead of up to 1 s);
    - pausing on a blind timer drops in-flight fetches as outdated and stalled delivery for
      seconds, so we pause only after `GRACE` seconds without records.
    On a real broker the poll itself waits and none of this runs.
    """

    FAST_CHECK = 0.02
    SLOW_CHECK = 0.05
    SLOW_AFTER = 1.0
    RESTING_CHECK = 0.1
    RESTING_AFTER = 10.0
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
        quiet = now - self.idle_since
        check = (self.FAST_CHECK if quiet <= self.SLOW_AFTER else
                 self.SLOW_CHECK if quiet <= self.RESTING_AFTER else self.RESTING_CHECK)
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
        # One ListOffsets request for the whole assignment (timestamp -1: the end, as this
        # consumer may read it, so open transactions do not count), where a watermark query
        # per partition cost two requests each: 0.14 ms against 0.44 ms for four partitions.
        try:
            ends = self.consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, -1) for tp in assignment],
                                                   timeout=2)
            end = {(tp.topic, tp.partition): tp.offset for tp in ends}
            for tp in self.consumer.position(assignment):
                position = tp.offset if tp.offset >= 0 else self._baseline.get((tp.topic, tp.partition), 0)
                if end.get((tp.topic, tp.partition), 0) > position:
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
        elif error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            # A trigger's topic that does not exist yet: it is picked up once it does.
            log.debug("consumer: %s does not exist (yet)", msg.topic())
        elif error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error on %s: %s", msg.topic(), error)
    return records


def record_size(value: bytes | None, key: bytes | None = None, headers=None) -> int:
    """Roughly what a record costs against the broker's limit: value, key and headers."""
    return (len(value or b"") + len(key or b"")
            + sum(len(name) + len(v or b"") + 8 for name, v in (headers or ())) + 64)


def check_size(topic: str, value: bytes | None, key: bytes | None = None, headers=None) -> None:
    """Refuse a record the broker would refuse, before it poisons a transaction."""
    size = record_size(value, key, headers)
    if size > settings.SLUICE_MAX_RECORD_BYTES:
        raise Poisoned(f"a record for {topic} of {size} bytes exceeds the limit of "
                       f"{settings.SLUICE_MAX_RECORD_BYTES} bytes (SLUICE_MAX_RECORD_BYTES)")


def dead_letter(producer: Producer, dlq_topic: str, msg: Message, stage: str, reason: str,
                workflow: str = "") -> None:
    """Copy `msg` to the dead-letter topic with headers saying why. Inside the caller's
    transaction, so the record is moved exactly once: it never vanishes and never repeats.

    A record too big to copy (the reason it failed, often) keeps its coordinates and headers
    but not its value; the original stays readable in its topic at those coordinates.
    """
    headers = list(msg.headers() or [])
    headers += [
        (messages.DLQ_ERROR, reason[:2000].encode()),
        (messages.DLQ_STAGE, stage.encode()),
        (messages.DLQ_SOURCE_TOPIC, (msg.topic() or "").encode()),
        (messages.DLQ_SOURCE_PARTITION, str(msg.partition()).encode()),
        (messages.DLQ_SOURCE_OFFSET, str(msg.offset()).encode()),
        (messages.DLQ_FAILED_AT, f"{time.time():.3f}".encode()),
    ]
    if workflow:
        headers.append((messages.DLQ_WORKFLOW, workflow.encode()))
    value = msg.value()
    if record_size(value, msg.key(), headers) > settings.SLUICE_MAX_RECORD_BYTES:
        headers.append((messages.DLQ_VALUE_OMITTED, str(len(value or b"")).encode()))
        value = None
    producer.produce(dlq_topic, key=msg.key(), value=value, headers=headers)
    log.warning("dead-lettered %s[%s]@%s (%s): %s", msg.topic(), msg.partition(), msg.offset(), stage, reason)


def dead_letter_alone(loop: "Loop", dlq_topic: str, msg: Message, reason: str) -> None:
    """One record to the dead-letter topic and past it, in a transaction of its own."""
    producer = loop.producer
    producer.begin_transaction()
    dead_letter(producer, dlq_topic, msg, loop.stage, reason, workflow=getattr(loop, "slug", ""))
    producer.send_offsets_to_transaction(consumed_offsets([msg]), loop.consumer.consumer_group_metadata(), 30)
    producer.commit_transaction(60)


def consumed_offsets(messages_: list[Message]) -> list:
    """Next offsets to commit for a batch: one past the last message of each partition."""
    last: dict[tuple[str, int], int] = {}
    for msg in messages_:
        last[(msg.topic(), msg.partition())] = msg.offset()
    return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]


def rewind(consumer: Consumer, messages_: list[Message]) -> None:
    """Seek back to the first message of each partition of an aborted batch."""
    first: dict[tuple[str, int], int] = {}
    for msg in messages_:
        first.setdefault((msg.topic(), msg.partition()), msg.offset())
    for (topic, partition), offset in first.items():
        try:
            consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            log.warning("could not seek %s[%s] back to %s: %s", topic, partition, offset, exc)
