"""librdkafka client settings shared by every Sluice process.

All producers use Java's murmur2 partitioner: every writer of a keyed topic must place a key on
the same partition as every other (librdkafka's default, consistent_random, does not agree with
Java clients, Kafka Streams or Connect).
"""

from __future__ import annotations

from django.conf import settings


def base_config(**overrides) -> dict:
    config = {
        "bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS,
        **settings.KAFKA_CLIENT_CONFIG,
    }
    config.update(overrides)
    return config


def producer_config(**overrides) -> dict:
    return base_config(**{
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.max.bytes": 1048576 * 2,
        **overrides,
    })


def consumer_config(group_id: str, **overrides) -> dict:
    return base_config(**{
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": False,
        **overrides,
    })
