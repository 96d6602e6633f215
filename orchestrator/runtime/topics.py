"""Sluice's own topics: names (prefix configurable) and creation with the AdminClient."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    prefix: str = "wf."

    @property
    def definitions(self) -> str:
        return f"{self.prefix}definitions"

    @property
    def runs(self) -> str:
        return f"{self.prefix}runs"

    @property
    def state(self) -> str:
        return f"{self.prefix}state"

    @property
    def history(self) -> str:
        return f"{self.prefix}history"

    @property
    def waits(self) -> str:
        return f"{self.prefix}waits"

    @property
    def heartbeats(self) -> str:
        return f"{self.prefix}heartbeats"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}dlq"

    @property
    def windows_in(self) -> str:
        """Windowed triggers' records re-keyed by window key (the repartition topic)."""
        return f"{self.prefix}windows.in"

    @property
    def windows(self) -> str:
        """Open windows per workflow and key (compacted changelog, co-partitioned with windows.in)."""
        return f"{self.prefix}windows"

    @property
    def producers(self) -> str:
        """Each loop's current transactional id, so a restart can fence it (transactions.py)."""
        return f"{self.prefix}producers"

    def tasks(self, queue: str) -> str:
        return f"{self.prefix}tasks.{queue}"

    def group(self, role: str) -> str:
        """Consumer group id for a role ("engine", "workers.default", "projector", ...).

        Scoped by the prefix: two Sluice installations sharing a cluster must not share groups
        (and the embedded broker never forgets a static member of a group).
        """
        return f"{self.prefix}{role}"

    def layout(self, partitions: int, queues: tuple[str, ...] = ("default",)) -> dict[str, tuple[int, dict]]:
        """Every topic Sluice needs: name -> (partitions, topic config)."""
        compacted = {"cleanup.policy": "compact"}
        keep = {"retention.ms": "-1"}  # run records must never age out under a live run
        topics = {
            self.definitions: (1, compacted),  # one partition: one total order of publishes
            self.runs: (partitions, keep),
            self.state: (partitions, compacted),
            self.history: (partitions, {}),
            self.waits: (1, compacted),
            self.heartbeats: (1, compacted),
            self.dlq: (1, keep),
            self.producers: (1, compacted),
            self.windows_in: (partitions, keep),
            self.windows: (partitions, compacted),
        }
        for queue in queues:
            topics[self.tasks(queue)] = (partitions, keep)
        return topics


def ensure_topics(admin: AdminClient, wanted: dict[str, tuple[int, dict]], replication_factor: int = 1) -> list[str]:
    """Create the topics in `wanted` that do not exist yet; returns the names created."""
    existing = set(admin.list_topics(timeout=10).topics)
    new = [
        NewTopic(name, num_partitions=partitions, replication_factor=replication_factor, config=config)
        for name, (partitions, config) in wanted.items()
        if name not in existing
    ]
    if not new:
        return []
    created = []
    for name, future in admin.create_topics(new, operation_timeout=10).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: another process won the race
                raise
    log.info("created topics: %s", ", ".join(created) or "none")
    return created
