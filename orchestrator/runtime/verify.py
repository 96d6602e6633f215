"""Reads what the replayer needs from Kafka and replays runs (manage.py verify_history).

Everything comes from the topics, nothing from the database: wf.definitions (the versions),
wf.runs (the inputs), wf.history (what was recorded), wf.state (the last snapshots) and wf.dlq
(records the engine set aside, which were never applied).
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from .. import messages
from ..engine.replay import Divergence, RecordedInput, replay_run
from . import codec
from .definitions import DefinitionRegistry
from .engine_loop import engine_policy, record_cause
from .kafka import consumer_config
from .topics import Topics


@dataclass
class Report:
    runs: int = 0
    replayed: int = 0
    skipped: int = 0
    divergences: list[Divergence] = field(default_factory=list)


def read_all(topic: str, timeout: float = 120.0):
    """Every committed record of `topic`, partition by partition, from the start."""
    consumer = Consumer(consumer_config(f"sluice-verify-{uuid.uuid4().hex}"))
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return
        partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
        consumer.assign(partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = consumer.position([TopicPartition(topic, p) for p in ends])
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions):
                return
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is None:
                    yield msg
        raise TimeoutError(f"could not read {topic} to its end in {timeout:.0f}s")
    finally:
        consumer.close()


def verify(topics: Topics, run_ids: set[str] | None = None, workflow: str | None = None) -> Report:
    registry = DefinitionRegistry(topics.definitions)
    registry.refresh(timeout=60)
    set_aside = set()
    for msg in read_all(topics.dlq):
        headers = {name: (value or b"").decode() for name, value in msg.headers() or ()}
        if headers.get(messages.DLQ_STAGE) == "engine" and headers.get(messages.DLQ_SOURCE_TOPIC) == topics.runs:
            set_aside.add(record_cause(int(headers[messages.DLQ_SOURCE_PARTITION]),
                                       int(headers[messages.DLQ_SOURCE_OFFSET])))
    history: dict[str, list] = defaultdict(list)
    for msg in read_all(topics.history):
        event = codec.decode_history(msg.value(), msg.headers())
        if (run_ids is None or event.run_id in run_ids) and (workflow is None or event.workflow == workflow):
            history[event.run_id].append(event)
    inputs: dict[str, list[RecordedInput]] = defaultdict(list)
    for msg in read_all(topics.runs):
        run_id = (msg.key() or b"").decode()
        cause = record_cause(msg.partition(), msg.offset())
        if run_id not in history or cause in set_aside:
            continue
        try:
            command = codec.decode_run_command(msg.value(), msg.headers())
        except (codec.DecodeError, ValueError, TypeError):
            continue
        inputs[run_id].append(RecordedInput(cause, command, msg.timestamp()[1] / 1000.0))
    snapshots: dict[str, object] = {}
    for msg in read_all(topics.state):
        run_id = (msg.key() or b"").decode()
        if run_id in history:
            snapshots[run_id] = None if msg.value() is None else codec.decode_state(msg.value())
    policy = engine_policy(topics)
    report = Report(runs=len(history))
    for run_id, events in history.items():
        ordered = sorted(inputs[run_id], key=lambda item: int(item.cause.rsplit("/", 1)[1]))
        problems = replay_run(run_id, events, ordered, registry.get, snapshots.get(run_id, False), policy)
        if problems and problems[0].reason.startswith("the history has events without a cause"):
            report.skipped += 1
            continue
        report.replayed += 1
        report.divergences.extend(problems)
    registry.close()
    return report
