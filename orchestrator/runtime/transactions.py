"""Transactional producers whose producer id never writes again after an abort.

Why: the embedded broker answers every Fetch with *all* aborted transactions of the partition,
not only those overlapping the fetched range as Kafka does. librdkafka then treats every later
transactional batch of an aborted producer id as part of that aborted transaction (it skips a
producer's batches from the aborted transaction's first offset until it sees that producer's
ABORT marker, which a fetch that starts past the marker never contains). So once a producer id
had one transaction aborted on a partition, read_committed readers that fetch past the abort
marker silently skip everything it commits there afterwards: dispatches never reach workers,
results never reach the engine, state snapshots are missed on restore. That is how runs were
lost after a runner was killed (its open transaction is aborted when the next incarnation
starts) and it would also follow any in-process abort.

The rule that makes this impossible: a transactional id that saw an abort is retired. Each
incarnation of a loop, and each abort, gets a fresh transactional id, hence a fresh producer id.
To fence a killed incarnation (abort its open transaction, so read_committed readers are not
blocked), the id in use is recorded in a small compacted topic, keyed by the loop's stable
name; the next incarnation reads it, calls init_transactions() with it (which aborts and fences),
and only then records and uses a fresh id. On a real Kafka cluster this costs one small record
per start and per abort, and changes nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from .kafka import consumer_config, producer_config

log = logging.getLogger(__name__)


class ProducerIdRecord(msgspec.Struct, kw_only=True):
    """Which transactional id a loop (by its stable name) uses now."""

    transactional_id: str
    since: float


def is_fatal(exc: KafkaException) -> bool:
    """True when the producer can never commit again (fenced by a newer incarnation)."""
    error = exc.args[0] if exc.args else None
    return bool(error and hasattr(error, "fatal") and (error.fatal() or error.code() == KafkaError._FENCED))


class ProducerIdLog:
    """The compacted topic that remembers each loop's current transactional id."""

    def __init__(self, topic: str):
        self.topic = topic
        self._lock = threading.Lock()

    def current(self, name: str, timeout: float = 30.0) -> str | None:
        """The id recorded last for `name`, reading the (one-partition) topic to its end."""
        reader = Consumer(consumer_config(f"sluice-producer-ids-{uuid.uuid4().hex}"))
        try:
            partition = TopicPartition(self.topic, 0)
            low, high = reader.get_watermark_offsets(partition, timeout=timeout)
            if high <= low:
                return None
            reader.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
            found = None
            deadline = time.monotonic() + timeout
            # Wait for the position (not the last record) to reach the end: transaction markers
            # take offsets too (FIELD-NOTES).
            while reader.position([partition])[0].offset < high:
                if time.monotonic() > deadline:
                    raise KafkaException(KafkaError(KafkaError._TIMED_OUT,
                                                    f"could not read {self.topic} to its end in {timeout}s"))
                for msg in reader.consume(500, timeout=0.2):
                    if msg.error() or (msg.key() or b"").decode() != name:
                        continue
                    found = None if msg.value() is None else msgspec.json.decode(
                        msg.value(), type=ProducerIdRecord).transactional_id
            return found
        finally:
            reader.close()

    def record(self, name: str, transactional_id: str, timeout: float = 30.0) -> None:
        """Write `name -> transactional_id` and wait until the broker has it."""
        with self._lock:
            producer = Producer(producer_config(**{"linger.ms": 0}))
            errors = []
            producer.produce(self.topic, key=name.encode(),
                             value=msgspec.json.encode(ProducerIdRecord(transactional_id=transactional_id,
                                                                       since=time.time())),
                             on_delivery=lambda err, _msg: err and errors.append(err))
            if producer.flush(timeout) or errors:
                raise KafkaException(errors[0] if errors else KafkaError(
                    KafkaError._TIMED_OUT, f"{self.topic} did not acknowledge in {timeout}s"))


def fence(transactional_id: str, timeout: float = 60.0) -> None:
    """Abort whatever transaction `transactional_id` left open and fence its owner."""
    producer = Producer(producer_config(**{"transactional.id": transactional_id,
                                           "transaction.timeout.ms": 60000}))
    producer.init_transactions(timeout)
    producer.flush(1)


class RotatingProducer:
    """A transactional producer for one loop, under a stable `name`, on fresh ids.

    Use `producer` for begin/produce/send_offsets/commit as with a plain Producer. After a
    failed transaction call `abort()`: it aborts, retires the id and continues on a new one.
    """

    def __init__(self, name: str, ids: ProducerIdLog, **config):
        self.name = name
        self.ids = ids
        self.config = config
        self.producer: Producer | None = None
        self.transactional_id: str | None = None

    def open(self) -> Producer:
        previous = self.ids.current(self.name)
        # An incarnation from before ids were recorded used the stable name itself.
        fence(previous or self.name)
        self._start_fresh()
        return self.producer

    def abort(self, timeout: float = 30.0) -> None:
        """Abort the open transaction and move to a new id; raises if we have been fenced."""
        aborted = False
        try:
            self.producer.abort_transaction(timeout)
            aborted = True
        except KafkaException as exc:
            if is_fatal(exc):
                raise
            log.warning("%s: abort failed (%s); fencing %s instead", self.name, exc, self.transactional_id)
        retired = self.transactional_id
        self._close()
        if not aborted:
            fence(retired)
        self._start_fresh()
        log.info("%s: transactional id %s retired after an abort; now %s", self.name, retired, self.transactional_id)

    def close(self) -> None:
        self._close()

    def _start_fresh(self) -> None:
        transactional_id = f"{self.name}.{uuid.uuid4().hex[:12]}"
        # Recorded before first use: if we die at any point after this, the next incarnation
        # fences this id (init_transactions on an id that never wrote is harmless).
        self.ids.record(self.name, transactional_id)
        producer = Producer(producer_config(**{
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 60000,
            **self.config,
        }))
        producer.init_transactions(60)
        self.producer, self.transactional_id = producer, transactional_id

    def _close(self) -> None:
        if self.producer is not None:
            try:
                self.producer.flush(5)
            except KafkaException:
                pass
        self.producer = None
