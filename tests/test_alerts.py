"""Failure alerts: a run fails, the bridge tells a local HTTP server (Slack-compatible JSON) and
an inbox, once, even when the history is read again; sends that fail are retried, then given up."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.utils import timezone

from designer.models import Workflow
from monitor import alerts
from monitor.models import AlertDelivery, Run, WorkflowAlerts
from monitor.projector import Projector
from orchestrator.runtime import commands
from tests.observability_support import failing, unique, wait_for
from tests.runtime_support import ManageProcess, publish


class Hook:
    """A local HTTP server standing in for Slack: records each POST, answers the next status."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.statuses: list[int] = []  # answered in turn; 200 once they run out
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.bodies.append(json.loads(body))
                hook.paths.append(self.path)
                status = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


def configure(slug: str, **fields) -> WorkflowAlerts:
    workflow = Workflow.objects.create(slug=slug, name=slug)
    return WorkflowAlerts.objects.create(workflow=workflow, **fields)


def project(topics) -> Projector:
    projector = Projector(group_id=f"alerts-{uuid.uuid4().hex[:6]}")
    try:
        projector.run_until_idle(idle_seconds=1.0, timeout=60)
    finally:
        projector.close()
    return projector


@pytest.mark.kafka
def test_the_bridge_posts_a_failure_to_a_local_http_server(kafka, runner, history, hook, transactional_db, settings):
    settings.SLUICE_BASE_URL = "https://sluice.example.com"
    slug = unique("payments")
    configure(slug, webhook_url=f"{hook.url}/services/T000/B000/s3cr3t")
    publish(failing(slug, attempts=1, message="card declined"))
    ok = unique("fine")
    publish({"slug": ok, "name": "Fine", "trigger": {"type": "manual"},
             "steps": [{"id": "a", "type": "transform", "config": {"output": {"x": 1}}}], "edges": []})
    configure(ok, webhook_url=f"{hook.url}/services/T000/B000/other")
    bridge = ManageProcess("bridge", "--group", f"bridge-{slug}", env={"SLUICE_BASE_URL": settings.SLUICE_BASE_URL})
    try:
        run_id = commands.start_run(slug, 1, {"order": 7}, started_by="alice")
        fine_id = commands.start_run(ok, 1, {})
        history.wait_finished([run_id, fine_id], timeout=60)
        wait_for(lambda: hook.bodies, 60, "the failure notification")
    finally:
        output = bridge.stop()
    assert len(hook.bodies) == 1, hook.bodies  # the run that succeeded notifies no one
    body = hook.bodies[0]
    assert hook.paths == ["/services/T000/B000/s3cr3t"]
    assert body["text"].startswith(f"Sluice: run {run_id} of {slug} (version 1) failed: ")
    assert "card declined" in body["text"]
    assert body["url"] == f"https://sluice.example.com/monitor/runs/{run_id}/"
    assert f"<{body['url']}|Open the run>" in body["text"]
    assert {key: body[key] for key in ("event", "workflow", "version", "run_id", "status", "started_by")} == {
        "event": "run_failed", "workflow": slug, "version": 1, "run_id": run_id, "status": "failed",
        "started_by": "alice"}
    assert "card declined" in body["error"] and body["failed_at"]
    delivery = AlertDelivery.objects.get(run_id=run_id)
    assert (delivery.status, delivery.attempts, delivery.channel) == ("sent", 1, "webhook")
    assert "s3cr3t" not in output  # the URL is a credential: the log names its host only


@pytest.mark.kafka
def test_email_once_even_when_the_history_is_projected_again(kafka, runner, history, transactional_db, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    slug = unique("invoices")
    configure(slug, email_to="ops@example.com,\nfinance@example.com")
    publish(failing(slug, attempts=1, message="ledger closed"))
    run_id = commands.start_run(slug, 1, {})
    history.wait_finished([run_id], timeout=60)

    projector = project(kafka)
    assert projector.stats.alerts_queued == 1
    assert alerts.send_due() == 1
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ops@example.com", "finance@example.com"]
    assert message.subject == f"[Sluice] {slug}: run {run_id} failed"
    assert "ledger closed" in message.body

    # The whole history again, in a group of its own: every event is skipped by its seq.
    again = project(kafka)
    assert again.stats.alerts_queued == 0 and again.stats.skipped > 0
    assert alerts.send_due() == 0
    assert len(mail.outbox) == 1
    assert AlertDelivery.objects.filter(run_id=run_id).count() == 1


def queue_failure(slug: str, seq: int = 3) -> AlertDelivery:
    """A failed run's row and its run_failed event, queued as the projector does."""
    run = Run.objects.create(id=f"{slug}-run", workflow=slug, version=2, status="failed", error="boom",
                             created_at=timezone.now(), ended_at=timezone.now())

    class Event:
        pass

    event = Event()
    event.seq = seq
    assert alerts.queue_failures([(run, event)]) == 1
    return AlertDelivery.objects.get(run_id=run.id, seq=seq)


def test_a_queued_failure_is_unique_per_event(db, hook):
    slug = unique("twice")
    configure(slug, webhook_url=hook.url)
    queue_failure(slug)
    run = Run.objects.get(workflow=slug)

    class Event:
        seq = 3

    alerts.queue_failures([(run, Event())])
    assert AlertDelivery.objects.filter(run_id=run.id).count() == 1


def test_failed_sends_are_retried_with_backoff_then_given_up(db, hook, settings, caplog):
    settings.SLUICE_ALERT_ATTEMPTS = 3
    slug = unique("flaky-hook")
    configure(slug, webhook_url=f"{hook.url}/hooks/very-secret-path")
    delivery = queue_failure(slug)
    hook.statuses = [500, 503, 500]
    caplog.set_level(logging.INFO, logger="monitor.alerts")

    assert alerts.send_due() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.next_attempt_at > timezone.now()  # backoff: not due yet
    assert alerts.send_due() == 0
    assert delivery.last_error == "http://127.0.0.1/… answered HTTP 500"

    assert alerts.send_due(now=timezone.now() + timedelta(minutes=10)) == 1
    assert alerts.send_due(now=timezone.now() + timedelta(minutes=20)) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert len(hook.bodies) == 3
    assert alerts.send_due(now=timezone.now() + timedelta(hours=1)) == 0  # given up: never again
    assert "very-secret-path" not in caplog.text and "very-secret-path" not in delivery.last_error
    assert "given up after 3 attempts" in caplog.text


def test_an_unreachable_hook_never_stops_the_sender(transactional_db, settings):
    slug = unique("nowhere")
    from orchestrator.runtime.broker import free_port

    configure(slug, webhook_url=f"http://127.0.0.1:{free_port()}/x")
    delivery = queue_failure(slug)
    stop = threading.Event()
    sender = alerts.AlertSender(stop, interval=0.05).start()
    try:
        wait_for(lambda: AlertDelivery.objects.get(pk=delivery.pk).attempts >= 1, 30, "a first attempt")
        assert sender.thread.is_alive()
    finally:
        stop.set()
        sender.join()
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.last_error.startswith("ConnectError")


def test_a_hook_removed_after_the_failure_is_not_called(db, hook, settings):
    settings.SLUICE_ALERT_ATTEMPTS = 1
    slug = unique("removed")
    alerts_row = configure(slug, webhook_url=hook.url)
    delivery = queue_failure(slug)
    alerts_row.webhook_url = ""
    alerts_row.save()
    alerts.send_due()
    delivery.refresh_from_db()
    assert delivery.status == "failed" and "no webhook URL" in delivery.last_error
    assert hook.bodies == []
