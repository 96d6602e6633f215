"""A runner process: the engine loop, workers per queue, triggers and heartbeats, as threads.

Each loop owns its own Kafka clients; they share only the definition registry. A loop that
dies of an unexpected error takes the process down (the supervisor or orchestrator restarts
it) rather than leaving a runner that looks alive but does nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from django.conf import settings

from ..handlers import load_handler_modules
from ..messages import RunnerHeartbeat
from . import codec, tables
from .definitions import DefinitionRegistry
from .engine_loop import EngineLoop
from .kafka import base_config, producer_config
from .topics import Topics, ensure_topics
from .event_waits import EventWaitLoop
from .triggers import TriggerSupervisor
from .window_loop import WindowLoop
from .worker_loop import WorkerLoop

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0


@dataclass
class RunnerOptions:
    instance_id: str = ""
    queues: tuple[str, ...] = ("default",)
    workers_per_queue: int = 1
    worker_concurrency: int = 8
    engine: bool = True
    triggers: bool = True
    batch_size: int = 500
    handler_modules: list[str] = field(default_factory=list)
    # Run the worker loops in this many child processes instead of threads here: handlers
    # then get a core (and a GIL) of their own instead of competing with the engine loop.
    worker_processes: int = 0
    # The metrics port of this runner (0: none); worker processes get the ports after it.
    metrics_port: int = 0


def default_instance_id() -> str:
    """Stable across restarts of the same runner (static group membership depends on it)."""
    return settings.SLUICE_INSTANCE_ID or socket.gethostname()


class Runner:
    def __init__(self, options: RunnerOptions, stop: threading.Event | None = None):
        self.options = options
        self.instance_id = options.instance_id or default_instance_id()
        self.topics = Topics(settings.SLUICE_TOPIC_PREFIX)
        self.stop = stop or threading.Event()
        self.registry = DefinitionRegistry(self.topics.definitions)
        self.loops: list = []
        self.threads: list[threading.Thread] = []
        self.stragglers: list[str] = []  # loops still running after join() gave up on them
        self.failure: BaseException | None = None
        self.started_at = time.time()

    def roles(self) -> list[str]:
        roles = ["engine"] if self.options.engine else []
        if not self.options.worker_processes:
            roles += [f"worker:{queue}" for queue in self.options.queues if self.options.workers_per_queue]
        else:
            roles += [f"worker-processes:{self.options.worker_processes}"]
        return roles + (["triggers"] if self.options.triggers else [])

    def prepare(self) -> None:
        load_handler_modules(self.options.handler_modules or settings.SLUICE_HANDLER_MODULES)
        admin = AdminClient(base_config())
        ensure_topics(admin, self.topics.layout(settings.SLUICE_PARTITIONS, self.options.queues),
                      settings.SLUICE_REPLICATION_FACTOR)
        count = self.registry.refresh(timeout=30)
        log.info("runner %s: %d definition records read", self.instance_id, count)

    def build_loops(self) -> None:
        if self.options.engine:
            self.loops.append(EngineLoop(self.topics, self.registry, self.instance_id, self.stop,
                                         batch_size=self.options.batch_size))
        for queue in self.options.queues if not self.options.worker_processes else ():
            for index in range(self.options.workers_per_queue):
                self.loops.append(WorkerLoop(self.topics, queue, self.instance_id, index, self.stop,
                                             concurrency=self.options.worker_concurrency))
        if self.options.triggers:
            self.loops.append(TriggerSupervisor(self.topics, self.registry, self.instance_id, self.stop))
            self.loops.append(EventWaitLoop(self.topics, self.instance_id, self.stop))
            self.loops.append(WindowLoop(self.topics, self.registry, self.instance_id, self.stop))

    def start(self) -> None:
        self.prepare()
        self.build_loops()
        for loop in self.loops:
            thread = threading.Thread(target=self._guard, args=(loop,), name=type(loop).__name__, daemon=True)
            thread.start()
            self.threads.append(thread)
        if self.options.worker_processes:
            children = threading.Thread(target=self._supervise_worker_processes, name="worker-processes", daemon=True)
            children.start()
            self.threads.append(children)
        heartbeat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        heartbeat.start()
        self.threads.append(heartbeat)
        log.info("runner %s started: %s", self.instance_id, ", ".join(self.roles()))

    def _worker_command(self, index: int) -> list[str]:
        return [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "runner", "--no-engine", "--no-triggers",
                "--instance-id", f"{self.instance_id}-w{index}", "--queues", ",".join(self.options.queues),
                "--workers", str(self.options.workers_per_queue),
                "--concurrency", str(self.options.worker_concurrency),
                *(["--metrics-port", str(self.options.metrics_port + 1 + index)] if self.options.metrics_port else [])]

    def _supervise_worker_processes(self) -> None:
        """Keep the worker child processes running until stop; restart one that exits."""
        children: dict[int, subprocess.Popen] = {}
        backoff: dict[int, float] = {}
        try:
            while not self.stop.is_set():
                for index in range(self.options.worker_processes):
                    child = children.get(index)
                    if child is not None and child.poll() is None:
                        continue
                    if child is not None:
                        log.warning("runner: worker process %d exited with %s; restarting", index, child.returncode)
                        backoff[index] = min(30.0, backoff.get(index, 0.5) * 2)
                        if self.stop.wait(backoff[index]):
                            return
                    children[index] = subprocess.Popen(self._worker_command(index), env=os.environ.copy())
                self.stop.wait(1.0)
        finally:
            for child in children.values():
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children.values():
                try:
                    child.wait(20)
                except subprocess.TimeoutExpired:
                    child.kill()

    def _guard(self, loop) -> None:
        try:
            loop.run()
        except BaseException as exc:  # noqa: BLE001 - report and stop the whole runner
            log.exception("runner: %s stopped with an error", type(loop).__name__)
            self.failure = exc
            self.stop.set()

    def stats(self) -> dict:
        total: Counter = Counter()
        for loop in self.loops:
            for key, value in loop.stats.items():
                total[f"{loop.stage}.{key}"] += value
            for slug, lag in (loop.lags() if hasattr(loop, "lags") else {}).items():
                total[f"{loop.stage}.lag:{slug}"] = lag
        return dict(total)

    def _heartbeat(self) -> None:
        producer = Producer(producer_config(**{"linger.ms": 50}))
        while True:
            stopping = self.stop.is_set()
            beat = RunnerHeartbeat(instance=self.instance_id, host=socket.gethostname(), pid=os.getpid(),
                                   roles=self.roles(), started_at=self.started_at, ts=time.time(),
                                   stats=self.stats(), stopping=stopping)
            try:
                producer.produce(self.topics.heartbeats, key=self.instance_id.encode(), value=codec.encode(beat),
                                 headers=codec.headers_for(beat))
                producer.poll(0)
            except Exception:  # heartbeats are best effort
                log.debug("heartbeat not sent", exc_info=True)
            if stopping:
                producer.flush(3)
                return
            self.stop.wait(HEARTBEAT_SECONDS)

    def join(self, timeout: float = 30.0) -> list[str]:
        """Wait up to `timeout` for every loop; returns the names of those still running."""
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.stragglers = [thread.name for thread in self.threads if thread.is_alive()]
        if not self.stragglers:
            self.registry.close()
            tables.close_store()  # the lookup tables its workers started
        return self.stragglers

    def run_forever(self) -> None:
        self.start()
        try:
            while not self.stop.wait(1.0):
                pass
        finally:
            self.stop.set()
            self.join()
        if self.failure is not None:
            raise RuntimeError(f"runner stopped: {self.failure}") from self.failure
