"""REST API for workflow definitions: create, list, save versions, publish, start runs.

What every Sluice API view shares (the base view, the error shape, the exception handler) is
in webbase/api.py.
"""

from __future__ import annotations

import logging

from django.db.models import Max, Q
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from drf_spectacular.views import SpectacularAPIView
from rest_framework import exceptions, serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from monitor import permissions
from triggers import webhooks
from webbase import openapi
from webbase.api import ErrorSerializer, SluiceAPIView, require

from . import services
from .models import Workflow
from .serializers import (
    DuplicateRequestSerializer,
    PublishRequestSerializer,
    StartedRunSerializer,
    StartRunRequestSerializer,
    TriggerStateSerializer,
    TriggerStatusSerializer,
    VersionDetailSerializer,
    VersionSerializer,
    WorkflowDetailSerializer,
    WorkflowSerializer,
)

log = logging.getLogger(__name__)


# Version numbers are stored as 32-bit integers on every database Sluice supports.
MAX_VERSION = 2**31 - 1


def _body_int(data: dict, key: str) -> int | None:
    """An optional positive integer field of a JSON body (booleans are not integers here)."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSION:
        raise exceptions.ValidationError({key: [f"Must be a whole number from 1 to {MAX_VERSION}, not {value!r}"]})
    return value


def _body_message(data: dict) -> str:
    message = data.pop("message", "")
    if message is None:
        return ""
    if not isinstance(message, str):
        raise exceptions.ValidationError({"message": ["Must be a string"]})
    if len(message) > 500:
        raise exceptions.ValidationError({"message": ["At most 500 characters"]})
    return message


def _saved(version) -> dict:
    """A save's answer: the version, plus the validator's warnings (accepted, but worth fixing)."""
    return {**VersionSerializer(version).data,
            "warnings": [p.as_dict() for p in services.check_definition(version.definition)]}


def _workflow(request, slug: str, allowed=None, action: str = "") -> Workflow:
    """The workflow if the caller may see it (else 404, as if it did not exist), and, given
    `allowed` (a monitor.permissions function), may do `action` with it (else 403)."""
    workflow = Workflow.objects.select_related("live_version", "created_by").filter(slug=slug).first()
    if workflow is None or not permissions.can_view_workflow(request.user, workflow):
        raise exceptions.NotFound(f"No workflow '{slug}'")
    if allowed is not None:
        require(allowed(request.user, workflow), f"You may not {action} '{slug}'")
    return workflow


# ---- endpoints ---------------------------------------------------------------------------
class WorkflowListView(SluiceAPIView):

    @extend_schema(
        summary="List workflows", operation_id="workflows_list",
        parameters=[
            OpenApiParameter("q", str, description="Search slug, name and description"),
            OpenApiParameter("archived", str, enum=["false", "true", "all"],
                             description="false (default): active workflows; true: archived only; all: both"),
            *openapi.PAGE_PARAMETERS,
        ],
        responses=openapi.paginated(WorkflowSerializer, "Workflow"),
    )
    def get(self, request):
        workflows = permissions.visible_workflows(request.user).select_related("live_version", "created_by").annotate(
            latest_number=Max("versions__number"))
        archived = request.query_params.get("archived", "false").lower()
        if archived not in ("true", "false", "all"):
            raise exceptions.ValidationError({"archived": ["Must be true, false or all"]})
        if archived != "all":
            workflows = workflows.filter(archived=archived == "true")
        query = request.query_params.get("q", "").strip()
        if query:
            workflows = workflows.filter(Q(slug__icontains=query) | Q(name__icontains=query)
                                         | Q(description__icontains=query))
        return self.paginate(workflows.order_by("slug"), WorkflowSerializer)

    @extend_schema(
        summary="Create a workflow (version 1, draft)",
        request={"application/json": openapi.definition_request_schema()},
        responses={201: VersionSerializer, 400: ErrorSerializer},
    )
    def post(self, request):
        require(permissions.can_create_workflow(request.user), "You may not create workflows")
        definition = self.json_object()
        message = _body_message(definition)
        version = services.create_workflow(definition, request.user, message=message)
        return Response(_saved(version), status=status.HTTP_201_CREATED)


class WorkflowDetailView(SluiceAPIView):
    @extend_schema(summary="A workflow with its latest definition", responses=WorkflowDetailSerializer)
    def get(self, request, slug):
        return Response(WorkflowDetailSerializer(_workflow(request, slug)).data)

    @extend_schema(
        summary="Save a new draft version",
        description="The body is the definition. With `base_version`, the save is refused (409) "
                    "if someone saved a newer version since.",
        request={"application/json": openapi.definition_request_schema()},
        responses={201: VersionSerializer, 400: ErrorSerializer, 409: ErrorSerializer},
    )
    def put(self, request, slug):
        workflow = _workflow(request, slug, permissions.can_edit_workflow, "edit")
        definition = self.json_object()
        message = _body_message(definition)
        base_version = _body_int(definition, "base_version")
        definition.pop("base_version", None)
        version = services.save_version(workflow, definition, request.user, message=message,
                                        base_version=base_version)
        return Response(_saved(version), status=status.HTTP_201_CREATED)


class VersionListView(SluiceAPIView):
    @extend_schema(summary="Versions of a workflow, newest first", operation_id="workflows_versions_list",
                   parameters=openapi.PAGE_PARAMETERS,
                   responses=openapi.paginated(VersionSerializer, "Version"))
    def get(self, request, slug):
        workflow = _workflow(request, slug)
        versions = workflow.versions.select_related("workflow__live_version", "created_by", "published_by")
        return self.paginate(versions.order_by("-number"), VersionSerializer)


class VersionDetailView(SluiceAPIView):
    @extend_schema(summary="One version with its definition", responses=VersionDetailSerializer)
    def get(self, request, slug, number):
        workflow = _workflow(request, slug)
        if int(number) > MAX_VERSION:
            raise services.VersionNotFound(workflow, int(number))
        return Response(VersionDetailSerializer(services.get_version(workflow, int(number))).data)


class PublishView(SluiceAPIView):

    @extend_schema(
        summary="Publish a version (the latest when none is given) to Kafka and make it live",
        description="When this publish gives a webhook-triggered workflow its first token, the answer "
                    "carries it once under `webhook` (token, URL, header and a ready curl line).",
        request=PublishRequestSerializer,
        responses={200: VersionSerializer, 400: ErrorSerializer, 404: ErrorSerializer, 503: ErrorSerializer},
    )
    def post(self, request, slug):
        workflow = _workflow(request, slug, permissions.can_publish_workflow, "publish")
        body = self.json_object(allowed={"version"})
        version = services.publish(workflow, _body_int(body, "version"), request.user)
        return Response({**VersionSerializer(version).data, **webhooks.shown_on_publish(request, version)})


class StartRunView(SluiceAPIView):

    @extend_schema(
        summary="Start a run of the live version",
        request=StartRunRequestSerializer,
        responses={202: StartedRunSerializer, 409: ErrorSerializer, 503: ErrorSerializer},
    )
    def post(self, request, slug):
        workflow = _workflow(request, slug, permissions.can_operate_workflow, "start runs of")
        body = self.json_object(allowed={"input"})
        run_id = services.start_run(workflow, body.get("input", {}), request.user)
        return Response({
            "id": run_id, "workflow": workflow.slug, "version": workflow.live_version.number,
            "status": "pending", "url": f"/api/runs/{run_id}/",
        }, status=status.HTTP_202_ACCEPTED)


class TriggerStatusView(SluiceAPIView):
    """A workflow's trigger: paused or not, and a Kafka trigger's lag in records."""

    @extend_schema(summary="The trigger's state and backlog", responses={200: TriggerStatusSerializer,
                                                                        404: ErrorSerializer})
    def get(self, request, slug):
        from monitor import trigger_status

        return Response(trigger_status.status(_workflow(request, slug)))


class TriggerControlView(SluiceAPIView):
    """Pause or resume a workflow's trigger (the right to operate its runs)."""

    paused = True

    @extend_schema(
        request=None, responses={200: TriggerStateSerializer, 404: ErrorSerializer, 409: ErrorSerializer,
                                 503: ErrorSerializer},
        description="Paused: Kafka records wait in the topic (on resume the backlog drains at the trigger's "
                    "`max_runs_per_second`), schedule ticks and webhook calls start nothing. Runs started by "
                    "hand still start. Kept across runner restarts. Answers the new state.")
    def post(self, request, slug):
        from monitor import trigger_status

        workflow = _workflow(request, slug, permissions.can_pause_trigger,
                             "pause or resume the trigger of")
        self.json_object(allowed=set())
        workflow = services.set_trigger_paused(workflow, self.paused, request.user)
        trigger_status.forget_cached()
        state = trigger_status.status(workflow, with_lag=False)
        return Response({key: state[key] for key in ("workflow", "type", "paused", "paused_by", "paused_at")})


