"""The runtime's metrics against real runs: what the engine, workers and triggers count."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY, generate_latest

from orchestrator.runtime import commands, metrics
from orchestrator.runtime.metrics import Histograms
from tests.observability_support import failing, samples, three_steps, unique, value, wait_for_samples
from tests.runtime_support import produce, publish, user_topic

# django_db: the registry is the process's, and a web test before this one may have installed
# the web collectors (they read run rows and consumer lag).
pytestmark = [pytest.mark.kafka, pytest.mark.django_db]


def scraped() -> dict:
    return samples(generate_latest(REGISTRY).decode())


def test_histograms_use_inclusive_upper_bounds_and_cumulative_buckets():
    histograms = Histograms((1, 5))
    for observed in (0.5, 1, 3, 5, 9):
        histograms.add(("w",), observed)
    family = histograms.family("x_seconds", "x", ["workflow"])
    buckets = {sample.labels["le"]: sample.value for sample in family.samples if sample.name == "x_seconds_bucket"}
    assert buckets == {"1.0": 2, "5.0": 4, "+Inf": 5}
    totals = {sample.name: sample.value for sample in family.samples if sample.name != "x_seconds_bucket"}
    assert totals == {"x_seconds_count": 5, "x_seconds_sum": 18.5}


def test_runs_steps_retries_and_commits_are_counted(kafka, runner, history):
    metrics.watch_runner(runner)
    ok, doomed = unique("three"), unique("doomed")
    publish(three_steps(ok))
    publish(failing(doomed, attempts=3))
    run_ids = [commands.start_run(ok, 1, {"n": n}) for n in range(5)] + [commands.start_run(doomed, 1, {})]
    history.wait_finished(run_ids, timeout=60)

    # The metrics are recorded right after each commit, which the history reader may beat.
    current = wait_for_samples(scraped, lambda s: value(s, "sluice_runs_finished_total", workflow=doomed,
                                                         status="failed") == 1)
    assert value(current, "sluice_runs_started_total", workflow=ok) == 5
    assert value(current, "sluice_runs_finished_total", workflow=ok, status="succeeded") == 5
    assert value(current, "sluice_runs_started_total", workflow=doomed) == 1
    assert value(current, "sluice_runs_finished_total", workflow=ok, status="failed") == 0
    # Three attempts: two retries, then the step fails for good.
    assert value(current, "sluice_step_retries_total", workflow=doomed, step_type="python") == 2
    assert value(current, "sluice_step_retries_total", workflow=ok, step_type="python") == 0
    # Step durations as the run saw them: two transform steps and one python step per run.
    assert value(current, "sluice_step_duration_seconds_count", workflow=ok, step_type="transform",
                 status="succeeded") == 10
    assert value(current, "sluice_step_duration_seconds_count", workflow=ok, step_type="python",
                 status="succeeded") == 5
    assert value(current, "sluice_step_duration_seconds_count", workflow=doomed, step_type="python",
                 status="failed") == 1
    # Handler executions in the workers: the doomed step ran three times.
    assert value(current, "sluice_step_execution_seconds_count", workflow=ok, step_type="python",
                 outcome="succeeded") == 5
    assert value(current, "sluice_step_execution_seconds_count", workflow=doomed, step_type="python",
                 outcome="failed") == 3
    assert value(current, "sluice_batch_records_count", stage="engine") > 0
    assert value(current, "sluice_transaction_commit_seconds_count", stage="engine") > 0
    assert value(current, "sluice_transaction_commit_seconds_count", stage="worker") > 0
    assert value(current, "sluice_loop_events_total", stage="engine", counter="records") > 0
    assert value(current, "sluice_runner_loops_running") >= 4


def test_trigger_records_matched_and_skipped(kafka, runner, history):
    slug = unique("big-orders")
    topic = user_topic(kafka, "orders")
    publish({"slug": slug, "name": "Big orders", "trigger": {"type": "kafka", "topic": topic,
                                                            "filter": "trigger.total > 100", "start_from": "earliest"},
             "steps": [{"id": "note", "type": "transform", "config": {"output": {"total": "{{ trigger.total }}"}}}],
             "edges": []})
    produce(topic, [json.dumps({"total": total}).encode() for total in (50, 150, 250, 20, 300)])
    history.wait_until(lambda log: len(log.finished()) == 3, 60, "three runs")
    current = wait_for_samples(scraped, lambda s: value(s, "sluice_trigger_records_total", workflow=slug,
                                                         outcome="skipped") == 2)
    assert value(current, "sluice_trigger_records_total", workflow=slug, outcome="matched") == 3
    assert value(current, "sluice_trigger_records_total", workflow=slug, outcome="dead_lettered") == 0
    assert value(current, "sluice_transaction_commit_seconds_count", stage="trigger") > 0
