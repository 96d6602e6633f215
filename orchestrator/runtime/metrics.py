"""Prometheus metrics of the runtime loops, recorded once per committed batch.

The loops call one function per batch (engine_committed, worker_executed, trigger_batch,
committed) once their Kafka transaction committed, so an aborted batch counts nothing and a replayed one counts
once. Observations go into plain dicts under one lock taken once per batch, and are turned into
Prometheus families only when someone scrapes (a Collector in prometheus_client's default
registry). prometheus_client's own Counter/Histogram take a lock per call (measured 0.35 us per
inc, 1.6 us per observe); per batch and per step, that would cost the engine loop more than
everything here together.

Counters that the loops keep already (loop.stats, sent in heartbeats) are read at scrape time
by RunnerCollector instead of being counted twice.

This module imports no web app (the engine package never does); the HTTP side is in
orchestrator/observability/.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..engine.state import FAILED, RETRYING, SUCCEEDED, RunState

# Step durations span engine steps (microseconds) to approvals that wait for days.
STEP_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 86400)
BATCH_RECORDS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
COMMIT_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

_STEP_ENDS = (SUCCEEDED, FAILED)


class Histograms:
    """Bucket counts per label tuple; `add` is a bisect and two list updates."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.series: dict[tuple, list] = {}

    def add(self, labels: tuple, value: float) -> None:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0] * (len(self.bounds) + 1) + [0.0]
        row[bisect_left(self.bounds, value)] += 1  # le is inclusive: bisect_left
        row[-1] += value

    def merge(self, other: "Histograms") -> None:
        for labels, counts in other.series.items():
            row = self.series.get(labels)
            if row is None:
                self.series[labels] = list(counts)
            else:
                for index, count in enumerate(counts):
                    row[index] += count

    def family(self, name: str, documentation: str, label_names: list[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=label_names)
        for labels, row in sorted(self.series.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), row[:-1]):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            family.add_metric(list(labels), buckets, row[-1])
        return family


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


class _Store:
    """Everything the loops of this process recorded; merged into under one lock per batch."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.runs_started: Counter = Counter()  # workflow
        self.runs_finished: Counter = Counter()  # (workflow, status)
        self.retries: Counter = Counter()  # (workflow, step_type)
        self.trigger_records: Counter = Counter()  # (workflow, outcome)
        self.step_seconds = Histograms(STEP_SECONDS)  # (workflow, step_type, status)
        self.execution_seconds = Histograms(STEP_SECONDS)  # (workflow, step_type, outcome)
        self.batch_records = Histograms(BATCH_RECORDS)  # (stage,)
        self.commit_seconds = Histograms(COMMIT_SECONDS)  # (stage,)


STORE = _Store()


# ---- what the loops call --------------------------------------------------------------------
def engine_committed(before: dict[str, RunState], after: dict[str, RunState], registry, units: int,
                     commit_seconds: float) -> None:
    """One committed engine batch: `before` is the loop's state map as it was before the batch
    (not yet updated), `after` the batch's new state per touched run. Counts what changed:
    runs started and finished, steps that ended (with their duration) and steps that entered a
    retry. Steps a decision did not touch are the very same objects in both (decide() copies a
    step on first write), so they are skipped by identity."""
    started: Counter = Counter()
    finished: Counter = Counter()
    retries: Counter = Counter()
    step_seconds = Histograms(STEP_SECONDS)
    for run_id, state in after.items():
        if state is None:
            continue
        old = before.get(run_id)
        if old is None:
            started[state.workflow] += 1
        if state.done and (old is None or not old.done):
            finished[(state.workflow, state.status)] += 1
        old_steps = old.steps if old is not None else {}
        spec = None
        for step_id, step in state.steps.items():
            previous = old_steps.get(step_id)
            if previous is step:
                continue
            ended = step.status in _STEP_ENDS and (previous is None or previous.status != step.status
                                                   or previous.attempt != step.attempt)
            retrying = step.status == RETRYING and (previous is None or previous.status != RETRYING
                                                    or previous.attempt != step.attempt)
            if not (ended or retrying):
                continue
            if spec is None:
                spec = registry.get(state.workflow, state.version)
            step_type = spec.steps[step_id].type if spec is not None and step_id in spec.steps else "unknown"
            if retrying:
                retries[(state.workflow, step_type)] += 1
            elif step.started_at is not None and step.ended_at is not None:
                step_seconds.add((state.workflow, step_type, step.status), max(0.0, step.ended_at - step.started_at))
    with STORE.lock:
        STORE.runs_started.update(started)
        STORE.runs_finished.update(finished)
        STORE.retries.update(retries)
        STORE.step_seconds.merge(step_seconds)
        STORE.batch_records.add(("engine",), units)
        STORE.commit_seconds.add(("engine",), commit_seconds)


def worker_executed(tasks, results) -> None:
    """One worker batch ran: how long each handler took, by workflow and step type. Counted
    whether or not the batch's transaction then commits: the handlers did run."""
    executions = Histograms(STEP_SECONDS)
    for task, result in zip(tasks, results):
        executions.add((task.workflow, task.type, "succeeded" if result.ok else "failed"),
                       max(0.0, result.ended_at - result.started_at))
    with STORE.lock:
        STORE.execution_seconds.merge(executions)
        STORE.batch_records.add(("worker",), len(tasks))


