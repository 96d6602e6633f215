"""Workers: wf.tasks.<queue> -> step handler -> StepResult on wf.runs, in one transaction.

Handlers run at least once: a worker that dies after calling out but before its transaction
commits leaves the task to be executed again. Each attempt carries an idempotency key
(`run_id/step_id/attempt`) for the outside world, and the engine keeps only the first result
per attempt, so a duplicate never shows inside Sluice. Retries are the engine's decision: a
worker reports failure and moves on.

A batch's tasks run concurrently in a thread pool (handlers mostly wait on I/O); their results
are produced together with the batch's offsets.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka import Consumer, KafkaException

from .. import secrets, steps
from ..messages import StepResult, StepTask
from ..steps.base import StepFailure, TaskContext
from ..steps.failures import describe_failure
from . import codec
from .kafka import consumer_config
from .loops import IdleBackoff, Loop, consumed_offsets, dead_letter, poll_batch, transactional_producer
from .topics import Topics

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4000


def execute_task(task: StepTask, environ=None) -> StepResult:
    """Run one step attempt and describe its outcome; never raises.

    Secrets never leave here: the config's secret references are resolved from `environ` (the
    runner's environment by default) only now, and the output and error are masked with every
    value this process has resolved (orchestrator/secrets.py). The error is one sentence for
    failures the step explains, or a summary plus the handler's traceback for anything else
    (orchestrator/steps/failures.py); it is masked before it is cut to MAX_ERROR_CHARS, so a
    cut never leaves half a secret.
    """
    started = time.time()
    try:
        step_type = steps.get(task.type) if task.type in steps.REGISTRY else None
        if step_type is None or step_type.runs_on != "worker":
            raise StepFailure(f"step type {task.type!r} is not run by workers")
        config = secrets.resolve(task.config, environ)
        context = TaskContext(run_id=task.run_id, workflow=task.workflow, version=task.version,
                              step_id=task.step_id, attempt=task.attempt,
                              idempotency_key=task.idempotency_key, timeout_seconds=task.timeout_seconds)
        output = secrets.mask(step_type.execute(config, context))
        return StepResult(run_id=task.run_id, step_id=task.step_id, attempt=task.attempt, ok=True,
                          output=output, started_at=started, ended_at=time.time(), worker=_WORKER_NAME)
    except Exception as exc:
        error = secrets.mask_text(describe_failure(exc))[:MAX_ERROR_CHARS]
        return StepResult(run_id=task.run_id, step_id=task.step_id, attempt=task.attempt, ok=False,
                          error=error, started_at=started, ended_at=time.time(), worker=_WORKER_NAME)


_WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
# Handlers typically faster than this run inline in the worker loop.
QUICK_SECONDS = 0.002


def _handler_key(task: StepTask) -> str:
    handler = task.config.get("handler", "") if isinstance(task.config, dict) else ""
    return f"{task.type}:{handler}"


class WorkerLoop(Loop):
    def __init__(self, topics: Topics, queue: str, instance_id: str, index: int, stop: threading.Event,
                 batch_size: int = 200, concurrency: int = 8):
        self.topics = topics
        self.queue = queue
        self.instance_id = instance_id
        self.index = index
        self.stop = stop
        self.batch_size = batch_size
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"step-{queue}")
        self.stats: Counter = Counter()
        self._typical_seconds: dict[str, float] = {}
        self.consumer: Consumer | None = None
        self.producer = None

    def open(self) -> None:
        name = f"{self.instance_id}-worker-{self.queue}-{self.index}"
        self.producer = transactional_producer(f"{self.topics.prefix}{name}")
        self.consumer = Consumer(consumer_config(self.topics.group(f"workers.{self.queue}"), **{
            "group.instance.id": name,
            "session.timeout.ms": 30000,
            "max.poll.interval.ms": 600000,
        }))
        self.consumer.subscribe([self.topics.tasks(self.queue)])
        self.idle = IdleBackoff(self.consumer, self.stop)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _execute(self, tasks: list[StepTask]) -> list[StepResult]:
        """Quick handlers run inline (a thread hand-off costs more than they do); handlers
        that wait (HTTP calls, slow Python) run concurrently in the pool. What is quick is
        learnt per handler from its recent durations."""
        quick = [t for t in tasks if self._typical_seconds.get(_handler_key(t), 1.0) < QUICK_SECONDS]
        slow = [t for t in tasks if self._typical_seconds.get(_handler_key(t), 1.0) >= QUICK_SECONDS]
        futures = [self.pool.submit(execute_task, task) for task in slow] if len(slow) > 1 else []
        results = {}
        for task in quick + (slow if not futures else []):
            results[id(task)] = execute_task(task)
        for task, future in zip(slow, futures):
            results[id(task)] = future.result()
        for task in tasks:
            result = results[id(task)]
            key = _handler_key(task)
            previous = self._typical_seconds.get(key, result.ended_at - result.started_at)
            self._typical_seconds[key] = 0.8 * previous + 0.2 * (result.ended_at - result.started_at)
        return [results[id(task)] for task in tasks]

    def run_once(self) -> int:
        msgs = poll_batch(self.consumer, self.batch_size, self.idle.timeout(0.1))
        if not msgs:
            self.idle.idle()
            return 0
        self.idle.busy()
        tasks, poison = [], []
        for msg in msgs:
            try:
                tasks.append(codec.decode_task(msg.value(), msg.headers()))
            except (codec.DecodeError, ValueError, TypeError) as exc:
                poison.append((msg, f"undecodable task: {exc}"))
        results = self._execute(tasks)
        try:
            self.producer.begin_transaction()
            for msg, reason in poison:
                dead_letter(self.producer, self.topics.dlq, msg, "worker", reason)
            for result in results:
                self.producer.produce(self.topics.runs, key=result.run_id.encode(), value=codec.encode(result),
                                      headers=codec.headers_for(result))
            self.producer.send_offsets_to_transaction(consumed_offsets(msgs),
                                                      self.consumer.consumer_group_metadata(), 30)
            self.producer.commit_transaction(60)
        except KafkaException as exc:
            self.abort_batch(exc, msgs, "worker")
            return 0
        self.stats["tasks"] += len(tasks)
        self.stats["failed"] += sum(1 for r in results if not r.ok)
        self.stats["dlq"] += len(poison)
        return len(msgs)
