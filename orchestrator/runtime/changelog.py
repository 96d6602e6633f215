"""Reading a compacted changelog back into memory: the engine's run states, the windows' state.

Reads the given partitions from the beginning until each position reaches the end offset
(transaction markers take offsets too, so waiting for the last message would hang) and keeps
the latest value per key; a tombstone keeps None. Compaction on the embedded broker rarely runs
(FIELD-NOTES), so this reader never relies on it.
"""

from __future__ import annotations

import time
import uuid
from typing import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from .kafka import consumer_config


class RestoreIncomplete(RuntimeError):
    """A changelog could not be read to its end: working on without it would strand state."""


def restore(topic: str, partitions: list[int], decode: Callable[[bytes], object],
            timeout: float = 120.0) -> dict[bytes, tuple[int, object | None]]:
    """key -> (partition, latest value decoded, or None for a tombstone)."""
    if not partitions:
        return {}
    reader = Consumer(consumer_config(f"sluice-restore-{uuid.uuid4().hex}"))
    try:
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions}
        pending = {p for p, (low, high) in ends.items() if high > low}
        latest: dict[bytes, tuple[int, object | None]] = {}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for msg in reader.consume(1000, timeout=0.2):
                if msg.error():
                    continue
                latest[msg.key()] = (msg.partition(), None if msg.value() is None else decode(msg.value()))
            for tp in reader.position([TopicPartition(topic, p) for p in list(pending)]):
                if tp.offset >= ends[tp.partition][1]:
                    pending.discard(tp.partition)
        if pending:
            raise RestoreIncomplete(f"restore of {topic} partitions {sorted(pending)} did not reach the end "
                                    f"in {timeout:.0f}s")
        return latest
    finally:
        reader.close()
