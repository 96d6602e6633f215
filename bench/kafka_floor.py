"""The floor under a run's latency: one Kafka hop on the embedded broker, without Sluice.

One record at a time at 50/s, each timed from produce to a consumer's poll:
- a plain (idempotent) produce, read by a `read_committed` consumer: a start request's hop;
- a transactional produce and commit, read by a `read_committed` consumer: each hop a run's
  engine and worker make, exactly-once;
- and `commit_transaction` alone.
A run of the three-step benchmark workflow is one plain hop and three transactional ones, so
the sum is the least latency any exactly-once design on this broker could show.

    python -m bench floor
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from pathlib import Path

from .harness import percentile, table

RATE = 50.0
RECORDS = 300


def _consumer(bootstrap: str, topic: str):
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"floor-{uuid.uuid4().hex}",
                         "auto.offset.reset": "latest", "isolation.level": "read_committed",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(0.1)
    for _ in range(10):  # positions resolved before the first timed record
        consumer.poll(0.05)
    return consumer


def _hop_latencies(bootstrap: str, topic: str, send) -> list[float]:
    consumer = _consumer(bootstrap, topic)
    received: dict[bytes, float] = {}
    stop = threading.Event()

    def read():
        while not stop.is_set():
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                received[msg.value()] = time.perf_counter()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent: dict[bytes, float] = {}
    began = time.perf_counter()
    for i in range(RECORDS):
        delay = began + i / RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        value = str(i).encode()
        sent[value] = time.perf_counter()
        send(topic, value)
    time.sleep(1)
    stop.set()
    reader.join(5)
    consumer.close()
    return [(received[v] - t) * 1000 for v, t in sent.items() if v in received]


def run() -> list[list]:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from orchestrator.runtime.broker import EmbeddedBroker, free_port

    broker = EmbeddedBroker(Path(tempfile.mkdtemp(prefix="sluice-floor-")) / "kafka", free_port()).start()
    try:
        bootstrap = broker.bootstrap_servers
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(name, 4, 1) for name in ("plain", "txn")]).values():
            future.result()
        plain = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "enable.idempotence": True})

        def send_plain(topic, value):
            plain.produce(topic, key=value, value=value)
            plain.flush()

        # The loops' producer settings (orchestrator/runtime/loops.py): short transactional retries.
        txn = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "transactional.id": uuid.uuid4().hex,
                        "retry.backoff.ms": 2, "retry.backoff.max.ms": 20})
        txn.init_transactions(10)
        commits: list[float] = []

        def send_transactional(topic, value):
            txn.begin_transaction()
            txn.produce(topic, key=value, value=value)
            committing = time.perf_counter()
            txn.commit_transaction(10)
            commits.append((time.perf_counter() - committing) * 1000)

        rows = []
        for label, latencies in (
            ("plain produce -> read_committed consumer", _hop_latencies(bootstrap, "plain", send_plain)),
            ("transactional produce + commit -> read_committed consumer", _hop_latencies(bootstrap, "txn", send_transactional)),
            ("commit_transaction alone", commits),
        ):
            rows.append([label, len(latencies), percentile(latencies, 50), percentile(latencies, 99)])
        return rows
    finally:
        broker.stop()


def main() -> None:
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    django.setup()
    print(table(f"One Kafka hop on the embedded broker, one record at a time at {RATE:.0f}/s",
                ["hop", "records", "p50 (ms)", "p99 (ms)"], run()))


if __name__ == "__main__":
    main()
