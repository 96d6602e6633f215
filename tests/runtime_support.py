"""Helpers for tests that run real runners against the embedded broker."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from django.conf import settings

from orchestrator.runtime import codec, commands

ROOT = Path(__file__).resolve().parent.parent


class HistoryLog:
    """Everything committed to the history topic, read from the start (read_committed)."""

    def __init__(self, topics):
        self.topic = topics.history
        self.events = []
        self.by_run = defaultdict(list)
        self.consumer = Consumer({
            "bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS, "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest", "isolation.level": "read_committed", "enable.auto.commit": False,
        })
        self.consumer.subscribe([self.topic])

    def poll(self, timeout=0.2) -> int:
        count = 0
        for msg in self.consumer.consume(100, timeout=timeout):
            if msg.error():
                continue
            event = codec.decode_history(msg.value(), msg.headers())
            self.events.append(event)
            self.by_run[event.run_id].append(event)
            count += 1
        return count

    def finished(self) -> dict[str, list]:
        return {run_id: [e for e in events if e.kind in ("run_succeeded", "run_failed", "run_cancelled")]
                for run_id, events in self.by_run.items()
                if any(e.kind in ("run_succeeded", "run_failed", "run_cancelled") for e in events)}

    def wait_until(self, predicate, timeout=60.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if predicate(self):
                return
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; {len(self.events)} events seen")

    def wait_finished(self, run_ids, timeout=60.0):
        wanted = set(run_ids)
        self.wait_until(lambda log: wanted <= set(log.finished()), timeout,
                        f"{len(wanted)} runs to finish")

    def close(self):
        self.consumer.close()


def user_topic(topics, name: str) -> str:
    """A topic of the test's own (outside Sluice's prefix, which workflows may not use)."""
    return f"{topics.prefix.rstrip('.')}-{name}"


def produce_in_one_window(topic: str, values: list[dict], size_seconds: int, grace_seconds: int,
                          margin: float = 8.0) -> float:
    """Produce `values` to `topic` with one timestamp, inside a tumbling window that stays open
    (end plus grace, on the wall clock) for at least `margin` more seconds: a record read after
    its window closed is late by design, so a slow machine must not make the test's records late.
    Returns the window's end (epoch seconds)."""
    import json
    import math

    from confluent_kafka import Producer

    def closes(now: float) -> float:
        return math.floor(now / size_seconds) * size_seconds + size_seconds + grace_seconds

    if closes(time.time()) - time.time() < margin:
        time.sleep(math.ceil(time.time() / size_seconds) * size_seconds - time.time() + 0.05)
    now_ms = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS})
    for value in values:
        producer.produce(topic, value=json.dumps(value).encode(), timestamp=now_ms)
    assert producer.flush(10) == 0
    return closes(now_ms / 1000) - grace_seconds


def create_topic(name: str, partitions: int = 3) -> None:
    """Create a user topic now, so a trigger or table following it is assigned before records go in."""
    admin = AdminClient({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(10)


def publish(definition: dict, version: int = 1) -> None:
    commands.publish_definition(definition["slug"], version, definition, by="test")


def produce(topic: str, records, key=None) -> None:
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS, "partitioner": "murmur2_random",
                         "message.max.bytes": 2 * 1048576})
    for record in records:
        producer.produce(topic, key=key, value=record)
    assert producer.flush(30) == 0


def produce_history_in_transaction(topic: str, events) -> None:
    """History events as the engine writes them: in a transaction, so a commit marker follows."""
    import uuid

    from orchestrator.runtime import codec
    from orchestrator.runtime.kafka import producer_config

    producer = Producer(producer_config(**{"transactional.id": f"test-history-{uuid.uuid4().hex[:8]}"}))
    producer.init_transactions(10)
    producer.begin_transaction()
    for event in events:
        producer.produce(topic, key=event.run_id.encode(), value=codec.encode(event), headers=codec.headers_for(event))
    producer.commit_transaction(10)


class ManageProcess:
    """`manage.py <command>` in a child process, pointed at the test's broker, topics and
    database file (runners never use the database; bridges do)."""

    def __init__(self, command: str, *args: str, env: dict | None = None):
        self.log_path = Path(settings.DATA_DIR) / f"{command}-{os.getpid()}-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), command, *args], cwd=ROOT,
                                        env=self.environment(**(env or {})), stdout=self.log,
                                        stderr=subprocess.STDOUT)

    @staticmethod
    def environment(**extra) -> dict:
        """The environment of a child `manage.py`: this test's broker, topics and database."""
        env = dict(os.environ)
        env.update({
            "KAFKA_BOOTSTRAP_SERVERS": settings.KAFKA_BOOTSTRAP_SERVERS,
            "SLUICE_TOPIC_PREFIX": settings.SLUICE_TOPIC_PREFIX,
            "SLUICE_PARTITIONS": str(settings.SLUICE_PARTITIONS),
            "SLUICE_EMBEDDED_BROKER": "1",
            "DATABASE_URL": database_url(),
            "PYTHONUNBUFFERED": "1",
            **extra,
        })
        return env

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush, no commit."""
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> str:
        """SIGTERM (then SIGKILL after a while); returns everything the process printed."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if not self.log.closed:
            self.log.close()
        return self.log_path.read_text(errors="replace")


def runner_process(instance_id: str, *args: str, env: dict | None = None) -> ManageProcess:
    return ManageProcess("runner", "--instance-id", instance_id, *args, env=env)


def read_topic(topic: str, timeout: float = 10.0) -> list:
    """Every committed record of `topic` (all partitions), read from the start."""
    from confluent_kafka import TopicPartition

    consumer = Consumer({
        "bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS, "group.id": f"test-{uuid.uuid4().hex}",
        "isolation.level": "read_committed", "enable.auto.commit": False, "enable.partition.eof": True,
    })
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records, ended, deadline = [], set(), time.monotonic() + timeout
        while len(ended) < len(partitions) and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error():
                    ended.add(msg.partition())
                else:
                    records.append(msg)
        return records
    finally:
        consumer.close()


@pytest.fixture
def history(kafka):
    log = HistoryLog(kafka)
    yield log
    log.close()


@pytest.fixture
def runner(kafka):
    """A runner (engine, one worker loop, triggers) in threads of the test process."""
    from orchestrator.runtime.runner import Runner, RunnerOptions

    instance = Runner(RunnerOptions(instance_id=f"test-{uuid.uuid4().hex[:6]}"))
    instance.start()
    yield instance
    instance.stop.set()
    instance.join()
    if instance.failure:
        raise instance.failure


def start_thread(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def database_url() -> str:
    """This test session's database as a DATABASE_URL for a child process: the SQLite test file,
    or the PostgreSQL test database under scripts/with-postgres. (Django points the settings at
    the test database once it has created it.)"""
    from urllib.parse import quote

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return (f"postgres://{quote(db['USER'] or '')}:{quote(db['PASSWORD'] or '')}@{db['HOST']}:{db['PORT']}"
            f"/{quote(db['NAME'])}")
