"""/metrics of the web, and the metrics ports of a runner and a bridge, scraped after real runs;
who may read them."""

from __future__ import annotations

import json

import httpx
import pytest

from orchestrator.observability import access
from orchestrator.runtime import commands
from orchestrator.runtime.broker import free_port
from tests.observability_support import samples, scrape, three_steps, unique, value, wait_for, wait_for_samples
from tests.runtime_support import ManageProcess, publish, runner_process

TOKEN = "scrape-me-7f3a"


def test_web_metrics_answer_no_one_by_default(client, settings, db):
    settings.SLUICE_METRICS_TOKEN = ""
    settings.SLUICE_METRICS_ALLOWED_NETWORKS = []
    response = client.get("/metrics")
    assert response.status_code == 403
    assert b"SLUICE_METRICS_TOKEN" in response.content
    # Loopback is no exception on the web: behind a local proxy everyone looks like loopback.
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


def test_web_metrics_need_the_bearer_token(client, settings, db):
    settings.SLUICE_METRICS_TOKEN = TOKEN
    settings.SLUICE_METRICS_ALLOWED_NETWORKS = []
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 403
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert ("sluice_database_up", frozenset()) in samples(response.content.decode())


def test_web_metrics_for_an_allowed_network(client, settings, db):
    settings.SLUICE_METRICS_TOKEN = ""
    settings.SLUICE_METRICS_ALLOWED_NETWORKS = ["10.1.0.0/16"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.2.0.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="::ffff:10.1.9.9").status_code == 200


def test_a_bad_network_is_named(settings):
    settings.SLUICE_METRICS_ALLOWED_NETWORKS = ["10.0.0.0/33"]
    with pytest.raises(Exception, match="10.0.0.0/33"):
        access.allowed_networks()


def test_a_metrics_port_beyond_loopback_needs_a_guard(kafka, settings):
    settings.SLUICE_METRICS_TOKEN = ""
    settings.SLUICE_METRICS_ALLOWED_NETWORKS = []
    runner = runner_process(unique("open"), "--metrics-port", str(free_port()), "--metrics-host", "0.0.0.0")
    runner.process.wait(60)
    output = runner.stop()
    assert runner.process.returncode != 0
    assert "refusing to serve metrics on 0.0.0.0" in output


@pytest.mark.kafka
def test_runner_bridge_and_web_metrics_move_after_runs(kafka, transactional_db, client, settings):
    """The must-show: runs happen, and every place that counts them says so."""
    settings.SLUICE_METRICS_TOKEN = TOKEN
    slug = unique("counted")
    instance = unique("metered")
    runner_port, bridge_port = free_port(), free_port()
    env = {"SLUICE_METRICS_TOKEN": TOKEN, "SLUICE_LOG_FORMAT": "json"}
    runner = runner_process(instance, "--metrics-port", str(runner_port), env=env)
    bridge = ManageProcess("bridge", "--group", kafka.group(f"bridge-{slug}"), "--metrics-port", str(bridge_port), env=env)
    runner_url, bridge_url = f"http://127.0.0.1:{runner_port}", f"http://127.0.0.1:{bridge_port}"
    try:
        wait_for(lambda: httpx.get(f"{runner_url}/readyz", timeout=5).status_code == 200, 60, "the runner to be ready")
        wait_for(lambda: httpx.get(f"{bridge_url}/readyz", timeout=5).status_code == 200, 60, "the bridge to be ready")
        # The token guards the ports too.
        assert httpx.get(f"{runner_url}/metrics", timeout=5).status_code == 403
        assert httpx.get(f"{bridge_url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 403
        before = scrape(f"{runner_url}/metrics", TOKEN)
        assert value(before, "sluice_runs_started_total", workflow=slug) == 0

        publish(three_steps(slug))
        run_ids = [commands.start_run(slug, 1, {"n": n}) for n in range(6)]

        after = wait_for_samples(
            lambda: scrape(f"{runner_url}/metrics", TOKEN),
            lambda s: value(s, "sluice_runs_finished_total", workflow=slug, status="succeeded") == 6, 60)
        assert value(after, "sluice_runs_started_total", workflow=slug) == 6
        assert value(after, "sluice_step_execution_seconds_count", workflow=slug, step_type="python",
                     outcome="succeeded") == 6
        assert value(after, "sluice_batch_records_count", stage="engine") > 0

        projected = wait_for_samples(
            lambda: scrape(f"{bridge_url}/metrics", TOKEN),
            lambda s: value(s, "sluice_history_events_projected_total", kind="run_succeeded") >= 6, 60)
        assert value(projected, "sluice_history_events_projected_total", kind="step_succeeded") >= 18
        assert value(projected, "sluice_projector_batch_seconds_count") > 0
        assert ("process_cpu_seconds_total", frozenset()) in projected

        def web():
            response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
            assert response.status_code == 200
            return samples(response.content.decode())

        seen = wait_for_samples(web, lambda s: ("sluice_runner_last_heartbeat_timestamp_seconds",
                                                frozenset({("instance", instance)})) in s, 30)
        assert value(seen, "sluice_kafka_admin_up") == 1
        assert value(seen, "sluice_database_up") == 1
        assert ("sluice_consumer_lag", frozenset({("group", kafka.group(f"bridge-{slug}")), ("topic", kafka.history)})) in seen
        assert len(run_ids) == 6
    finally:
        runner_output = runner.stop()
        bridge.stop()

    # SLUICE_LOG_FORMAT=json: the runner's own log lines are JSON objects, one per line.
    logged = [json.loads(line) for line in runner_output.splitlines() if line.startswith("{")]
    started = [entry for entry in logged if entry["message"].startswith(f"runner {instance} started")]
    assert started and started[0]["level"] == "INFO" and started[0]["logger"] == "orchestrator.runtime.runner"
    assert {"time", "process", "thread"} <= set(started[0])