def committed(stage: str, seconds: float) -> None:
    """One commit_transaction call of a worker or trigger loop took `seconds`."""
    with STORE.lock:
        STORE.commit_seconds.add((stage,), seconds)


def trigger_batch(workflow: str, counts: Counter) -> None:
    """One committed trigger batch of `workflow`: records that started a run (or joined a
    window), records the filter skipped, records dead-lettered."""
    with STORE.lock:
        STORE.trigger_records[(workflow, "matched")] += counts["runs_started"] + counts["windowed"]
        STORE.trigger_records[(workflow, "skipped")] += counts["skipped"]
        STORE.trigger_records[(workflow, "dead_lettered")] += counts["dlq"]


# ---- exposition -----------------------------------------------------------------------------
class StoreCollector:
    """Renders STORE at scrape time. Families without samples are left out, so a process that
    runs no loop (the web) does not list runner metrics."""

    def collect(self):
        with STORE.lock:
            counters = [
                ("sluice_runs_started", "Runs started by the engine, by workflow.", ["workflow"],
                 {(workflow,): value for workflow, value in STORE.runs_started.items()}),
                ("sluice_runs_finished", "Runs that ended, by workflow and status (succeeded, failed, cancelled).",
                 ["workflow", "status"], dict(STORE.runs_finished)),
                ("sluice_step_retries", "Step attempts that failed and are retried after a backoff.",
                 ["workflow", "step_type"], dict(STORE.retries)),
                ("sluice_trigger_records", "Records read by Kafka triggers, by workflow and outcome "
                 "(matched, skipped by the filter, dead_lettered).", ["workflow", "outcome"],
                 dict(STORE.trigger_records)),
            ]
            histograms = [
                (STORE.step_seconds, "sluice_step_duration_seconds",
                 "Time from a step's start to its end as the run saw it (queueing, waits and retries included).",
                 ["workflow", "step_type", "status"]),
                (STORE.execution_seconds, "sluice_step_execution_seconds",
                 "Time a worker spent running one step attempt's handler.", ["workflow", "step_type", "outcome"]),
                (STORE.batch_records, "sluice_batch_records", "Records (and due timers) per committed batch.",
                 ["stage"]),
                (STORE.commit_seconds, "sluice_transaction_commit_seconds",
                 "Time of the Kafka commit_transaction call per batch.", ["stage"]),
            ]
            families = []
            for name, documentation, label_names, values in counters:
                if values:
                    family = CounterMetricFamily(name, documentation, labels=label_names)
                    for labels, value in sorted(values.items()):
                        family.add_metric(list(labels), value)
                    families.append(family)
            for store, name, documentation, label_names in histograms:
                if store.series:
                    families.append(store.family(name, documentation, label_names))
        yield from families


class RunnerCollector:
    """The counters a runner's loops keep anyway (loop.stats), read at scrape time."""

    def __init__(self, runner):
        self.runner = runner

    def collect(self):
        dead = CounterMetricFamily("sluice_dead_letters", "Records moved to the dead-letter topic, by stage.",
                                   labels=["stage"])
        aborted = CounterMetricFamily("sluice_aborted_transactions",
                                      "Kafka transactions aborted by broker trouble (the batch is re-read).",
                                      labels=["stage"])
        loops = CounterMetricFamily("sluice_loop_events", "Every counter of every runtime loop, by stage and name.",
                                    labels=["stage", "counter"])
        running = GaugeMetricFamily("sluice_runner_loops_running", "Runtime loops of this runner whose thread is alive.")
        totals: Counter = Counter()
        for loop in list(self.runner.loops):
            for key, value in dict(loop.stats).items():
                if ":" not in key:  # per-workflow trigger keys are in sluice_trigger_records
                    totals[(loop.stage, key)] += value
        for (stage, key), value in sorted(totals.items()):
            loops.add_metric([stage, key], value)
            if key == "dlq":
                dead.add_metric([stage], value)
            elif key == "aborted_batches":
                aborted.add_metric([stage], value)
        running.add_metric([], sum(1 for thread in self.runner.threads if thread.is_alive()))
        yield from (dead, aborted, loops, running)


REGISTRY.register(StoreCollector())
_runner_collector: RunnerCollector | None = None


def watch_runner(runner) -> None:
    """Expose `runner`'s loop counters in this process's registry."""
    global _runner_collector
    if _runner_collector is None:
        _runner_collector = RunnerCollector(runner)
        REGISTRY.register(_runner_collector)
    else:
        _runner_collector.runner = runner
