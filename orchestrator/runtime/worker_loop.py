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

import msgspec
from confluent_kafka import Consumer, Producer
from django.conf import settings

from .. import secrets, steps
from ..observability import logs
from ..messages import StepPickedUp, StepResult, StepTask
from ..steps.base import Pending, StepFailure, TaskContext
from ..steps.failures import describe_failure
from . import codec, metrics
from .kafka import consumer_config, producer_config
from .loops import IdleBackoff, Loop, check_size, consumed_offsets, dead_letter, dead_letter_alone, poll_batch, rewind
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
    bound = logs.bind(run_id=task.run_id, step_id=task.step_id)  # the handler's log lines name both
    try:
        step_type = steps.get(task.type) if task.type in steps.REGISTRY else None
        if step_type is None or step_type.runs_on != "worker":
            raise StepFailure(f"step type {task.type!r} is not run by workers")
        config = secrets.resolve(task.config, environ)
        context = TaskContext(run_id=task.run_id, workflow=task.workflow, version=task.version,
                              step_id=task.step_id, attempt=task.attempt,
                              idempotency_key=task.idempotency_key, timeout_seconds=task.timeout_seconds)
        outcome = step_type.execute(config, context)
        pending = isinstance(outcome, Pending)
        output = secrets.mask(outcome.details if pending else outcome)
        return StepResult(run_id=task.run_id, step_id=task.step_id, attempt=task.attempt, ok=True,
                          output=output, started_at=started, ended_at=time.time(), worker=_WORKER_NAME,
                          pending=pending)
    except Exception as exc:
        error = secrets.mask_text(describe_failure(exc))[:MAX_ERROR_CHARS]
        return StepResult(run_id=task.run_id, step_id=task.step_id, attempt=task.attempt, ok=False,
                          error=error, started_at=started, ended_at=time.time(), worker=_WORKER_NAME)
    finally:
        logs.unbind(bound)


_WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
# Handlers typically faster than this run inline in the worker loop.
QUICK_SECONDS = 0.002


def _handler_key(task: StepTask) -> str:
    handler = task.config.get("handler", "") if isinstance(task.config, dict) else ""
    return f"{task.type}:{handler}"


def bounded(result: StepResult, limit: int) -> StepResult:
    """The result, or a failure saying the output is too large to carry (never retried in
    vain: the engine's retry policy decides, and the same handler will likely answer the same)."""
    if not result.ok or not limit or result.output is None:
        return result
    size = len(msgspec.json.encode(result.output))
    if size <= limit:
        return result
    return msgspec.structs.replace(
        result, ok=False, output=None,
        error=f"output of {size} bytes exceeds the limit of {limit} bytes (SLUICE_MAX_PAYLOAD_BYTES)")


class PickUpNotices:
    """Tells the engine that a batch's attempts are in hand once they have taken a while, so it
    does not dispatch them again (schedule-to-start). Quick batches send nothing.

    One thread per worker loop, started on the first batch, waits for the running batch's
    deadline: a threading.Timer per batch started and joined a thread for every batch, which
    was a tenth of the worker process's time in a burst (py-spy, 20,000 runs).

    Plain (not transactional) records: a lost notice costs at most one extra dispatch of an
    attempt with the same idempotency key, which the engine already tolerates.
    """

    def __init__(self, topics: Topics, after_seconds: float):
        self.topics = topics
        self.after_seconds = after_seconds
        self._producer: Producer | None = None
        self._changed = threading.Condition()
        self._batch: list[StepTask] = []
        self._deadline: float | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def watch(self, tasks: list[StepTask]) -> None:
        """The batch of `tasks` starts now: notices go out if it is still running after a while."""
        if not tasks or not self.after_seconds:
            return
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pick-up-notices", daemon=True)
                self._thread.start()
            self._batch, self._deadline = tasks, time.monotonic() + self.after_seconds
            self._changed.notify()

    def done(self) -> None:
        """The batch ended (committed or not): nothing to announce."""
        with self._changed:
            self._batch, self._deadline = [], None

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._closed and (self._deadline is None or time.monotonic() < self._deadline):
                    self._changed.wait(None if self._deadline is None else self._deadline - time.monotonic())
                if self._closed:
                    return
                tasks, self._batch, self._deadline = self._batch, [], None
            self._send(tasks)

    def _send(self, tasks: list[StepTask]) -> None:
        try:
            if self._producer is None:
                self._producer = Producer(producer_config(**{"linger.ms": 5}))
            for task in tasks:
                notice = StepPickedUp(run_id=task.run_id, step_id=task.step_id, attempt=task.attempt,
                                      worker=_WORKER_NAME, ts=time.time())
                self._producer.produce(self.topics.runs, key=task.run_id.encode(), value=codec.encode(notice),
                                       headers=codec.headers_for(notice))
            self._producer.flush(10)
        except Exception:  # noqa: BLE001 - a hint only; the engine copes without it
            log.warning("worker: pick-up notices not sent", exc_info=True)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join(15)
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None


class WorkerLoop(Loop):
    stage = "worker"

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
        # Well inside the engine's schedule-to-start time, so a slow batch is never dispatched twice.
        self.notices = PickUpNotices(topics, min(5.0, settings.SLUICE_SCHEDULE_TO_START_SECONDS / 4))
        self.consumer: Consumer | None = None

    def open(self) -> None:
        name = f"{self.instance_id}-worker-{self.queue}-{self.index}"
        self.open_producer(self.topics, name)
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
        self.close_producer()
        self.notices.close()
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
        outcome: dict[int, StepResult | str] = {}  # id(msg) -> result, or why it is poison
        tasks, task_msgs = [], []
        for msg in msgs:
            try:
                task = codec.decode_task(msg.value(), msg.headers())
            except (codec.DecodeError, ValueError, TypeError) as exc:
                outcome[id(msg)] = f"undecodable task: {exc}"
                continue
            tasks.append(task)
            task_msgs.append(msg)
        self.notices.watch(tasks)
        try:
            results = self._execute(tasks)
        finally:
            self.notices.done()
        for msg, result in zip(task_msgs, results):
            outcome[id(msg)] = bounded(result, settings.SLUICE_MAX_PAYLOAD_BYTES)
        self.commit_isolated(msgs, lambda chunk: self._commit(chunk, outcome),
                             lambda units: rewind(self.consumer, units))
        self.stats["tasks"] += len(tasks)
        self.stats["failed"] += sum(1 for r in results if not r.ok)
        metrics.worker_executed(tasks, results)
        return len(msgs)

    def _commit(self, msgs: list, outcome: dict) -> None:
        producer = self.producer
        producer.begin_transaction()
        for msg in msgs:
            result = outcome[id(msg)]
            if isinstance(result, str):
                dead_letter(producer, self.topics.dlq, msg, "worker", result)
                self.stats["dlq"] += 1
                continue
            value, headers = codec.encode(result), codec.headers_for(result)
            check_size(self.topics.runs, value, None, headers)
            producer.produce(self.topics.runs, key=result.run_id.encode(), value=value, headers=headers)
        producer.send_offsets_to_transaction(consumed_offsets(msgs), self.consumer.consumer_group_metadata(), 30)
        committing = time.perf_counter()
        producer.commit_transaction(60)
        metrics.committed(self.stage, time.perf_counter() - committing)

    def dead_letter_unit(self, unit, reason: str) -> None:
        dead_letter_alone(self, self.topics.dlq, unit, reason)
