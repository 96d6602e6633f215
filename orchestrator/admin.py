"""Admin for orchestrator-owned records: which workflows have a webhook token, and since when.

Read-only: a token is issued or rotated with `manage.py webhook_token SLUG --rotate` or by
POST /hooks/<slug>/token/, never typed into a form, and only its digest exists to show.
"""

from django.contrib import admin

from .models import WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("slug", "created_at", "rotated_at")
    search_fields = ("slug",)
    readonly_fields = ("slug", "created_at", "rotated_at")
    exclude = ("token_hash",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
