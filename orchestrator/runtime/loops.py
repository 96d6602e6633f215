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

# After an empty poll, pause the assignment this long: the embedded broker ignores the fetch
# long-poll wait, so an idle consumer would otherwise spin (measured: 5.7 -> 0.12 CPU-s / 10 s).
IDLE_PAUSE_SECONDS = 0.05


def idle_backoff(consumer: Consumer, stop: threading.Event, seconds: float = IDLE_PAUSE_SECONDS) -> None:
    if not settings.SLUICE_EMBEDDED_BROKER:
        return  # a real broker honours fetch.wait.max.ms; the poll itself waited
    assignment = consumer.assignment()
    if assignment:
        consumer.pause(assignment)
    stop.wait(seconds)
    if assignment:
        try:
            consumer.resume(assignment)
        except KafkaException:
            pass  # the assignment changed under us (rebalance); the next poll sorts it out


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
