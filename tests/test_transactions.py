"""Transactional producers against the real embedded broker: an aborted producer id never
hides what is committed after it, and a restarted loop fences the one it replaces."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from django.conf import settings

from orchestrator.runtime.kafka import producer_config
from orchestrator.runtime.transactions import ProducerIdLog, RotatingProducer, is_fatal
from tests.runtime_support import user_topic

pytestmark = pytest.mark.kafka


def read_from(topic: str, offset: int) -> list[str]:
    """What a read_committed reader assigned at `offset` receives, up to the end of the topic."""
    consumer = Consumer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS, "group.id": uuid.uuid4().hex,
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    partition = TopicPartition(topic, 0)
    _low, high = consumer.get_watermark_offsets(partition, timeout=10)
    consumer.assign([TopicPartition(topic, 0, offset)])
    values, deadline = [], time.monotonic() + 10
    while consumer.position([partition])[0].offset < high and time.monotonic() < deadline:
        values += [m.value().decode() for m in consumer.consume(50, timeout=0.2) if not m.error()]
    consumer.close()
    return values


def write(producer: Producer, topic: str, value: str, outcome: str) -> None:
    producer.begin_transaction()
    producer.produce(topic, value=value.encode())
    producer.flush(10)
    producer.commit_transaction(30) if outcome == "commit" else producer.abort_transaction(30)


def test_a_reused_producer_id_after_an_abort_hides_its_later_commits_from_readers(kafka):
    """Why RotatingProducer exists: the embedded broker lists every aborted transaction in every
    fetch, and librdkafka then skips the aborted producer id's later batches. Offsets: 0 record,
    1 commit marker, 2 aborted record, 3 abort marker, 4 record, 5 marker, 6 record, 7 marker."""
    topic = user_topic(kafka, "quirk")
    producer = Producer(producer_config(**{"transactional.id": f"quirk-{uuid.uuid4().hex}"}))
    producer.init_transactions(30)
    for value, outcome in [("a", "commit"), ("b", "abort"), ("c", "commit"), ("d", "commit")]:
        write(producer, topic, value, outcome)
    assert read_from(topic, 0) == ["a", "c", "d"]
    assert read_from(topic, 4) == []  # committed, yet invisible to a reader that starts past the abort


def test_a_rotating_producer_never_writes_again_with_an_id_that_aborted(kafka):
    topic = user_topic(kafka, "rotating")
    txn = RotatingProducer(f"{kafka.prefix}test-{uuid.uuid4().hex[:6]}", ProducerIdLog(kafka.producers))
    txn.open()
    first_id = txn.transactional_id
    write(txn.producer, topic, "a", "commit")
    txn.producer.begin_transaction()
    txn.producer.produce(topic, value=b"b")
    txn.producer.flush(10)
    txn.abort()
    assert txn.transactional_id != first_id
    for value in ("c", "d"):
        write(txn.producer, topic, value, "commit")
    for start in range(0, 8):
        assert read_from(topic, start) == [v for v, offset in [("a", 0), ("c", 4), ("d", 6)] if offset >= start]
    txn.close()


def test_a_new_incarnation_aborts_and_fences_the_open_transaction_of_the_one_it_replaces(kafka):
    topic = user_topic(kafka, "fence")
    name = f"{kafka.prefix}test-{uuid.uuid4().hex[:6]}"
    ids = ProducerIdLog(kafka.producers)
    old = RotatingProducer(name, ids)
    old.open()
    write(old.producer, topic, "committed-by-old", "commit")
    old.producer.begin_transaction()  # then it "dies" with this transaction open
    old.producer.produce(topic, value=b"never")
    old.producer.flush(10)
    assert ids.current(name) == old.transactional_id

    new = RotatingProducer(name, ids)
    new.open()
    assert new.transactional_id not in (old.transactional_id, name)
    assert ids.current(name) == new.transactional_id
    write(new.producer, topic, "committed-by-new", "commit")
    # The old transaction was aborted (read_committed readers are not blocked behind it) and the
    # records after its abort marker are visible to every reader, wherever it starts.
    assert read_from(topic, 0) == ["committed-by-old", "committed-by-new"]
    assert read_from(topic, 3) == ["committed-by-new"]
    with pytest.raises(KafkaException) as raised:
        old.producer.commit_transaction(10)
    assert is_fatal(raised.value) or "fenced" in str(raised.value).lower() or "epoch" in str(raised.value).lower()
    new.close()
