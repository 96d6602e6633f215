"""Workflow definitions and their immutable versions.

A Workflow is the named, long-lived thing a user sees in the list; every save creates a new
WorkflowVersion holding the full definition (the public JSON format of DESIGN.md section 4).
Versions are never edited after creation: restoring an old version saves it again as a new one.
"""

from django.conf import settings
from django.db import models


class Workflow(models.Model):
    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    archived = models.BooleanField(default=False)
    # The version runners execute for new runs; null until the first publish.
    live_version = models.ForeignKey(
        "WorkflowVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The trigger's pause switch as pages show it. Runners follow the TriggerControl record on
    # `wf.definitions` (written first, designer.services.set_trigger_paused); schedules and
    # webhooks, which start runs from the web side, read this column.
    trigger_paused = models.BooleanField(default=False)
    trigger_paused_by = models.CharField(max_length=150, blank=True)
    trigger_paused_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["slug"]
        permissions = [("publish_workflow", "Can publish workflow versions")]

    def __str__(self):
        return self.name or self.slug

    @property
    def latest_version(self):
        return self.versions.order_by("-number").first()


class WorkflowVersion(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    message = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "number"], name="unique_version_number")
        ]

    def __str__(self):
        return f"{self.workflow.slug}@{self.number}"
