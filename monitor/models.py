"""Run projections: the database's view of what the runners did.

Nothing here is the source of truth. Runners write run and step lifecycle events to the
`wf.history` topic; the projector (monitor/projector.py) upserts these rows from it. Every
event carries a per-run sequence number, and a row remembers the last one applied, so replaying
the topic from the start leaves the same rows.
"""

from django.db import models


class RunStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class Run(models.Model):
    id = models.CharField(max_length=100, primary_key=True)
    workflow = models.SlugField(max_length=100, db_index=True)
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING, db_index=True)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    # How the run started: {"type": "manual"|"kafka"|..., "topic", "partition", "offset", "key", ...}
    trigger = models.JSONField(default=dict, blank=True)
    started_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # Sequence number of the last history event folded into this row and its steps.
    last_seq = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("operate_run", "Can cancel, retry, signal and replay runs")]
        indexes = [models.Index(fields=["workflow", "status", "-created_at"])]

    def __str__(self):
        return self.id

    @property
    def duration_seconds(self):
        if self.started_at and self.ended_at:
            return (self.ended_at - self.started_at).total_seconds()
        return None


class StepRun(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    step_id = models.CharField(max_length=100)
    type = models.CharField(max_length=50)
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    # [{"attempt": 1, "started_at": iso, "ended_at": iso, "error": str|None, "backoff_seconds": float|None}]
    attempts = models.JSONField(default=list, blank=True)
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    port = models.CharField(max_length=50, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "started_at", "step_id"]
        constraints = [models.UniqueConstraint(fields=["run", "step_id"], name="unique_step_per_run")]

    def __str__(self):
        return f"{self.run_id}/{self.step_id}"


class HistoryEntry(models.Model):
    """The raw history log of a run, one row per event, for the monitor and websocket catch-up."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="history")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=40)
    step_id = models.CharField(max_length=100, blank=True)
    ts = models.DateTimeField()
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="unique_history_seq")]
