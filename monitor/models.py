"""Run projections: the database's view of what the runners did.

Nothing here is the source of truth. Runners write run and step lifecycle events to the
`wf.history` topic; the projector (monitor/projector.py) upserts these rows from it. Every
event carries a per-run sequence number, and a row remembers the last one applied, so replaying
the topic from the start leaves the same rows.
"""

from django.conf import settings
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


class TriggerKey(models.Func):
    """One key of a run's trigger as text (`trigger->>'type'`), with the key written into the SQL.

    Django's own `trigger__type=` passes the JSON path as a bound parameter on SQLite, and
    SQLite uses an index on an expression only when the query has the same expression with the
    same literals: filtering on this expression uses the index on it (Run.Meta.indexes) on
    SQLite and PostgreSQL alike.
    """

    output_field = models.CharField()

    def __init__(self, key: str):
        if not key.isidentifier():
            raise ValueError(f"not a trigger key: {key!r}")
        self.key = key
        super().__init__(models.F("trigger"))

    def as_sql(self, compiler, connection, **extra):
        column, params = compiler.compile(self.source_expressions[0])
        if connection.vendor == "postgresql":
            return f"({column} ->> '{self.key}')", params
        return f"json_extract({column}, '$.{self.key}')", params


class Run(models.Model):
    id = models.CharField(max_length=100, primary_key=True)
    # No single-column indexes on workflow, status or created_at: the composite indexes below lead
    # with each of them, and every index is written again when a run changes status.
    workflow = models.SlugField(max_length=100, db_index=False)
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    # How the run started: {"type": "manual"|"kafka"|..., "topic", "partition", "offset", "key", ...}
    trigger = models.JSONField(default=dict, blank=True)
    started_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # Sequence number of the last history event folded into this row and its steps.
    last_seq = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("operate_run", "Can cancel, retry, signal and replay runs")]
        # The monitor's run list is keyset-paginated newest first on (created_at, id), filtered by
        # workflow, status or trigger type (monitor/keyset.py); the dashboard counts per status
        # over a time window from the (status, created_at) index without reading rows.
        indexes = [
            models.Index(fields=["workflow", "status", "-created_at"]),
            models.Index(fields=["created_at", "id"], name="run_created_id"),
            models.Index(fields=["workflow", "created_at", "id"], name="run_workflow_created"),
            models.Index(fields=["status", "created_at", "id"], name="run_status_created"),
            models.Index(TriggerKey("type"), "created_at", "id", name="run_trigger_type_created"),
            # The child runs of a run (run list ?parent=, from the run page's foreach/subworkflow steps).
            models.Index(TriggerKey("run_id"), "created_at", name="run_trigger_parent"),
        ]

    def __str__(self):
        return self.id

    @property
    def duration_seconds(self):
        if self.started_at and self.ended_at:
            return (self.ended_at - self.started_at).total_seconds()
        return None


class StepRun(models.Model):
    # Indexed by unique_step_per_run, which leads with run: a second index would only cost writes.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps", db_index=False)
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

    # Indexed by unique_history_seq, which leads with run.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="history", db_index=False)
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=40)
    step_id = models.CharField(max_length=100, blank=True)
    ts = models.DateTimeField()
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="unique_history_seq")]


