"""Readiness checks shared by the web (/readyz) and the metrics ports of runners and bridges.

Each check answers a short word ("ok", "unreachable", "stopped") that is safe to show to an
unauthenticated probe; the reason, which may name hosts, goes to the log.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from ..runtime.kafka import base_config

log = logging.getLogger(__name__)

# Probes come every few seconds from several places (kubelet, `manage.py up`, a load
# balancer); one broker round trip per this many seconds is enough.
BROKER_CACHE_SECONDS = 1.0
_broker_cache: dict = {"at": -1e9, "value": None}
_broker_lock = threading.Lock()


_clients: dict[tuple, AdminClient] = {}


def _admin(timeout: float) -> AdminClient:
    """One AdminClient per configuration, kept: a fresh client per probe would connect anew
    every few seconds (and a prober such as `manage.py up` asks every few seconds)."""
    # log_level 0: while the broker is down, librdkafka would print a refused connection per try.
    config = base_config(**{"log_level": 0, "socket.connection.setup.timeout.ms": int(timeout * 1000)})
    key = tuple(sorted((name, str(value)) for name, value in config.items()))
    if key not in _clients:
        _clients[key] = AdminClient(config)
    return _clients[key]


def broker(timeout: float = 2.0) -> str:
    """"ok" when a broker of KAFKA_BOOTSTRAP_SERVERS answers a metadata request in `timeout`."""
    with _broker_lock:
        if time.monotonic() - _broker_cache["at"] < BROKER_CACHE_SECONDS:
            return _broker_cache["value"]
        try:
            _admin(timeout).list_topics(timeout=timeout)
            value = "ok"
        except KafkaException as exc:
            log.warning("readiness: the Kafka broker does not answer: %s", exc)
            value = "unreachable"
        _broker_cache.update(at=time.monotonic(), value=value)
        return value


def reset_cache() -> None:
    _broker_cache.update(at=-1e9, value=None)


def database(close: bool = False) -> str:
    """"ok" when the default database answers SELECT 1. `close`: drop this thread's connection
    afterwards (for threads Django's request cycle does not clean up after)."""
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with the reason logged
        log.warning("readiness: the database does not answer: %s", exc)
        return "unreachable"
    finally:
        if close:
            connection.close()


def runner_loops(runner) -> str:
    """"ok" while every loop of `runner` runs: its thread is alive and its Kafka clients are open."""
    if runner.failure is not None or runner.stop.is_set():
        return "stopped"
    if not runner.threads:
        return "starting"
    if not all(thread.is_alive() for thread in runner.threads):
        return "stopped"
    if any(getattr(loop, "consumer", True) is None for loop in runner.loops):
        return "starting"
    return "ok"


def verdict(checks: dict[str, str]) -> tuple[int, dict]:
    ready = all(value == "ok" for value in checks.values())
    return (200 if ready else 503), {"status": "ready" if ready else "not ready", "checks": checks}
