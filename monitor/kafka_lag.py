"""Consumer lag per group and topic, from the Kafka admin API (committed offsets vs. end offsets).

Only this installation's groups: their ids start with the topic prefix (Topics.group), so a
cluster shared with other installations or applications shows just Sluice's own lag here.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from django.conf import settings

from orchestrator.runtime.kafka import base_config

log = logging.getLogger(__name__)

_cache: dict = {"at": 0.0, "value": None, "key": None}
CACHE_SECONDS = 5.0


def consumer_lag(timeout: float = 3.0) -> dict:
    """{"groups": [{"group", "topic", "partitions", "committed", "end", "lag"}], "error": str|None}.

    Cached for a few seconds: every dashboard refresh of every open page would otherwise ask the
    brokers again."""
    config = base_config()
    prefix = settings.SLUICE_TOPIC_PREFIX
    key = (config.get("bootstrap.servers"), prefix)
    if _cache["value"] is not None and _cache["key"] == key and time.monotonic() - _cache["at"] < CACHE_SECONDS:
        return _cache["value"]
    try:
        value = {"groups": _measure(AdminClient(config), prefix, timeout), "error": None}
    except (KafkaException, Exception) as exc:  # the dashboard shows the reason instead of failing
        log.warning("consumer lag unavailable: %s", exc)
        value = {"groups": [], "error": f"Kafka admin API unavailable: {exc}"}
    _cache.update(at=time.monotonic(), value=value, key=key)
    return value


def _measure(admin: AdminClient, prefix: str, timeout: float) -> list[dict]:
    listing = admin.list_consumer_groups(request_timeout=timeout).result(timeout=timeout)
    group_ids = sorted(group.group_id for group in listing.valid if group.group_id.startswith(prefix))
    committed: dict[str, dict[TopicPartition, int]] = {}
    for group_id in group_ids:
        futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group_id)],
                                                    request_timeout=timeout)
        result = futures[group_id].result(timeout=timeout)
        committed[group_id] = {TopicPartition(tp.topic, tp.partition): tp.offset
                               for tp in result.topic_partitions or [] if tp.offset >= 0}
    wanted = {tp for offsets in committed.values() for tp in offsets}
    ends: dict[tuple[str, int], int] = {}
    if wanted:
        futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in wanted}, request_timeout=timeout)
        for tp, future in futures.items():
            ends[(tp.topic, tp.partition)] = future.result(timeout=timeout).offset
    rows = []
    for group_id, offsets in committed.items():
        per_topic: dict[str, list] = defaultdict(list)
        for tp, offset in offsets.items():
            per_topic[tp.topic].append((offset, ends.get((tp.topic, tp.partition), offset)))
        for topic, pairs in sorted(per_topic.items()):
            rows.append({"group": group_id, "topic": topic, "partitions": len(pairs),
                         "committed": sum(c for c, _ in pairs), "end": sum(e for _, e in pairs),
                         "lag": sum(max(e - c, 0) for c, e in pairs)})
    return rows
