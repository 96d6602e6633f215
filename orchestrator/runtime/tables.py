"""Tables for `lookup` steps: the latest value per key of a user topic, kept in memory.

A table is what Kafka Streams calls a global table: every partition of the topic, read from
the beginning by a consumer that joins no group and commits nothing, so each process keeps a
whole copy of its own. A process starts a table on the first lookup of its topic, restores it
to the end before answering (it waits until its position reaches the end offsets it saw at
the start, not until the last message: transaction markers take offsets too), then follows
the topic in a background thread. A lookup then costs a dict lookup; an update produced to the
topic reaches the table within about a tenth of a second. A tombstone (a record with no value)
deletes its key; records without a key are skipped. A topic that does not exist yet is an
empty table, picked up within about a second of being created.

Values are kept as the record's bytes and decoded on each lookup (like trigger records: JSON
if JSON, else text, else `{"base64": ...}`): bytes cost a known amount of memory, where
decoded objects would cost several times their size, and each lookup gets its own copy.

Memory: a table may hold at most `SLUICE_LOOKUP_MAX_BYTES` (64 MiB by default), counted as key
length + value length + ENTRY_OVERHEAD per key (what CPython's dict, str and bytes objects
cost on top of the data, measured). A table that outgrows the bound is dropped, not trimmed:
evicting keys would make lookups answer "not found" for keys that exist, a wrong answer a
workflow would act on. Lookups of a dropped table fail with an error naming the topic and
the setting (the step's retry policy applies), and the next lookup after RETRY_SECONDS
restores it again (it may fit once tombstones or compaction have shrunk the topic).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from django.conf import settings

from ..steps.lookup import reserved_topic_error
from .kafka import consumer_config
from .loops import poll_batch
from .triggers import decode_value

log = logging.getLogger(__name__)

# CPython's cost of one key on top of its data: the dict slot, the str and the bytes object
# (tracemalloc over 100,000 entries: 120 bytes, whatever the value's size).
ENTRY_OVERHEAD = 128
# How long the first lookup of a table waits for it to be restored before failing the step.
RESTORE_WAIT_SECONDS = 60.0
# A table dropped for outgrowing its bound is restored again at the next lookup after this.
RETRY_SECONDS = 60.0
BATCH = 1000
# Looking for the topic's partitions: often while it does not exist, now and then after.
MISSING_TOPIC_CHECK_SECONDS = 1.0
PARTITIONS_CHECK_SECONDS = 10.0
# While caught up on the embedded broker, which ignores long-poll waits (see IdleBackoff):
# pause, then compare watermarks with positions this often (faster for a second after a record).
QUIET_CHECK_SECONDS = 0.1
RECENT_CHECK_SECONDS = 0.02
RECENT_SECONDS = 1.0
PAUSE_AFTER_SECONDS = 0.25


class TableError(RuntimeError):
    """A lookup that cannot be answered; the message names the topic and what to do."""


class ReservedTopic(TableError):
    pass


class TableTooLarge(TableError):
    pass


class TableNotReady(TableError):
    pass


def key_text(raw: bytes) -> str:
    """A record key as lookups compare it: UTF-8 text, or hex for other bytes (as record_info)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex()


def entry_cost(key: str, value: bytes) -> int:
    return len(key) + len(value) + ENTRY_OVERHEAD


