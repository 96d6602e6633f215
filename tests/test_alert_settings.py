"""The alert settings of a workflow: the designer's page, the admin, and who may change them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from designer.models import Workflow
from monitor.models import AuditEntry, WorkflowAlerts
from tests.test_alerts import Hook
from tests.test_designer_views import user_with

SECRET_URL = "https://hooks.slack.com/services/T0001/B0002/xoxSECRETxox"


@pytest.fixture
def workflow(db):
    return Workflow.objects.create(slug="billing", name="Billing")


@pytest.fixture
def publisher(db):
    return user_with("pat", "view_workflow", "publish_workflow")


@pytest.fixture
def viewer(db):
    return user_with("vic", "view_workflow")


def url(slug="billing"):
    return reverse("designer:alerts", args=[slug])


def test_a_publisher_sets_a_webhook_and_emails(client, publisher, workflow):
    client.force_login(publisher)
    page = client.get(url())
    assert page.status_code == 200 and b"Notify when a run fails" in page.content
    response = client.post(url(), {"on_failure": "on", "webhook_url": SECRET_URL,
                                    "email_to": "ops@example.com, oncall@example.com"})
    assert response.status_code == 302
    alerts = WorkflowAlerts.objects.get(workflow=workflow)
    assert (alerts.on_failure, alerts.webhook_url, alerts.emails) == (
        True, SECRET_URL, ["ops@example.com", "oncall@example.com"])
    assert alerts.updated_by == "pat"
    entry = AuditEntry.objects.get(action="alerts.update")
    assert entry.details["webhook"] == "https://hooks.slack.com/…" and "SECRET" not in str(entry.details)

    # The URL is a credential: the page shows its host only, and an empty answer keeps it.
    page = client.get(url())
    assert b"xoxSECRETxox" not in page.content and b"hooks.slack.com" in page.content
    client.post(url(), {"on_failure": "on", "webhook_url": "", "email_to": "ops@example.com"})
    alerts.refresh_from_db()
    assert alerts.webhook_url == SECRET_URL and alerts.emails == ["ops@example.com"]
    client.post(url(), {"on_failure": "on", "webhook_url": "", "remove_webhook": "on", "email_to": "ops@example.com"})
    alerts.refresh_from_db()
    assert alerts.webhook_url == ""


def test_bad_answers_are_named(client, publisher, workflow):
    client.force_login(publisher)
    page = client.post(url(), {"on_failure": "on", "email_to": "ops@example.com\nnot-an-address"})
    assert page.status_code == 200
    assert b"Not an email address: not-an-address" in page.content
    page = client.post(url(), {"on_failure": "on", "webhook_url": "ftp://example.com/hook"})
    assert b"Enter a valid URL" in page.content or b"must start with http" in page.content
    page = client.post(url(), {"on_failure": "on"})
    assert b"Name a webhook URL or an email address" in page.content
    assert not WorkflowAlerts.objects.exists()


def test_a_viewer_sees_but_may_not_change(client, viewer, workflow):
    WorkflowAlerts.objects.create(workflow=workflow, webhook_url=SECRET_URL)
    client.force_login(viewer)
    page = client.get(url())
    assert page.status_code == 200 and b"disabled" in page.content and b"xoxSECRETxox" not in page.content
    assert client.post(url(), {"on_failure": "", "email_to": ""}).status_code == 403
    assert WorkflowAlerts.objects.get().webhook_url == SECRET_URL


def test_strangers_and_anonymous_users_are_kept_out(client, workflow, db):
    assert client.get(url()).status_code == 302  # to the login page
    client.force_login(user_with("nobody"))
    assert client.get(url()).status_code == 403
    assert client.get(url("no-such-workflow")).status_code == 404


def test_a_test_notification_reaches_the_hook(client, publisher, workflow):
    hook = Hook()
    try:
        WorkflowAlerts.objects.create(workflow=workflow, webhook_url=f"{hook.url}/hook")
        client.force_login(publisher)
        page = client.post(url(), {"action": "test"}, follow=True)
        assert b"Test webhook notification sent" in page.content
        assert hook.bodies[0]["event"] == "test" and "billing" in hook.bodies[0]["text"]
        hook.statuses = [404]
        page = client.post(url(), {"action": "test"}, follow=True)
        assert b"answered HTTP 404" in page.content
    finally:
        hook.close()


def test_the_admin_never_shows_the_webhook_url(admin_client, workflow):
    alerts = WorkflowAlerts.objects.create(workflow=workflow, webhook_url=SECRET_URL, email_to="a@example.com")
    listing = admin_client.get(reverse("admin:monitor_workflowalerts_changelist"))
    assert listing.status_code == 200 and b"hooks.slack.com" in listing.content and b"xoxSECRETxox" not in listing.content
    change = admin_client.get(reverse("admin:monitor_workflowalerts_change", args=[alerts.pk]))
    assert change.status_code == 200 and b"xoxSECRETxox" not in change.content
    response = admin_client.post(reverse("admin:monitor_workflowalerts_change", args=[alerts.pk]),
                                 {"on_failure": "on", "webhook_url": "", "email_to": "b@example.com"})
    assert response.status_code == 302
    alerts.refresh_from_db()
    assert alerts.webhook_url == SECRET_URL and alerts.emails == ["b@example.com"]