class DeadLetter(models.Model):
    """A record a runner loop gave up on, copied from `wf.dlq` with the reason from its headers.

    Identified by its position in the dead-letter topic, so replaying that topic never
    duplicates a row. Operators replay it (optionally edited) or discard it from the monitor.
    """

    class Status(models.TextChoices):
        NEW = "new"
        REPLAYED = "replayed"
        DISCARDED = "discarded"

    topic = models.CharField(max_length=255)
    partition = models.PositiveIntegerField()
    offset = models.BigIntegerField()
    key = models.TextField(blank=True)
    # The original value as text (UTF-8, or base64 prefixed "base64:" when it is not text).
    value = models.TextField(blank=True)
    headers = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    stage = models.CharField(max_length=50, blank=True)
    source_topic = models.CharField(max_length=255, blank=True)
    source_partition = models.IntegerField(null=True, blank=True)
    source_offset = models.BigIntegerField(null=True, blank=True)
    failed_at = models.DateTimeField(db_index=True)
    # The workflow the record belongs to, when it can be told (monitor.dead_letters.attribute):
    # who may see and handle it follows from that workflow's grants.
    workflow = models.CharField(max_length=100, blank=True, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW, db_index=True)
    resolved_by = models.CharField(max_length=150, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # What the replay did: {"to": "trigger"|"runs"|"topic", "run_id", "topic", "partition", "offset",
    # "edited", "started": bool, "detail"}; a later dead letter of the replayed record names it.
    replay = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-failed_at", "-offset"]
        constraints = [
            models.UniqueConstraint(fields=["topic", "partition", "offset"], name="unique_dead_letter_position")
        ]

    def __str__(self):
        return f"{self.topic}[{self.partition}]@{self.offset}"


class RunnerProcess(models.Model):
    """The last heartbeat of each runner process (from the compacted `wf.heartbeats` topic)."""

    instance = models.CharField(max_length=200, primary_key=True)
    host = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(default=0)
    roles = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField()
    last_heartbeat = models.DateTimeField(db_index=True)
    stats = models.JSONField(default=dict, blank=True)
    stopping = models.BooleanField(default=False)

    class Meta:
        ordering = ["instance"]

    def __str__(self):
        return self.instance


class WorkflowAccess(models.Model):
    """Grants a user or a group one right on one workflow (an object permission).

    The roles (groups Viewer, Author, Publisher, Operator) hold model permissions and apply to
    every workflow; a grant applies to its workflow only. Any grant lets its holder see the
    workflow and its runs. monitor.permissions reads both, one function per action.
    """

    class Permission(models.TextChoices):
        VIEW = "view", "view the workflow and its runs"
        EDIT = "edit", "edit (save, restore, archive a draft)"
        PUBLISH = "publish", "publish, unpublish, rotate the webhook token"
        OPERATE = "operate", "start, cancel, retry and signal runs; handle its dead letters"

    workflow = models.ForeignKey("designer.Workflow", on_delete=models.CASCADE, related_name="run_access")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    permission = models.CharField(max_length=16, choices=Permission.choices, default=Permission.VIEW)

    class Meta:
        verbose_name = "workflow grant"
        verbose_name_plural = "workflow grants"
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(user__isnull=False, group__isnull=True)
                           | models.Q(user__isnull=True, group__isnull=False)),
                name="workflow_access_names_user_or_group",
            ),
            models.UniqueConstraint(fields=["workflow", "user", "permission"], condition=models.Q(user__isnull=False),
                                    name="unique_user_grant"),
            models.UniqueConstraint(fields=["workflow", "group", "permission"], condition=models.Q(group__isnull=False),
                                    name="unique_group_grant"),
        ]

    def __str__(self):
        return f"{self.permission} {self.workflow_id} -> {self.user or self.group}"


class AuditEntry(models.Model):
    """Who did what to which object, with what. Written by monitor.audit.record, never edited."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Kept as text too, so the entry still names the actor after the user is deleted.
    username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=50, db_index=True)
    target_type = models.CharField(max_length=50)
    target_id = models.CharField(max_length=200, db_index=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.target_type}:{self.target_id}"


class WorkflowAlerts(models.Model):
    """Who to tell when a run of one workflow fails: an HTTP POST of a Slack-compatible JSON
    body, and/or an email through Django's mail settings. Sent by the bridge (monitor/alerts.py)."""

    workflow = models.OneToOneField("designer.Workflow", on_delete=models.CASCADE, related_name="alerts")
    on_failure = models.BooleanField(default=True, help_text="Notify when a run of this workflow fails.")
    # A Slack (or Mattermost, Teams workflow, any JSON) incoming-webhook URL. Such URLs are
    # credentials: pages show only their host (monitor.alerts.describe_url).
    webhook_url = models.URLField(max_length=2000, blank=True)
    # Addresses, one per line or comma separated.
    email_to = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=150, blank=True)

    class Meta:
        verbose_name = "workflow alert settings"
        verbose_name_plural = "workflow alert settings"

    def __str__(self):
        return f"alerts of {self.workflow_id}"

    @property
    def emails(self) -> list[str]:
        return [address.strip() for address in self.email_to.replace("\n", ",").split(",") if address.strip()]


class AlertDelivery(models.Model):
    """One notification to send: created in the same database transaction as the history event
    that causes it (so a replayed history, skipped by seq, never creates a second), then sent
    at least once by the bridge and marked sent. Unique per (run, event seq, channel)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"  # gave up after SLUICE_ALERT_ATTEMPTS tries

    class Channel(models.TextChoices):
        WEBHOOK = "webhook"
        EMAIL = "email"

    run_id = models.CharField(max_length=100, db_index=True)
    seq = models.PositiveIntegerField()
    workflow = models.CharField(max_length=100, db_index=True)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    # What to say, fixed when the failure is projected (a later retry of the run changes its row).
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "alert deliveries"
        constraints = [models.UniqueConstraint(fields=["run_id", "seq", "channel"], name="unique_alert_per_event")]

    def __str__(self):
        return f"{self.channel} alert for {self.run_id}#{self.seq} ({self.status})"
