"""URLs of the webhook trigger, mounted under /hooks/ (see triggers/webhooks.py)."""

from django.urls import path

from . import webhooks
from .api import WebhookTokenView

app_name = "hooks"

urlpatterns = [
    # Any name: the views answer a JSON 404 for a workflow that does not exist.
    path("<str:slug>/", webhooks.receive, name="receive"),
    # The same view as POST /api/workflows/<slug>/webhook-token/ (session or API token).
    path("<str:slug>/token/", WebhookTokenView.as_view(), name="rotate-token"),
]
