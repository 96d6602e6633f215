"""Failure alerts: a Slack-compatible HTTP POST and/or an email when a run fails.

Two halves, both in the bridge:
- queue_failures(): called by the projector inside the database transaction that folds a
  `run_failed` event into the run's row. It writes one AlertDelivery per channel, unique per
  (run, event seq, channel). A replayed or redelivered history event is skipped by its seq (and
  would hit the unique constraint anyway), so a failure is queued exactly once.
- AlertSender: a thread that sends what is due. A delivery is claimed with a lease (an atomic
  update), sent, then marked sent; a crash between the send and the mark re-sends it after the
  lease, so delivery is at least once. A failed send is logged and retried with backoff up to
  SLUICE_ALERT_ATTEMPTS times, then marked failed. Nothing here may stop the bridge.

Webhook URLs are credentials (Slack's carry their secret in the path): log lines and pages name
only their host (describe_url).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.db import close_old_connections
from django.utils import timezone
from prometheus_client import Counter

from .models import AlertDelivery, WorkflowAlerts

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 10.0
# A claimed delivery not marked sent within this time (its sender died) is due again.
LEASE_SECONDS = 120
BACKOFF_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 300.0
MAX_ERROR_CHARS = 2000

NOTIFICATIONS = Counter("sluice_alert_notifications", "Failure notifications by channel and outcome "
                        "(sent, retried, failed: given up).", ["channel", "outcome"])


def describe_url(url: str) -> str:
    """A webhook URL as pages and logs may show it: scheme and host only."""
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.hostname}/…" if parts.scheme and parts.hostname else ""


def run_url(run_id: str) -> str | None:
    if not settings.SLUICE_BASE_URL:
        return None
    from django.urls import reverse

    return settings.SLUICE_BASE_URL + reverse("monitor:run_detail", args=[run_id])


def failure_payload(run, event) -> dict:
    """The JSON body of a failure notification: Slack's `text`, plus fields for other tools."""
    error = (run.error or "")[:MAX_ERROR_CHARS]
    link = run_url(run.id)
    text = f"Sluice: run {run.id} of {run.workflow} (version {run.version}) failed"
    if error:
        text += f": {error[:300]}"
    if link:
        text += f"\n<{link}|Open the run>"
    return {
        "text": text,
        "event": "run_failed",
        "workflow": run.workflow,
        "version": run.version,
        "run_id": run.id,
        "status": "failed",
        "error": error,
        "started_by": run.started_by,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "failed_at": run.ended_at.isoformat() if run.ended_at else None,
        "url": link,
    }


# ---- queueing, inside the projector's transaction --------------------------------------------
def queue_failures(failures: list) -> int:
    """Queue notifications for newly failed runs: `failures` is [(Run row, run_failed event)].
    Must run inside the transaction that projects those events. Returns how many were queued."""
    if not failures:
        return 0
    slugs = {run.workflow for run, _event in failures}
    configured = {alerts.workflow.slug: alerts for alerts in
                  WorkflowAlerts.objects.filter(workflow__slug__in=slugs, on_failure=True).select_related("workflow")}
    now = timezone.now()
    deliveries = []
    for run, event in failures:
        alerts = configured.get(run.workflow)
        if alerts is None:
            continue
        payload = failure_payload(run, event)
        channels = ([AlertDelivery.Channel.WEBHOOK] if alerts.webhook_url else []) + (
            [AlertDelivery.Channel.EMAIL] if alerts.emails else [])
        deliveries += [AlertDelivery(run_id=run.id, seq=event.seq, workflow=run.workflow, channel=channel,
                                     payload=payload, next_attempt_at=now) for channel in channels]
    AlertDelivery.objects.bulk_create(deliveries, ignore_conflicts=True)
    return len(deliveries)


# ---- sending -----------------------------------------------------------------------------
def send_due(limit: int = 50, now=None) -> int:
    """Send every pending delivery whose time has come (at most `limit`); returns how many
    were tried. Safe to call from several bridges: each delivery is claimed first."""
    now = now or timezone.now()
    due = list(AlertDelivery.objects.filter(status=AlertDelivery.Status.PENDING, next_attempt_at__lte=now)
               .order_by("next_attempt_at", "id")[:limit])
    tried = 0
    for delivery in due:
        lease_until = now + timedelta(seconds=LEASE_SECONDS)
        claimed = AlertDelivery.objects.filter(pk=delivery.pk, status=AlertDelivery.Status.PENDING,
                                               next_attempt_at=delivery.next_attempt_at).update(
            next_attempt_at=lease_until)
        if not claimed:
            continue  # another bridge has it
        tried += 1
        _attempt(delivery)
    return tried


