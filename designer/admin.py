"""Admin for workflow definitions. Versions are immutable history: read-only here."""

from django.contrib import admin

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


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "live_version", "archived", "created_by", "updated_at")
    list_filter = ("archived", ("live_version", admin.EmptyFieldListFilter))
    search_fields = ("slug", "name", "description")
    # Publishing goes through the designer (validation + Kafka first); the live version is not hand-editable.
    readonly_fields = ("slug", "live_version", "created_by", "created_at", "updated_at")
    inlines = [VersionInline]


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(admin.ModelAdmin):
    list_display = ("__str__", "workflow", "number", "message", "created_by", "created_at", "published_at")
    list_filter = ("workflow", ("published_at", admin.EmptyFieldListFilter))
    search_fields = ("workflow__slug", "message")
    readonly_fields = ("workflow", "number", "definition", "message", "created_by", "created_at",
                       "published_at", "published_by")

    def has_add_permission(self, request):
        return False  # a version is created by saving in the designer or the API

    def has_change_permission(self, request, obj=None):
        return False  # editing a stored version would falsify what ran
