"""The runner's in-memory registry of published workflow versions, read from `wf.definitions`.

Runners never touch the web database: they learn definitions from the compacted topic, read
from the start at launch and followed afterwards. Publishing writes there before the web
accepts a start, so a start naming a version this registry has not seen yet is answered by
catching up on the topic (`ensure`), never by failing.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from django.conf import settings

from .. import spec
from ..messages import LiveVersion, PublishedDefinition, TriggerControl
from . import codec
from .kafka import consumer_config
from .loops import poll_batch

log = logging.getLogger(__name__)


class DefinitionRegistry:
    def __init__(self, topic: str):
        self.topic = topic
        self._lock = threading.RLock()
        self._versions: dict[tuple[str, int], spec.WorkflowSpec] = {}
        self._live: dict[str, int] = {}
        # Since when (ms, the time of the record that made it so) each live workflow's trigger
        # has listened where it does now: set when the workflow goes live, and again when a
        # version with another trigger type or topic goes live. A Kafka trigger with start_from
        # "published" starts there; a new version with the same trigger keeps the time.
        self._live_since: dict[str, int] = {}
        self._paused: set[str] = set()
        # Where each live Kafka trigger's topic ended when it went live: (topic, partition -> offset).
        self._trigger_start: dict[str, tuple[str, dict[str, int]]] = {}
        self._consumer: Consumer | None = None

    def _open(self) -> Consumer:
        if self._consumer is None:
            consumer = Consumer(consumer_config(f"sluice-definitions-{uuid.uuid4().hex}"))
            consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
            consumer.pause([TopicPartition(self.topic, 0)])
            self._consumer = consumer
        return self._consumer

    def refresh(self, timeout: float = 10.0) -> int:
        """Read every definition record written so far; returns how many were applied."""
        with self._lock:
            consumer = self._open()
            partition = [TopicPartition(self.topic, 0)]
            # Paused between refreshes: an assigned partition would otherwise be refetched in
            # a tight loop on the embedded broker, which ignores the long-poll wait.
            consumer.resume(partition)
            try:
                return self._read_to_end(consumer, timeout)
            finally:
                consumer.pause(partition)

    def _read_to_end(self, consumer: Consumer, timeout: float) -> int:
        low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=timeout)
        applied = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Wait for the position, not the last message, to reach the end: transaction
            # markers take offsets too (FIELD-NOTES).
            position = consumer.position([TopicPartition(self.topic, 0)])[0].offset
            if high <= low or position >= high:
                break
            for msg in poll_batch(consumer, 500, 0.2):
                applied += self._apply(msg)
        return applied

    def _apply(self, msg) -> int:
        key = (msg.key() or b"").decode()
        if msg.value() is None:  # tombstone: a version or pointer removed
            if key.endswith("#trigger"):
                self._paused.discard(key.removesuffix("#trigger"))
            elif "@" in key:
                slug, _, version = key.rpartition("@")
                self._versions.pop((slug, int(version)), None)
            else:
                self._live.pop(key, None)
            return 1
        try:
            record = codec.decode_definition(msg.value())
        except codec.DecodeError as exc:
            log.error("definitions: undecodable record at offset %s: %s", msg.offset(), exc)
            return 0
        if isinstance(record, PublishedDefinition):
            try:
                # With this installation's prefix: a version published before validation refused
                # Sluice's own topics is refused here again.
                workflow = spec.parse(record.definition, topic_prefix=settings.SLUICE_TOPIC_PREFIX)
            except Exception as exc:  # an invalid or unreadable version must not stop the runner
                log.error("definitions: %s@%s is not valid and is ignored: %s", record.slug, record.version, exc)
                return 0
            self._versions[(record.slug, record.version)] = workflow
        elif isinstance(record, LiveVersion):
            if record.version is None:
                self._live.pop(record.slug, None)
                self._live_since.pop(record.slug, None)
                self._trigger_start.pop(record.slug, None)
            else:
                if record.slug not in self._live or self._listens_elsewhere(record.slug, record.version):
                    _kind, timestamp = msg.timestamp()
                    self._live_since[record.slug] = timestamp if timestamp > 0 else int(time.time() * 1000)
                    if record.trigger_offsets is not None:
                        self._trigger_start[record.slug] = (record.trigger_topic, dict(record.trigger_offsets))
                    else:
                        self._trigger_start.pop(record.slug, None)
                self._live[record.slug] = record.version
        elif isinstance(record, TriggerControl):
            if record.paused:
                self._paused.add(record.slug)
            else:
                self._paused.discard(record.slug)
        return 1

    def _listens_elsewhere(self, slug: str, version: int) -> bool:
        old, new = self._versions.get((slug, self._live.get(slug))), self._versions.get((slug, version))
        if old is None or new is None:
            return True
        return (old.trigger.type, old.trigger.topic) != (new.trigger.type, new.trigger.topic)

    def get(self, slug: str, version: int) -> spec.WorkflowSpec | None:
        with self._lock:
            return self._versions.get((slug, version))

    def ensure(self, slug: str, version: int) -> spec.WorkflowSpec | None:
        """The version, catching up on the topic first if it is not known yet."""
        workflow = self.get(slug, version)
        if workflow is None:
            self.refresh()
            workflow = self.get(slug, version)
        return workflow

    def live(self) -> dict[str, spec.WorkflowSpec]:
        """The live version of every published workflow: slug -> spec."""
        with self._lock:
            return {slug: self._versions[(slug, version)] for slug, version in self._live.items()
                    if (slug, version) in self._versions}

    def live_version(self, slug: str) -> int | None:
        with self._lock:
            return self._live.get(slug)

    def live_since(self, slug: str) -> int | None:
        """Since when (ms) the live trigger of `slug` has listened where it does, if it is live."""
        with self._lock:
            return self._live_since.get(slug)

    def trigger_start(self, slug: str, topic: str) -> dict[str, int] | None:
        """Where `topic` ended when `slug`'s trigger on it went live (partition -> offset), if known."""
        with self._lock:
            start = self._trigger_start.get(slug)
            return start[1] if start and start[0] == topic else None

    def paused(self, slug: str) -> bool:
        with self._lock:
            return slug in self._paused

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
