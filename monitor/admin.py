"""Admin for operators: runs (with cancel/retry actions), steps, dead letters, runners, access, audit.

Projected rows (runs, steps, history, heartbeats) and the audit log are read-only: they record
what happened, and an edit would falsify history. Actions go through monitor.operations, so
they are permission-checked, sent via Kafka and audited like the monitor's buttons.
"""

from django.contrib import admin, messages

from . import operations
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


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ("id", "workflow", "version", "status", "started_by", "created_at", "ended_at")
    list_filter = ("status", "workflow", "created_at")
    search_fields = ("id", "workflow", "started_by")
    date_hierarchy = "created_at"
    inlines = [StepRunInline]
    actions = [_run_action("Cancel", operations.cancel), _run_action("Retry", operations.retry)]

    def has_operate_permission(self, request):
        return request.user.has_perm("monitor.operate_run")

    def has_delete_permission(self, request, obj=None):
        # Deleting a finished run's record is retention, not falsification; superusers only.
        return request.user.is_superuser


@admin.register(StepRun)
class StepRunAdmin(ReadOnlyAdmin):
    list_display = ("run", "step_id", "type", "status", "started_at", "ended_at")
    list_filter = ("status", "type")
    search_fields = ("run__id", "step_id")


@admin.register(HistoryEntry)
class HistoryEntryAdmin(ReadOnlyAdmin):
    list_display = ("run", "seq", "kind", "step_id", "ts")
    list_filter = ("kind",)
    search_fields = ("run__id", "step_id")


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ("id", "failed_at", "stage", "source_topic", "key", "error", "status", "resolved_by")
    list_filter = ("status", "stage", "source_topic")
    search_fields = ("key", "error", "value")
    actions = ["replay", "discard"]

    def has_operate_permission(self, request):
        return request.user.has_perm("monitor.operate_run")

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

    @admin.action(description="Replay selected dead letters (unedited) into the runs topic", permissions=["operate"])
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
    list_display = ("workflow", "user", "group")
    list_filter = ("workflow",)
    search_fields = ("workflow__slug", "user__username", "group__name")
    autocomplete_fields = ()


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("at", "username", "action", "target_type", "target_id")
    list_filter = ("action", "target_type", "at")
    search_fields = ("username", "target_id")
    date_hierarchy = "at"

    def has_delete_permission(self, request, obj=None):
        return False
