"""librdkafka client settings shared by every Sluice process.

All producers use Java's murmur2 partitioner: every writer of a keyed topic must place a key on
the same partition as every other (librdkafka's default, consistent_random, does not agree with
Java clients, Kafka Streams or Connect).
"""

from __future__ import annotations

from django.conf import settings


def base_config(defaults: dict | None = None, **overrides) -> dict:
    """The cluster and KAFKA_CLIENT_CONFIG, between Sluice's tunable `defaults` (which the
    operator's settings replace) and the `overrides` a client needs to work at all."""
    config = {
        "bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS,
        **(defaults or {}),
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


# How many records of a partition a consumer's fetcher holds before it stops asking for more.
# With librdkafka's defaults (100,000 records, 64 MiB) it keeps fetching while its loop works
# through a backlog, and at the end of the log it asks again at once; the embedded broker,
# which answers a fetch at once instead of holding it until data arrives, serves every empty
# answer. Measured: 20,529 fetch requests in 1.5 s from one busy consumer
# (tests/test_consumer_prefetch.py), about half the broker's CPU in a 20,000-run burst
# (bench/README.md). Holding SLUICE_CONSUMER_PREFETCH records (several of any loop's batches),
# the fetcher looks again every FETCH_QUEUE_BACKOFF_MS instead. On a real cluster fetches wait
# at the end of the log; there this only bounds the memory a consumer reads ahead into.
FETCH_QUEUE_BACKOFF_MS = 20


def resting_fetcher(rest_ms: int) -> dict:
    """Consumer defaults for a loop that gathers a batch for `rest_ms` anyway (the bridge):
    once its fetcher holds any record, it rests that long before asking again.

    While records keep coming, a consumer is never quiet long enough to pause (IdleBackoff),
    and on the embedded broker, which answers at once, its fetcher asks again as soon as an
    answer is in: at 50 runs/s the bridge's took 28% of a core doing that (bench/README.md).
    A loop that waits for a batch loses nothing if the fetcher waits as long. No rest (0)
    leaves the consumer as eager as the others.

    librdkafka decides on the next fetch after it has queued an answer's records; if the loop
    has already taken them, the queue looks empty and it asks at once. So this lowers the
    refetching (to between 1/13 and 1/700 of an eager fetcher's requests in
    tests/test_consumer_prefetch.py; the bridge's CPU at 50 runs/s from 28% to 5% of a core),
    without a bound on it.
    """
    if rest_ms <= 0:
        return {}
    return {"queued.min.messages": 1, "fetch.queue.backoff.ms": rest_ms}


def consumer_config(group_id: str, defaults: dict | None = None, **overrides) -> dict:
    """A consumer's settings: `defaults` replace Sluice's tunable ones for this consumer (and the
    operator's KAFKA_CLIENT_CONFIG replaces both); `overrides` are what it needs to work at all."""
    return base_config(
        defaults={"queued.min.messages": settings.SLUICE_CONSUMER_PREFETCH,
                  "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS, **(defaults or {})},
        **{
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
            **overrides,
        })
