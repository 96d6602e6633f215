"""The webhook token's REST endpoint: POST /api/workflows/<slug>/webhook-token/ (and, for the same
view, POST /hooks/<slug>/token/). Session or API token, for users allowed to publish."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.response import Response

from monitor import audit, permissions, workflows
from webbase.api import ErrorSerializer, SluiceAPIView, require

from . import webhooks

WebhookCallSerializer = inline_serializer("WebhookCall", fields={
    "workflow": serializers.CharField(), "url": serializers.URLField(), "header": serializers.CharField(),
    "token": serializers.CharField(), "curl": serializers.CharField(),
})


class WebhookTokenView(SluiceAPIView):
    """Issue a new webhook token for a workflow; the old one stops working at once."""

    @extend_schema(
        summary="Issue a new webhook token (the old one stops working)",
        description="The token is in this answer only: Sluice stores its SHA-256 digest. "
                    "Call the webhook with it in the `X-Sluice-Token` header (see `curl`).",
        request=None, responses={200: WebhookCallSerializer, 404: ErrorSerializer},
    )
    def post(self, request, slug):
        workflow = workflows.with_live_version(slug)
        # One the caller may not see answers 404, as if it did not exist (designer.api does the same).
        if workflow is None or not permissions.can_view_workflow(request.user, workflow):
            raise exceptions.NotFound(f"No workflow '{slug}'")
        require(permissions.can_rotate_webhook_token(request.user, workflow),
                f"You may not rotate the webhook token of '{slug}'")
        token = webhooks.issue_token(workflow.slug)  # takes no body: whatever is sent is ignored
        audit.record(request.user, "rotate_webhook_token", ("workflow", workflow.slug), {})
        return Response(webhooks.call_details(request, workflow.slug, token))
