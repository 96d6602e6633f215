"""How much Sluice's consumers fetch ahead of their loops (orchestrator/runtime/kafka.py),
against the embedded broker: a loop busy with a backlog must not have its fetcher ask for more
at the end of the log again and again (that broker answers such a fetch at once, empty)."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from orchestrator.runtime.kafka import base_config, consumer_config
from tests.runtime_support import user_topic

pytestmark = pytest.mark.kafka

BACKLOG = 20000


def test_the_read_ahead_defaults_give_way_to_the_operators_settings(settings):
    settings.KAFKA_CLIENT_CONFIG = {}
    settings.SLUICE_CONSUMER_PREFETCH = 1234
    config = consumer_config("g")
    assert config["queued.min.messages"] == 1234
    assert config["fetch.queue.backoff.ms"] > 0
    assert "queued.min.messages" not in base_config()  # producers and admin clients get no consumer settings

    # KAFKA_CLIENT_CONFIG replaces a tunable default, but never what the loops rely on.
    settings.KAFKA_CLIENT_CONFIG = {"queued.min.messages": "50000", "isolation.level": "read_uncommitted"}
    config = consumer_config("g")
    assert config["queued.min.messages"] == "50000"
    assert config["isolation.level"] == "read_committed"


def _fetches_while_busy(bootstrap: str, topic: str, config: dict) -> int:
    """Fetch requests the consumer sends in the 1.5 s after its loop took one record and went
    busy (taking one more every tenth of a second), with most of the backlog still unread."""
    stats: list[dict] = []
    consumer = Consumer({**config, "statistics.interval.ms": 100, "stats_cb": lambda raw: stats.append(json.loads(raw))})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while consumer.poll(0.5) is None:
            assert time.monotonic() < deadline, "no record arrived"
        time.sleep(0.2)
        consumer.poll(0)  # serves the statistics callback
        before = _fetch_requests(stats[-1])
        for _ in range(15):
            time.sleep(0.1)
            consumer.poll(0)
        return _fetch_requests(stats[-1]) - before
    finally:
        consumer.close()


def _fetch_requests(snapshot: dict) -> int:
    return sum(broker.get("req", {}).get("Fetch", 0) for broker in snapshot["brokers"].values())


def test_a_busy_loop_does_not_make_its_fetcher_ask_again_and_again(kafka, kafka_broker, settings):
    topic = user_topic(kafka, "backlog")
    bootstrap = kafka_broker.bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})  # held: a collected client cancels its futures
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for index in range(BACKLOG):
        producer.produce(topic, b"x" * 200, key=str(index).encode())
    assert producer.flush(30) == 0

    settings.SLUICE_CONSUMER_PREFETCH = 2000
    ours = _fetches_while_busy(bootstrap, topic, consumer_config("prefetch-ours"))
    # The same consumer with librdkafka's own read-ahead, as the control: it has the whole
    # backlog at once and then asks at the end of the log, answered at once, in a tight loop.
    theirs = _fetches_while_busy(bootstrap, topic, {
        **consumer_config("prefetch-theirs"), "queued.min.messages": 100000, "fetch.queue.backoff.ms": 1000})
    print(f"fetch requests in 1.5 s busy: ours {ours}, librdkafka's defaults {theirs}")
    assert theirs > 200
    assert ours < 20
