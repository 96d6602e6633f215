"""How much Sluice's consumers fetch ahead of their loops (orchestrator/runtime/kafka.py),
against the embedded broker: a loop busy with a backlog must not have its fetcher ask for more
at the end of the log again and again (that broker answers such a fetch at once, empty)."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from orchestrator.runtime.kafka import base_config, consumer_config, resting_fetcher
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


def _fetches_under_a_trickle(bootstrap: str, topic: str, config: dict) -> tuple[int, int]:
    """Fetch requests a consumer sends over about 1.5 s while one record arrives every 10 ms
    (never quiet long enough for a loop to pause) and its loop takes each at once; and how
    many records it got of those sent."""
    stats: list[dict] = []
    consumer = Consumer({**config, "statistics.interval.ms": 100, "stats_cb": lambda raw: stats.append(json.loads(raw))})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    sent, received = [], 0
    try:
        consumer.subscribe([topic])
        while not consumer.assignment():
            consumer.poll(0.1)
        began = time.monotonic()
        counted = None
        while time.monotonic() - began < 2.5:
            producer.produce(topic, b"x" * 200)
            producer.poll(0)
            sent.append(1)
            waited_until = time.monotonic() + 0.01
            while (left := waited_until - time.monotonic()) > 0:
                message = consumer.poll(left)
                received += message is not None and message.error() is None
            if counted is None and time.monotonic() - began > 0.8 and stats:
                counted = _fetch_requests(stats[-1])
        requests = _fetch_requests(stats[-1]) - counted
        producer.flush(10)
        deadline = time.monotonic() + 10
        while received < len(sent) and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            received += message is not None and message.error() is None
        return requests, received - len(sent)
    finally:
        consumer.close()


def test_a_resting_fetcher_asks_once_a_rest_while_records_keep_coming(kafka, kafka_broker, settings):
    """The bridge's consumer (monitor/projector.py) gathers batches for 50 ms anyway: its
    fetcher rests that long once it holds a record instead of asking again at once. Nothing
    is left behind.

    Not always: when the loop takes the record before librdkafka decides on the next fetch,
    the queue looks empty and the fetcher asks at once. Quiet, about one request a rest (32);
    with two busy loops beside it 53-135; once in the whole suite's run 1,744, against 23,155
    eager. Hence a ratio, not a count."""
    settings.KAFKA_CLIENT_CONFIG = {}
    topic = user_topic(kafka, "trickle")
    bootstrap = kafka_broker.bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)

    resting, missing = _fetches_under_a_trickle(bootstrap, topic, consumer_config("trickle-rests",
                                                                                  defaults=resting_fetcher(50)))
    eager, _ = _fetches_under_a_trickle(bootstrap, topic, consumer_config("trickle-eager"))
    print(f"fetch requests in ~1.7 s of one record every 10 ms: resting {resting}, eager {eager}")
    assert missing == 0
    assert eager > 4 * resting
    assert resting_fetcher(0) == {}