class DuplicateView(SluiceAPIView):

    @extend_schema(
        summary="Copy the latest definition into a new workflow (version 1, draft)",
        request=DuplicateRequestSerializer,
        responses={201: VersionSerializer, 400: ErrorSerializer, 404: ErrorSerializer},
    )
    def post(self, request, slug):
        workflow = _workflow(request, slug)
        require(permissions.can_create_workflow(request.user), "You may not create workflows")
        body = self.json_object(allowed={"slug", "name"})
        new_slug, name = body.get("slug"), body.get("name")
        if not isinstance(new_slug, str) or not new_slug:
            raise exceptions.ValidationError({"slug": ["The new workflow's slug is required (a string)"]})
        if name is not None and not isinstance(name, str):
            raise exceptions.ValidationError({"name": ["Must be a string"]})
        version = services.duplicate_workflow(workflow, new_slug, request.user, name=name)
        return Response(_saved(version), status=status.HTTP_201_CREATED)


class ArchiveView(SluiceAPIView):
    """Archive (hide, stop triggers) or bring back a workflow."""

    archive = True

    @extend_schema(request=None, responses={200: WorkflowDetailSerializer, 404: ErrorSerializer,
                                            503: ErrorSerializer})
    def post(self, request, slug):
        workflow = _workflow(request, slug, permissions.can_edit_workflow, "edit")
        self.json_object(allowed=set())
        if self.archive:
            # Archiving a live workflow takes it off the air: that is a publishing decision.
            require(permissions.can_archive_workflow(request.user, workflow),
                    f"'{slug}' is live: archiving it unpublishes it, which needs the right to publish it")
            services.archive_workflow(workflow, request.user)
        else:
            services.unarchive_workflow(workflow, request.user)
        return Response(WorkflowDetailSerializer(_workflow(request, slug)).data)