class Table:
    """One topic's table; its background thread is the only writer of `_values`."""

    def __init__(self, topic: str, max_bytes: int, pause_when_idle: bool):
        self.topic = topic
        self.max_bytes = max_bytes
        self.pause_when_idle = pause_when_idle
        self._values: dict[str, bytes] = {}
        self._bytes = 0
        self._restored = threading.Event()
        self._stop = threading.Event()
        self._failure: TableError | None = None
        self.failed_at: float | None = None
        self._consumer: Consumer | None = None
        self._partitions: set[int] = set()
        self._ends: dict[int, int] = {}  # restore target per partition
        self._paused = False
        self._last_record = 0.0
        self._partitions_checked = 0.0
        self.records_without_key = 0
        self._thread = threading.Thread(target=self._follow, name=f"table-{topic}", daemon=True)

    # ---- what lookups use ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def wait_restored(self, timeout: float) -> None:
        """Return once the table holds the topic up to where it ended when the table started;
        raise TableError if it could not be restored (too large, or not in time)."""
        if not self._restored.wait(timeout):
            raise TableNotReady(
                f"the table of topic {self.topic!r} is still being restored after {timeout:g} s "
                f"({len(self._values)} keys read so far); the lookup may be retried")
        if self._failure is not None:
            raise self._failure

    def get(self, key: str) -> bytes | None:
        return self._values.get(key)

    def stats(self) -> dict:
        return {"keys": len(self._values), "bytes": self._bytes, "restored": self._restored.is_set(),
                "failed": self._failure is not None, "records_without_key": self.records_without_key}

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)

    # ---- the follower thread ------------------------------------------------------------------
    def _follow(self) -> None:
        started = time.monotonic()
        try:
            self._consumer = Consumer(consumer_config(f"sluice-table-{uuid.uuid4().hex}"))
            while not self._stop.is_set():
                try:
                    self._check_partitions()
                    if not self._restored.is_set() and self._caught_up_with(self._ends):
                        self._restored.set()
                        log.info("table %s restored: %d keys, %d bytes in %.2f s", self.topic,
                                 len(self._values), self._bytes, time.monotonic() - started)
                    self._step()
                except KafkaException as exc:
                    # Broker trouble (a restart, a topic still being created): try again shortly.
                    log.warning("table %s: %s; trying again", self.topic, exc)
                    self._partitions_checked = 0.0
                    self._stop.wait(1.0)
        except TableError as exc:
            self._fail(exc)
        except Exception as exc:  # noqa: BLE001 - the table is unusable; lookups must say so
            log.exception("table %s stopped", self.topic)
            self._fail(TableError(f"the table of topic {self.topic!r} stopped: {exc}"))
        finally:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None

    def _fail(self, error: TableError) -> None:
        self._failure = error
        self.failed_at = time.monotonic()
        self._values, self._bytes = {}, 0
        self._restored.set()  # wake waiting lookups: they raise the failure
        log.error("%s", error)

    def _step(self) -> None:
        if not self._partitions:  # no such topic (yet): an empty table
            self._stop.wait(MISSING_TOPIC_CHECK_SECONDS)
            return
        if self._paused:
            if not self._lagging():
                recent = time.monotonic() - self._last_record < RECENT_SECONDS
                self._stop.wait(RECENT_CHECK_SECONDS if recent else QUIET_CHECK_SECONDS)
                return
            self._resume()
        records = poll_batch(self._consumer, BATCH, 0.1)
        for msg in records:
            self._apply(msg)
        now = time.monotonic()
        if records:
            self._last_record = now
        elif (self.pause_when_idle and self._restored.is_set() and now - self._last_record > PAUSE_AFTER_SECONDS
              and not self._lagging()):
            self._consumer.pause(self._assignment())
            self._paused = True

    def _apply(self, msg) -> None:
        raw_key = msg.key()
        if raw_key is None:
            self.records_without_key += 1
            return
        key, value = key_text(raw_key), msg.value()
        old = self._values.get(key)
        if old is not None:
            self._bytes -= entry_cost(key, old)
        if value is None:
            self._values.pop(key, None)
            return
        self._values[key] = value
        self._bytes += entry_cost(key, value)
        if self._bytes > self.max_bytes:
            raise TableTooLarge(
                f"the table of topic {self.topic!r} needs more than {self.max_bytes} bytes "
                f"(SLUICE_LOOKUP_MAX_BYTES) with {len(self._values)} keys: it was dropped, and its lookups fail "
                f"until it fits (it is read again at most once a minute): raise the limit, or let compaction "
                f"remove old values")

    # ---- partitions and offsets ---------------------------------------------------------------
    def _assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, partition) for partition in sorted(self._partitions)]

    def _check_partitions(self) -> None:
        """Assign partitions that appeared (the topic was created, or grew), from the start."""
        now = time.monotonic()
        interval = PARTITIONS_CHECK_SECONDS if self._partitions else MISSING_TOPIC_CHECK_SECONDS
        if now - self._partitions_checked < interval:
            return
        self._partitions_checked = now
        metadata = self._consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
        if metadata is None or metadata.error is not None:
            return  # does not exist (yet); the consumer's metadata requests never create it
        new = sorted(set(metadata.partitions) - self._partitions)
        if not new:
            return
        for partition in new:
            # Part of the restore target while restoring; from then on simply followed.
            self._ends[partition] = self._watermarks(partition)[1]
        self._consumer.incremental_assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in new])
        self._partitions.update(new)
        if self._paused:
            self._resume()
        log.info("table %s: following partitions %s", self.topic, new)

    def _watermarks(self, partition: int) -> tuple[int, int]:
        return self._consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=5, cached=False)

    def _positions(self) -> dict[int, int]:
        """Where reading continues per partition; -1 while a partition has not been fetched."""
        return {tp.partition: tp.offset for tp in self._consumer.position(self._assignment())}

    def _caught_up_with(self, ends: dict[int, int]) -> bool:
        """Whether our position has reached `ends` (partition -> offset) on every partition."""
        positions = self._positions()
        return not any(self._behind(partition, positions.get(partition, -1), end) for partition, end in ends.items())

    def _behind(self, partition: int, position: int, end: int, low: int | None = None) -> bool:
        if position >= end:
            return False
        if position >= 0:
            return True
        # Never fetched: only behind if the partition's log holds something before `end`.
        low = self._watermarks(partition)[0] if low is None else low
        return low < end

    def _lagging(self) -> bool:
        """Whether any partition has records (or transaction markers) past our position."""
        positions = self._positions()
        for partition in self._partitions:
            low, high = self._watermarks(partition)
            if self._behind(partition, positions.get(partition, -1), high, low):
                return True
        return False

    def _resume(self) -> None:
        assignment = self._assignment()
        self._consumer.resume(assignment)
        self._paused = False
        # librdkafka acts on a resume when its broker thread next wakes, up to a second later;
        # a request wakes it (see IdleBackoff).
        try:
            self._watermarks(assignment[0].partition)
        except KafkaException:
            pass


