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


def publish(definition: dict, version: int = 1) -> None:
    commands.publish_definition(definition["slug"], version, definition, by="test")


def produce(topic: str, records, key=None) -> None:
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS, "partitioner": "murmur2_random"})
    for record in records:
        producer.produce(topic, key=key, value=record)
    assert producer.flush(30) == 0


class RunnerProcess:
    """`manage.py runner` in a child process, pointed at the test's broker and topics."""

    def __init__(self, instance_id: str, *extra_args: str):
        self.instance_id = instance_id
        self.args = [sys.executable, str(ROOT / "manage.py"), "runner", "--instance-id", instance_id, *extra_args]
        self.process: subprocess.Popen | None = None
        self.log_path = Path(settings.DATA_DIR) / f"runner-{instance_id}-{uuid.uuid4().hex[:6]}.log"

    def env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "KAFKA_BOOTSTRAP_SERVERS": settings.KAFKA_BOOTSTRAP_SERVERS,
            "SLUICE_TOPIC_PREFIX": settings.SLUICE_TOPIC_PREFIX,
            "SLUICE_PARTITIONS": str(settings.SLUICE_PARTITIONS),
            "SLUICE_EMBEDDED_BROKER": "1",
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def start(self) -> "RunnerProcess":
        self.log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env(), stdout=self.log_file,
                                        stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log_file.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


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
