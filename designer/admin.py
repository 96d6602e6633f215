"""Admin for workflow definitions and who may do what with them.

Versions are immutable history: read-only here. Nothing that changes what runs is edited in a
form: archiving goes through designer.services (Kafka first, audited) as admin actions checked
by monitor.permissions, and publishing stays in the designer and the API. The workflow page
lists its grants (view, edit, publish, operate for a user or a group) for administrators to
edit.
"""

from django.contrib import admin, messages

from monitor import permissions
from monitor.models import WorkflowAccess

from . import services
from .models import Workflow, WorkflowVersion


class VersionInline(admin.TabularInline):
    model = WorkflowVersion
    fields = ("number", "message", "created_by", "created_at", "published_at", "published_by")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("-number",)

    def has_add_permission(self, request, obj=None):
        return False


class GrantInline(admin.TabularInline):
    model = WorkflowAccess
    fields = ("permission", "user", "group")
    extra = 0
    verbose_name = "grant"
    verbose_name_plural = "grants (rights on this workflow only; roles give rights on every workflow)"


def _archive_action(archive: bool):
    def action(modeladmin, request, queryset):
        done = 0
        for workflow in queryset:
            allowed = (permissions.can_archive_workflow(request.user, workflow) if archive
                       else permissions.can_edit_workflow(request.user, workflow))
            if not allowed:
                modeladmin.message_user(request, f"{workflow.slug}: you may not {'archive' if archive else 'restore'} "
                                                 "it", messages.WARNING)
                continue
            try:
                if archive:
                    services.archive_workflow(workflow, request.user)
                else:
                    services.unarchive_workflow(workflow, request.user)
                done += 1
            except services.ServiceError as exc:
                modeladmin.message_user(request, f"{workflow.slug}: {exc}", messages.WARNING)
        if done:
            modeladmin.message_user(request, f"{'Archived' if archive else 'Restored'} {done} workflow(s).",
                                    messages.SUCCESS)

    action.__name__ = "archive" if archive else "unarchive"
    action.short_description = ("Archive selected workflows (stops their triggers)" if archive
                                else "Restore selected workflows from the archive")
    return action


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "live_version", "archived", "created_by", "updated_at")
    list_filter = ("archived", ("live_version", admin.EmptyFieldListFilter))
    search_fields = ("slug", "name", "description")
    # Name and description follow the definition; the live version and the archive flag change
    # only through publishing and archiving, which tell the runners first.
    readonly_fields = ("slug", "name", "description", "archived", "live_version", "created_by", "created_at",
                       "updated_at")
    inlines = [GrantInline, VersionInline]
    actions = [_archive_action(True), _archive_action(False)]

    def get_queryset(self, request):
        return permissions.visible_workflows(request.user, super().get_queryset(request))

    def has_add_permission(self, request):
        return False  # a workflow is created from the designer or the API, validated

    def has_delete_permission(self, request, obj=None):
        # A live workflow's runners and triggers would go on without it: archive it first.
        return super().has_delete_permission(request, obj) and (obj is None or obj.archived)


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(admin.ModelAdmin):
    list_display = ("__str__", "workflow", "number", "message", "created_by", "created_at", "published_at")
    list_filter = ("workflow", ("published_at", admin.EmptyFieldListFilter))
    search_fields = ("workflow__slug", "message")
    readonly_fields = ("workflow", "number", "definition", "message", "created_by", "created_at",
                       "published_at", "published_by")

    def get_queryset(self, request):
        slugs = permissions.visible_workflow_slugs(request.user)
        queryset = super().get_queryset(request)
        return queryset if slugs is None else queryset.filter(workflow__slug__in=slugs)

    def has_add_permission(self, request):
        return False  # a version is created by saving in the designer or the API

    def has_change_permission(self, request, obj=None):
        return False  # editing a stored version would falsify what ran