class TableStore:
    """The tables of one process, by topic; started on first use, closed with the runner."""

    def __init__(self):
        self._lock = threading.Lock()
        self._tables: dict[str, Table] = {}

    def table(self, topic: str) -> Table:
        """The table of `topic`, started (and restoring) if it was not yet."""
        refused = reserved_topic_error(topic, settings.SLUICE_TOPIC_PREFIX)
        if refused:
            raise ReservedTopic(f"a lookup may not read {refused}")
        with self._lock:
            table = self._tables.get(topic)
            if table is not None and table.failed_at is not None and time.monotonic() - table.failed_at > RETRY_SECONDS:
                table.close()
                table = None
            if table is None:
                table = Table(topic, settings.SLUICE_LOOKUP_MAX_BYTES, pause_when_idle=settings.SLUICE_EMBEDDED_BROKER)
                table.start()
                self._tables[topic] = table
                log.info("table %s: following the topic for lookups", topic)
            return table

    def lookup(self, topic: str, key: str, wait_seconds: float = RESTORE_WAIT_SECONDS) -> tuple[bool, object]:
        """(found, decoded value) of `key` in the table of `topic`; raises TableError."""
        table = self.table(topic)
        table.wait_restored(wait_seconds)
        raw = table.get(key)
        if raw is None:
            return False, None
        return True, decode_value(raw)

    def stats(self) -> dict[str, dict]:
        with self._lock:
            return {topic: table.stats() for topic, table in self._tables.items()}

    def close(self) -> None:
        with self._lock:
            tables, self._tables = list(self._tables.values()), {}
        for table in tables:
            table.close()


_store_lock = threading.Lock()
_store: TableStore | None = None


def store() -> TableStore:
    """This process's tables."""
    global _store
    with _store_lock:
        if _store is None:
            _store = TableStore()
        return _store


def close_store() -> None:
    """Stop following every table (the runner calls this when it stops)."""
    global _store
    with _store_lock:
        current, _store = _store, None
    if current is not None:
        current.close()
