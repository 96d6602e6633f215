"""Admin for operators: runs (with cancel/retry actions), steps, dead letters, runners, grants, audit.

Projected rows (runs, steps, history, heartbeats) and the audit log are read-only: they record
what happened, and an edit would falsify history. Lists hold only what the user may see and
actions go through monitor.operations, so they are checked by monitor.permissions, sent via
Kafka and audited like the monitor's buttons.
"""

from django.contrib import admin, messages

from . import operations, permissions
from .models import AuditEntry, DeadLetter, HistoryEntry, Run, RunnerProcess, StepRun, WorkflowAccess


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class StepRunInline(admin.TabularInline):
    model = StepRun
    fields = ("step_id", "type", "status", "port", "started_at", "ended_at", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


def _run_action(label, operation):
    def action(modeladmin, request, queryset):
        done = 0
        for run in queryset:
            try:
                operation(request.user, run)
                done += 1
            except operations.OperationError as exc:
                modeladmin.message_user(request, f"{run.id}: {exc}", messages.WARNING)
        if done:
            modeladmin.message_user(request, f"{label}: sent for {done} run(s).", messages.SUCCESS)
    action.short_description = f"{label} selected runs"
    action.__name__ = label.lower().replace(" ", "_")
    action.allowed_permissions = ("operate",)
    return action


class VisibleRunsMixin:
    """Only the rows of runs the user may see (monitor.permissions), like the monitor's pages."""

    run_field = "workflow"

    def get_queryset(self, request):
        slugs = permissions.visible_workflow_slugs(request.user)
        queryset = super().get_queryset(request)
        return queryset if slugs is None else queryset.filter(**{f"{self.run_field}__in": slugs})


@admin.register(Run)
class RunAdmin(VisibleRunsMixin, ReadOnlyAdmin):
    list_display = ("id", "workflow", "version", "status", "started_by", "created_at", "ended_at")
    list_filter = ("status", "workflow", "created_at")
    search_fields = ("id", "workflow", "started_by")
    date_hierarchy = "created_at"
    inlines = [StepRunInline]
    actions = [_run_action("Cancel", operations.cancel), _run_action("Retry", operations.retry)]

    def has_operate_permission(self, request):
        # Offered to anyone who may operate some runs; each run is checked again when acted on.
        return permissions.can_operate_any_workflow(request.user)

    def has_delete_permission(self, request, obj=None):
        # Deleting a finished run's record is retention, not falsification; superusers only.
        return request.user.is_superuser


@admin.register(StepRun)
class StepRunAdmin(VisibleRunsMixin, ReadOnlyAdmin):
    run_field = "run__workflow"

    list_display = ("run", "step_id", "type", "status", "started_at", "ended_at")
    list_filter = ("status", "type")
    search_fields = ("run__id", "step_id")


@admin.register(HistoryEntry)
class HistoryEntryAdmin(VisibleRunsMixin, ReadOnlyAdmin):
    run_field = "run__workflow"

    list_display = ("run", "seq", "kind", "step_id", "ts")
    list_filter = ("kind",)
    search_fields = ("run__id", "step_id")


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ("id", "failed_at", "stage", "workflow", "source_topic", "key", "error", "status", "resolved_by")
    list_filter = ("status", "stage", "workflow", "source_topic")
    search_fields = ("key", "error", "value", "workflow")
    actions = ["replay", "discard"]

    def get_queryset(self, request):
        return permissions.visible_dead_letters(request.user)

    def has_operate_permission(self, request):
        # Each letter is checked again (permissions.can_act_on_dead_letter) when acted on.
        return permissions.can_view_dead_letters(request.user)

    def _each(self, request, queryset, operation, label):
        done = 0
        for letter in queryset:
            try:
                operation(request.user, letter)
                done += 1
            except operations.OperationError as exc:
                self.message_user(request, f"dead letter {letter.pk}: {exc}", messages.WARNING)
        if done:
            self.message_user(request, f"{label} {done} dead letter(s).", messages.SUCCESS)

    @admin.action(description="Replay selected dead letters (unedited) to where they came from", permissions=["operate"])
    def replay(self, request, queryset):
        self._each(request, queryset, operations.replay_dead_letter, "Replayed")

    @admin.action(description="Discard selected dead letters", permissions=["operate"])
    def discard(self, request, queryset):
        self._each(request, queryset, operations.discard_dead_letter, "Discarded")


@admin.register(RunnerProcess)
class RunnerProcessAdmin(ReadOnlyAdmin):
    list_display = ("instance", "host", "pid", "roles", "last_heartbeat", "stopping")
    search_fields = ("instance", "host")


@admin.register(WorkflowAccess)
class WorkflowAccessAdmin(admin.ModelAdmin):
    list_display = ("workflow", "permission", "user", "group")
    list_filter = ("permission", "workflow")
    search_fields = ("workflow__slug", "user__username", "group__name")


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("at", "username", "action", "target_type", "target_id")
    list_filter = ("action", "target_type", "at")
    search_fields = ("username", "target_id")
    date_hierarchy = "at"

    def has_delete_permission(self, request, obj=None):
        return False


# ---- failure alerts (monitor/alerts.py) -----------------------------------------------------
from .alert_settings import AlertSettingsForm  # noqa: E402 - kept with the block that uses it
from .alerts import describe_url  # noqa: E402
from .models import AlertDelivery, WorkflowAlerts  # noqa: E402


@admin.register(WorkflowAlerts)
class WorkflowAlertsAdmin(admin.ModelAdmin):
    """Per-workflow failure notifications. The webhook URL is a credential: the list shows its
    host, and the form never renders it (an empty answer keeps it)."""

    form = AlertSettingsForm
    fields = ("workflow", "on_failure", "webhook_url", "remove_webhook", "email_to")
    list_display = ("workflow", "on_failure", "webhook", "email_to", "updated_by", "updated_at")
    list_filter = ("on_failure",)
    search_fields = ("workflow__slug", "email_to")
    autocomplete_fields = ()

    @admin.display(description="webhook")
    def webhook(self, obj):
        return describe_url(obj.webhook_url) or "-"

    def get_readonly_fields(self, request, obj=None):
        return ("workflow",) if obj is not None else ()

    def has_change_permission(self, request, obj=None):
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or permissions.can_configure_alerts(request.user, obj.workflow))

    def save_model(self, request, obj, form, change):
        obj.updated_by = request.user.get_username()
        super().save_model(request, obj, form, change)


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "workflow", "run_id", "channel", "status", "attempts", "sent_at", "last_error")
    list_filter = ("status", "channel")
    search_fields = ("workflow", "run_id")
