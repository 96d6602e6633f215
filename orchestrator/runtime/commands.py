"""How the web side (and Celery, and the CLI) talk to runners: records on Kafka, nothing else.

Each call returns only once the broker has acknowledged the record, so an API that answers
202 has really handed the command over. Publishing writes the definition to `wf.definitions`
before any start can name its version, which is what lets runners catch up on a start for a
version they have not read yet.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

from confluent_kafka import KafkaException, Producer
from django.conf import settings

from ..messages import LiveVersion, PublishedDefinition, RunCommand, StartRun, TriggerControl
from . import codec
from .kafka import base_config, producer_config
from .topics import Topics

_lock = threading.Lock()
_producer: Producer | None = None


class CommandError(RuntimeError):
    """The broker did not accept a command (unreachable, or rejected the record)."""


def topics() -> Topics:
    return Topics(settings.SLUICE_TOPIC_PREFIX)


def _get_producer() -> Producer:
    global _producer
    with _lock:
        if _producer is None:
            _producer = Producer(producer_config(**{"linger.ms": 0}))
        return _producer


# librdkafka is not fork-safe: a forked child (a Celery prefork worker, a test server) that
# used or destroyed its parent's producer would wait on threads that do not exist in it, or
# abort. The child starts its own; the inherited one is kept referenced so it is never freed there.
_inherited: list[Producer] = []


def _forget_producer_after_fork() -> None:
    global _producer, _lock
    if _producer is not None:
        _inherited.append(_producer)
    _producer, _lock = None, threading.Lock()  # the parent's lock may have been held mid-fork


os.register_at_fork(after_in_child=_forget_producer_after_fork)


def reset_producer() -> None:
    """Forget the shared producer (tests point settings at a new broker)."""
    global _producer
    with _lock:
        if _producer is not None:
            _producer.flush(5)
        _producer = None


def _produce(topic: str, key: str, message, timeout: float = 10.0) -> None:
    producer = _get_producer()
    errors: list = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    try:
        producer.produce(topic, key=key.encode(), value=codec.encode(message),
                         headers=codec.headers_for(message), on_delivery=on_delivery)
    except (KafkaException, BufferError) as exc:
        raise CommandError(f"could not send to {topic}: {exc}") from exc
    remaining = producer.flush(timeout)
    if remaining:
        raise CommandError(f"the broker at {settings.KAFKA_BOOTSTRAP_SERVERS} did not acknowledge within {timeout}s")
    if errors:
        raise CommandError(f"the broker rejected the record for {topic}: {errors[0]}")


def new_run_id() -> str:
    return uuid.uuid4().hex


def publish_definition(slug: str, version: int, definition: dict, by: str = "") -> None:
    """Make `slug@version` available to runners and the live version for new runs."""
    offer_definition(slug, version, definition, by)
    trigger = definition.get("trigger") or {}
    topic = trigger.get("topic") if trigger.get("type") == "kafka" else None
    _produce(topics().definitions, slug, LiveVersion(slug=slug, version=version, trigger_topic=topic,
                                                     trigger_offsets=end_offsets(topic) if topic else None))


def end_offsets(topic: str, timeout: float = 10.0) -> dict[str, int]:
    """Where each partition of `topic` ends now ({} if the topic does not exist yet)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**base_config(), "group.id": f"sluice-offsets-{uuid.uuid4().hex}"})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return {}
        return {str(p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)[1]
                for p in metadata.partitions}
    finally:
        consumer.close()


def offer_definition(slug: str, version: int, definition: dict, by: str = "") -> None:
    """Make `slug@version` known to runners without making it live (test runs of a draft)."""
    _produce(topics().definitions, f"{slug}@{version}",
             PublishedDefinition(slug=slug, version=version, definition=definition,
                                 published_at=time.time(), published_by=by))


def unpublish_definition(slug: str) -> None:
    """No live version any more: runners stop the workflow's triggers; started runs finish."""
    _produce(topics().definitions, slug, LiveVersion(slug=slug, version=None))


def set_trigger_paused(slug: str, paused: bool, by: str = "") -> None:
    """Pause or resume a workflow's trigger on every runner (kept across restarts: compacted)."""
    _produce(topics().definitions, f"{slug}#trigger", TriggerControl(slug=slug, paused=paused, by=by, ts=time.time()))


def send_command(command: RunCommand) -> None:
    """Send a start, cancel, signal or retry command for a run to `wf.runs`."""
    _produce(topics().runs, command.run_id, command)


def start_run(workflow: str, version: int, input, started_by: str = "", trigger: dict | None = None,
              run_id: str | None = None) -> str:
    run_id = run_id or new_run_id()
    send_command(StartRun(run_id=run_id, workflow=workflow, version=version, input=input,
                          trigger=trigger or {"type": "manual"}, started_by=started_by, ts=time.time()))
    return run_id