def _attempt(delivery: AlertDelivery) -> None:
    delivery.attempts += 1
    try:
        target = _send(delivery)
    except Exception as exc:  # noqa: BLE001 - any failure is logged and retried, never raised
        delivery.last_error = _reason(exc, delivery)[:MAX_ERROR_CHARS]
        if delivery.attempts >= settings.SLUICE_ALERT_ATTEMPTS:
            delivery.status = AlertDelivery.Status.FAILED
            delivery.next_attempt_at = None
            NOTIFICATIONS.labels(delivery.channel, "failed").inc()
            log.error("alert: %s notification of run %s given up after %d attempts: %s", delivery.channel,
                      delivery.run_id, delivery.attempts, delivery.last_error, extra={"run_id": delivery.run_id})
        else:
            backoff = min(MAX_BACKOFF_SECONDS, BACKOFF_SECONDS * 2 ** (delivery.attempts - 1))
            delivery.next_attempt_at = timezone.now() + timedelta(seconds=backoff)
            NOTIFICATIONS.labels(delivery.channel, "retried").inc()
            log.warning("alert: %s notification of run %s not sent (attempt %d, next in %gs): %s", delivery.channel,
                        delivery.run_id, delivery.attempts, backoff, delivery.last_error,
                        extra={"run_id": delivery.run_id})
    else:
        delivery.status = AlertDelivery.Status.SENT
        delivery.sent_at = timezone.now()
        delivery.next_attempt_at = None
        delivery.last_error = ""
        NOTIFICATIONS.labels(delivery.channel, "sent").inc()
        log.info("alert: %s notification of run %s sent to %s", delivery.channel, delivery.run_id, target,
                 extra={"run_id": delivery.run_id})
    delivery.save(update_fields=["attempts", "status", "sent_at", "next_attempt_at", "last_error"])


class NotConfigured(Exception):
    """The workflow's alert settings no longer name a target for this channel."""


def _send(delivery: AlertDelivery) -> str:
    """Send one delivery; returns where it went (for the log), raises why it did not."""
    alerts = WorkflowAlerts.objects.filter(workflow__slug=delivery.workflow).first()
    payload = delivery.payload
    if delivery.channel == AlertDelivery.Channel.WEBHOOK:
        if alerts is None or not alerts.webhook_url:
            raise NotConfigured("the workflow has no webhook URL any more")
        response = httpx.post(alerts.webhook_url, json=payload, timeout=WEBHOOK_TIMEOUT_SECONDS,
                              headers={"User-Agent": "Sluice alerts"})
        response.raise_for_status()
        return describe_url(alerts.webhook_url)
    if alerts is None or not alerts.emails:
        raise NotConfigured("the workflow has no email addresses any more")
    lines = [payload.get("text", ""), "", f"Workflow: {payload.get('workflow')} (version {payload.get('version')})",
             f"Run: {payload.get('run_id')}", f"Started by: {payload.get('started_by') or '-'}",
             f"Failed at: {payload.get('failed_at') or '-'}", "", "Error:", payload.get("error") or "-"]
    send_mail(f"[Sluice] {payload.get('workflow')}: run {payload.get('run_id')} failed", "\n".join(lines), None,
              alerts.emails, fail_silently=False)
    return ", ".join(alerts.emails)


def _reason(exc: Exception, delivery: AlertDelivery) -> str:
    """Why a send failed, without the webhook URL (httpx puts it in its messages)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"{describe_url(str(exc.request.url))} answered HTTP {exc.response.status_code}"
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.HTTPError):
        try:
            text = text.replace(str(exc.request.url), describe_url(str(exc.request.url)))
        except RuntimeError:  # no request attached
            pass
    return text


def recent_deliveries(slug: str, limit: int = 10) -> list[AlertDelivery]:
    return list(AlertDelivery.objects.filter(workflow=slug).order_by("-created_at", "-id")[:limit])


def send_test(config: WorkflowAlerts) -> list[tuple[str, str | None]]:
    """Send a sample notification through each channel of `config` now, so whoever set it up
    sees it arrive. Returns [(channel, None if sent, else why not)]."""
    slug = config.workflow.slug
    payload = {"text": f"Sluice: test notification for workflow {slug}. Failures of its runs will be "
                       f"reported here.", "event": "test", "workflow": slug, "version": None, "run_id": None,
               "status": "test", "error": "", "started_by": "", "started_at": None, "failed_at": None,
               "url": None}
    results = []
    channels = ([AlertDelivery.Channel.WEBHOOK] if config.webhook_url else []) + (
        [AlertDelivery.Channel.EMAIL] if config.emails else [])
    for channel in channels:
        delivery = AlertDelivery(run_id="test", seq=0, workflow=slug, channel=channel, payload=payload)
        try:
            _send(delivery)
            results.append((channel, None))
        except Exception as exc:  # noqa: BLE001 - reported to the person testing
            results.append((channel, _reason(exc, delivery)))
    return results


class AlertSender:
    """Sends due notifications every `interval` seconds (sooner when woken) until `stop`."""

    def __init__(self, stop: threading.Event, interval: float = 1.0):
        self.stop = stop
        self.interval = interval
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self.run, name="alert-sender", daemon=True)

    def start(self) -> "AlertSender":
        self.thread.start()
        return self

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                while send_due() and not self.stop.is_set():
                    pass
            except Exception:  # noqa: BLE001 - the database may be away for a while: log and go on
                log.exception("alert: sending notifications failed; trying again shortly")
            finally:
                close_old_connections()
            self.wake.wait(self.interval)
            self.wake.clear()

    def join(self, timeout: float = 15.0) -> None:
        self.wake.set()
        self.thread.join(timeout)
