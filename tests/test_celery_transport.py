"""Celery's broker: a transport that idles on the embedded default, the named one elsewhere.

The embedded broker ignores the fetch long-poll and kombu's Kafka transport cannot pause its
fetcher, so on the embedded default Celery uses kombu's filesystem transport in the data dir.
These tests run real processes: settings as each deployment sees them, and a real worker that
picks a task up from the folder another process sent it to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def clean_env(data_dir: Path, **extra: str) -> dict:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("KAFKA_", "DATABASE_URL", "REDIS_URL", "SLUICE_", "DJANGO_", "CELERY_"))}
    # A cluster means production, which refuses to start without a secret key of its own.
    secret = {"DJANGO_SECRET_KEY": "celery-transport-test-" + "k" * 40} if "KAFKA_BOOTSTRAP_SERVERS" in extra else {}
    env.update(SLUICE_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="orchestrator.settings", PYTHONUNBUFFERED="1",
               **secret, **extra)
    return env


def celery_conf(env: dict) -> dict:
    code = ("import json, django; django.setup(); from orchestrator.celery import app; "
            "print(json.dumps({'url': app.conf.broker_url, 'options': app.conf.broker_transport_options}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("extra, scheme", [
    ({}, "filesystem://"),  # the embedded default
    ({"KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092"}, "confluentkafka://kafka-1:9092"),  # a cluster
    ({"KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092", "CELERY_BROKER_URL": "redis://cache:6379/1"},
     "redis://cache:6379/1"),  # named explicitly: always wins
    ({"CELERY_BROKER_URL": "redis://cache:6379/2"}, "redis://cache:6379/2"),
])
def test_the_celery_broker_follows_the_deployment(tmp_path, extra, scheme):
    conf = celery_conf(clean_env(tmp_path, **extra))
    assert conf["url"].startswith(scheme)
    if scheme == "filesystem://":
        queue = tmp_path.resolve() / "celery"
        assert conf["options"]["data_folder_in"] == conf["options"]["data_folder_out"] == str(queue / "messages")
        assert conf["options"]["control_folder"] == str(queue / "control")
        assert (queue / "messages").is_dir()  # made by the app: kombu expects it to exist
    else:
        assert "data_folder_in" not in conf["options"]


def test_a_worker_runs_a_task_sent_through_the_filesystem_transport(tmp_path):
    env = clean_env(tmp_path)
    migrated = subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=180)
    assert migrated.returncode == 0, migrated.stderr
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "orchestrator", "worker", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-Q", "sluice", "--concurrency", "1", "-l", "INFO"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Sent from another process, as beat sends schedule ticks.
        send = ("import django; django.setup(); from orchestrator.celery import app; "
                "app.send_task('orchestrator.tasks.start_scheduled_run', args=['no-such-workflow'], queue='sluice')")
        sent = subprocess.run([sys.executable, "-c", send], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)
        assert sent.returncode == 0, sent.stderr
        deadline = time.monotonic() + 60
        while "schedule tick for no-such-workflow skipped" not in log_path.read_text(errors="replace"):
            assert worker.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    output = log_path.read_text(errors="replace")
    assert "Connected to filesystem://" in output
    assert "succeeded" in output
    # Taken off the queue: nothing left for a second delivery.
    assert not any((tmp_path / "celery" / "messages").iterdir())
