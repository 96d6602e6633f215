"""Celery peer benchmark: the three-step workflow as a chain on Redis (Debian's redis-server).

Same measurements as the Sluice runtime benchmark: throughput of N chains started at once,
and p50/p99 latency from apply_async to the last task's finish at half that rate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import ROOT, collector_paused, peak_rss_mib, percentile, stop, wait_for


def ensure_redis() -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    if os.geteuid() != 0:
        raise RuntimeError("redis-server is missing: apt-get install redis-server")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("redis-server")


def _get(result, timeout=120):
    """AsyncResult.get can miss its pub/sub notification: bound it and re-check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return result.get(timeout=5)
        except Exception as exc:  # celery's TimeoutError
            if result.ready():
                return result.result
            last = exc
    raise TimeoutError(f"chain result not ready after {timeout}s: {last}")


def run(runs: int = 5000, latency_seconds: float = 10.0) -> dict:
    from orchestrator.runtime.broker import free_port

    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-celery-"))
    redis = subprocess.Popen([ensure_redis(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    env = dict(os.environ)
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.celery_peer_app", "worker",
                               "--concurrency", "2", "-P", "prefork", "-l", "WARNING", "--without-gossip",
                               "--without-mingle", "--without-heartbeat"], cwd=ROOT, env=env,
                              stdout=open(work / "worker.log", "wb"), stderr=subprocess.STDOUT)
    from celery import chain

    from bench.celery_peer_app import echo, finish, prepare

    def start(n: int):
        return chain(prepare.s({"n": n}), echo.s(), finish.s()).apply_async()

    result = {"runs": runs}
    try:
        wait_for(lambda: _get(start(0), timeout=60), 60, "the celery worker")
        began = time.time()
        pending = [start(i) for i in range(runs)]
        done = [_get(r)["done_at"] for r in pending]
        result["throughput"] = runs / (max(done) - began)
        def latency_at(rate: float) -> tuple[int, float, float]:
            count = int(rate * latency_seconds)
            sent, pending = [], []
            began = time.time()
            with collector_paused():  # as on Sluice's side (bench/harness.py)
                for i in range(count):
                    delay = began + i / rate - time.time()
                    if delay > 0:
                        time.sleep(delay)
                    sent.append(time.time())
                    pending.append(start(i))
            latencies = [(_get(r)["done_at"] - t) * 1000 for r, t in zip(pending, sent)]
            return count, percentile(latencies, 50), percentile(latencies, 99)

        from .runtime import IDLE_BEFORE_SECONDS, IDLE_RUNS, LIGHT_RATE

        rate = result["throughput"] / 2
        count, p50, p99 = latency_at(rate)
        _light, light_p50, light_p99 = latency_at(LIGHT_RATE)
        result.update(rate=rate, latency_runs=count, p50_ms=p50, p99_ms=p99, light_p50_ms=light_p50, light_p99_ms=light_p99)
        after_idle = []
        with collector_paused():
            for i in range(IDLE_RUNS):
                time.sleep(IDLE_BEFORE_SECONDS)
                sent = time.time()
                after_idle.append((_get(start(i))["done_at"] - sent) * 1000)
        result["after_idle_ms"] = (percentile(after_idle, 50), max(after_idle))
        result["peak_rss_mib"] = {"worker": peak_rss_mib(worker.pid), "redis": peak_rss_mib(redis.pid)}
    finally:
        stop(worker)
        stop(redis)
    return result
