"""URLs of the webhook trigger, mounted under /hooks/ (see orchestrator/webhooks.py)."""

from django.urls import path

from . import webhooks

app_name = "hooks"

urlpatterns = [
    path("<slug:slug>/", webhooks.receive, name="receive"),
    path("<slug:slug>/token/", webhooks.rotate_token, name="rotate-token"),
]