class RestoreVersionView(SluiceAPIView):

    @extend_schema(summary="Save an old version's definition again as the newest draft", request=None,
                   responses={201: VersionSerializer, 404: ErrorSerializer, 409: ErrorSerializer})
    def post(self, request, slug, number):
        workflow = _workflow(request, slug, permissions.can_edit_workflow, "edit")
        self.json_object(allowed=set())
        if int(number) > MAX_VERSION:
            raise services.VersionNotFound(workflow, int(number))
        version = services.restore_version(workflow, int(number), request.user)
        return Response(_saved(version), status=status.HTTP_201_CREATED)


class StepTypesView(SluiceAPIView):
    """The step registry describes the product, not anyone's workflows: any signed-in user."""

    @extend_schema(
        summary="Step types: palette entries, config JSON schemas and output ports",
        responses=inline_serializer("StepType", many=True, fields={
            "type": serializers.CharField(), "label": serializers.CharField(), "group": serializers.CharField(),
            "icon": serializers.CharField(), "description": serializers.CharField(),
            "config_schema": serializers.JSONField(), "ports": serializers.ListField(child=serializers.CharField()),
        }),
    )
    def get(self, request):
        from orchestrator.steps import describe_all

        return Response(describe_all())


class SchemaView(SpectacularAPIView):
    """The OpenAPI document (YAML, or JSON with ?format=json); its errors in JSON like the rest."""

    def finalize_response(self, request, response, *args, **kwargs):
        if response.status_code >= 400:
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)


class NotFoundView(SluiceAPIView):
    """Any other path under /api/: a JSON 404 (after login), not Django's HTML page."""

    schema = None

    def dispatch_not_found(self, request, *args, **kwargs):
        raise exceptions.NotFound(f"No API endpoint at {request.path}")

    get = post = put = patch = delete = dispatch_not_found
