"""Prometheus metrics of the web process and of the bridge (docs/operations.md lists them all).

Each process registers only its own collectors (install_web / install_bridge), so the same
number never comes from two places: consumer lag and database gauges from the web, projection
counters from the bridge, run and step counters from the runners (orchestrator/runtime/metrics.py).
"""

from __future__ import annotations

import logging
import threading

from django.db import DatabaseError
from django.db.models import Count
from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)

PROJECTOR_BATCH_SECONDS = Histogram(
    "sluice_projector_batch_seconds", "Time the bridge took to fold one polled batch into the database.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=None)


class BridgeCollector:
    """The projector's running totals (ProjectorStats), read at scrape time."""

    def __init__(self, projector):
        self.projector = projector

    def collect(self):
        stats = self.projector.stats
        events = CounterMetricFamily("sluice_history_events_projected",
                                     "History events folded into run and step rows, by kind.", labels=["kind"])
        for kind, count in sorted(dict(stats.by_kind).items()):
            events.add_metric([kind], count)
        yield events
        for name, documentation, value in (
            ("sluice_history_duplicates_skipped", "History events skipped as already projected (seq at or "
             "below the run's last).", stats.skipped),
            ("sluice_undecodable_records", "History or heartbeat records that did not match their schema.",
             stats.undecodable),
            ("sluice_dead_letters_projected", "Dead letters copied into the database.", stats.dead_letters),
            ("sluice_heartbeats_projected", "Runner heartbeats projected.", stats.heartbeats),
            ("sluice_alerts_queued", "Failure notifications queued when a run_failed event was projected.",
             stats.alerts_queued),
            ("sluice_records_refused_by_database", "Records the database refused, set aside as dead letters of "
             "stage projector.", stats.set_aside),
        ):
            yield CounterMetricFamily(name, documentation, value=value)


class ConsumerLagCollector:
    """Consumer lag per group and topic, from the Kafka admin API (monitor/kafka_lag.py, cached)."""

    def collect(self):
        from .kafka_lag import consumer_lag

        measured = consumer_lag()
        up = GaugeMetricFamily("sluice_kafka_admin_up", "1 when the Kafka admin API answered the last lag query.")
        up.add_metric([], 0 if measured["error"] else 1)
        yield up
        lag = GaugeMetricFamily("sluice_consumer_lag", "Records not yet committed by a consumer group, per topic.",
                                labels=["group", "topic"])
        for row in measured["groups"]:
            lag.add_metric([row["group"], row["topic"]], row["lag"])
        yield lag


class DatabaseCollector:
    """Gauges read from the run projections at scrape time (none while the database is away:
    /readyz says so, and a scrape still answers)."""

    def collect(self):
        try:
            families = list(self._families())
        except DatabaseError as exc:
            log.warning("metrics: database gauges unavailable: %s", exc)
            families = []
        up = GaugeMetricFamily("sluice_database_up", "1 when the database answered the last scrape's queries.")
        up.add_metric([], 1 if families else 0)
        yield up
        yield from families

    def _families(self):
        from .models import AlertDelivery, DeadLetter, RunnerProcess, Run, RunStatus

        in_flight = GaugeMetricFamily("sluice_runs_in_flight", "Runs pending or running, by workflow and status.",
                                      labels=["workflow", "status"])
        for row in (Run.objects.filter(status__in=[RunStatus.PENDING, RunStatus.RUNNING])
                    .values("workflow", "status").annotate(count=Count("id")).order_by("workflow", "status")):
            in_flight.add_metric([row["workflow"], row["status"]], row["count"])
        yield in_flight
        yield GaugeMetricFamily("sluice_dead_letters_unhandled", "Dead letters neither replayed nor discarded.",
                                value=DeadLetter.objects.filter(status=DeadLetter.Status.NEW).count())
        heartbeat = GaugeMetricFamily("sluice_runner_last_heartbeat_timestamp_seconds",
                                      "When each runner process last sent a heartbeat (Unix time).",
                                      labels=["instance"])
        for instance, last in RunnerProcess.objects.values_list("instance", "last_heartbeat"):
            heartbeat.add_metric([instance], last.timestamp())
        yield heartbeat
        deliveries = GaugeMetricFamily("sluice_alert_deliveries", "Failure notifications by channel and status.",
                                       labels=["channel", "status"])
        for row in AlertDelivery.objects.values("channel", "status").annotate(count=Count("id")).order_by(
                "channel", "status"):
            deliveries.add_metric([row["channel"], row["status"]], row["count"])
        yield deliveries


_installed: set[str] = set()
_lock = threading.Lock()


def install_web() -> None:
    with _lock:
        if "web" not in _installed:
            REGISTRY.register(ConsumerLagCollector())
            REGISTRY.register(DatabaseCollector())
            _installed.add("web")


def install_bridge(projector) -> None:
    with _lock:
        if "bridge" not in _installed:
            REGISTRY.register(BridgeCollector(projector))
            REGISTRY.register(PROJECTOR_BATCH_SECONDS)
            _installed.add("bridge")
