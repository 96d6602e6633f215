"""What a workflow's trigger is doing now, as its pages show it: paused or not, the Kafka
trigger's lag in records, and the records its windows dropped as late.

The lag comes from the broker: the committed offsets of the trigger's consumer group
(`<prefix>trigger.<slug>.<topic>`, see orchestrator/runtime/triggers.py) against the topic's end
offsets. That is right with no runner up, and while the trigger is paused (the backlog grows as
records arrive). A partition the group has never committed is counted from where the trigger
will start reading it: the beginning for `start_from: earliest`; for `published` and `latest`
the runners' own figure is used when they report one (heartbeat stat `triggers.lag:<slug>`),
and the status says how many partitions were not read yet.

Late window records are what the runners counted since they started (heartbeat stat
`windows.late:<slug>`), summed over runner processes; each window run also carries the late
records of its key in its trigger metadata.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from orchestrator.runtime.topics import Topics

log = logging.getLogger(__name__)

CACHE_SECONDS = 5.0
# Runner figures older than this are not used (a stopped runner's last heartbeat stays in its row).
FRESH_HEARTBEAT = timedelta(seconds=60)

_cache: dict[tuple, tuple[float, dict]] = {}


def trigger_group(slug: str, topic: str) -> str:
    """The consumer group of a workflow's Kafka trigger (the runners' name for it)."""
    return Topics(settings.SLUICE_TOPIC_PREFIX).group(f"trigger.{slug}.{topic}")


def live_trigger(workflow) -> dict:
    """The trigger of the live version (of the newest version when none is live)."""
    version = workflow.live_version or workflow.latest_version
    trigger = ((version.definition if version else None) or {}).get("trigger")
    return trigger if isinstance(trigger, dict) else {"type": "manual"}


def status(workflow, *, with_lag: bool = True) -> dict:
    """{"workflow", "type", "topic", "paused", "paused_by", "paused_at", "pausable", "windowed",
    "max_runs_per_second", "lag", "lag_source", "unread_partitions", "late_records", "error"}."""
    trigger = live_trigger(workflow)
    kind = trigger.get("type", "manual")
    topic = trigger.get("topic") if kind == "kafka" else None
    result = {
        "workflow": workflow.slug, "type": kind, "topic": topic, "live": workflow.live_version_id is not None,
        "paused": workflow.trigger_paused, "paused_by": workflow.trigger_paused_by or None,
        "paused_at": workflow.trigger_paused_at.isoformat() if workflow.trigger_paused_at else None,
        # A manual trigger has nothing to pause: runs started by hand start while paused too.
        "pausable": kind in ("kafka", "schedule", "webhook"),
        "windowed": isinstance(trigger.get("window"), dict),
        "max_runs_per_second": trigger.get("max_runs_per_second") if kind == "kafka" else None,
        "lag": None, "lag_source": None, "unread_partitions": 0, "late_records": None, "error": None,
    }
    if not topic or not result["live"]:
        return result  # a trigger that is not live reads nothing: no backlog to speak of
    runners = _runner_figures(workflow.slug)
    if result["windowed"]:
        result["late_records"] = runners["late"]
    if not with_lag:
        return result
    try:
        broker = broker_lag(trigger_group(workflow.slug, topic), topic, trigger.get("start_from") or "published")
    except Exception as exc:  # noqa: BLE001 - the page shows why instead of failing
        log.warning("trigger lag of %s unavailable: %s", workflow.slug, exc)
        broker = None
        result["error"] = f"Kafka did not answer: {exc}"
    if broker is not None and not broker["unread"]:
        result.update(lag=broker["lag"], lag_source="broker")
    elif broker is not None and runners["lag"] is not None:
        # Partitions never committed: the runners holding them know where they stand.
        result.update(lag=runners["lag"], lag_source="runners", unread_partitions=broker["unread"])
    elif broker is not None:
        result.update(lag=broker["lag"], lag_source="broker", unread_partitions=broker["unread"])
    elif runners["lag"] is not None:
        result.update(lag=runners["lag"], lag_source="runners")
    return result


def _runner_figures(slug: str) -> dict:
    """Summed heartbeat stats of the runners heard from lately: trigger lag and late records."""
    from .models import RunnerProcess

    lag_key, late_key = f"triggers.lag:{slug}", f"windows.late:{slug}"
    lag = None
    late = 0
    recent = timezone.now() - FRESH_HEARTBEAT
    for runner in RunnerProcess.objects.filter(last_heartbeat__gte=recent).only("stats"):
        stats = runner.stats or {}
        if isinstance(stats.get(lag_key), (int, float)):
            lag = (lag or 0) + int(stats[lag_key])
        if isinstance(stats.get(late_key), (int, float)):
            late += int(stats[late_key])
    return {"lag": lag, "late": late}


def _admin():
    """A short-lived admin client (as monitor/kafka_lag.py uses): one kept for good would keep
    reconnecting, and logging, while the broker is away; answers are cached instead."""
    from confluent_kafka.admin import AdminClient

    from orchestrator.runtime.kafka import base_config

    return AdminClient(base_config())


def broker_lag(group: str, topic: str, start_from: str = "published", timeout: float = 3.0) -> dict:
    """{"lag": records not yet read by `group` on `topic`, "partitions": n, "unread": partitions
    the group never committed} from the broker (cached for a few seconds per group)."""
    key = (settings.KAFKA_BOOTSTRAP_SERVERS, group, topic, start_from)
    cached = _cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    admin = _admin()
    metadata = admin.list_topics(timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        value = {"lag": 0, "partitions": 0, "unread": 0}  # no topic yet: nothing waits
        _cache[key] = (time.monotonic(), value)
        return value
    partitions = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, partitions)],
                                               request_timeout=timeout)[group]
    committed = {tp.partition: tp.offset for tp in future.result(timeout=timeout).topic_partitions or []
                 if tp.offset >= 0}
    ends = _offsets(admin, partitions, OffsetSpec.latest(), timeout)
    starts = _offsets(admin, partitions, OffsetSpec.earliest(), timeout) if start_from == "earliest" else {}
    lag, unread = 0, 0
    for tp in partitions:
        end = ends.get(tp.partition, 0)
        if tp.partition in committed:
            lag += max(0, end - committed[tp.partition])
        elif start_from == "earliest":
            lag += max(0, end - starts.get(tp.partition, 0))
        else:
            unread += 1
    value = {"lag": lag, "partitions": len(partitions), "unread": unread}
    _cache[key] = (time.monotonic(), value)
    return value


def _offsets(admin, partitions, spec, timeout: float) -> dict[int, int]:
    futures = admin.list_offsets({tp: spec for tp in partitions}, request_timeout=timeout)
    return {tp.partition: future.result(timeout=timeout).offset for tp, future in futures.items()}


def page_context(user, workflow, *, with_lag: bool, poll: bool = True) -> dict:
    """What templates/designer/_trigger_state.html shows (the workflow list, the editor, the
    monitor's workflow card): the state, and whether `user` may pause or resume it. Pages render
    it without the lag (no wait on Kafka) and the fragment loads it (`lag_loaded`)."""
    from .permissions import can_pause_trigger

    return {"state": status(workflow, with_lag=with_lag), "lag_loaded": with_lag, "poll": poll,
            "can_pause": can_pause_trigger(user, workflow) and not workflow.archived}


def forget_cached() -> None:
    """Drop cached figures (after a pause or resume, and in tests)."""
    _cache.clear()
