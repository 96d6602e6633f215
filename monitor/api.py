"""REST API for runs: list, detail with steps, and the operator actions cancel, retry and signal.

Who sees which runs and who may act on them is monitor.permissions' rule, and the actions are
monitor.operations' (Kafka command + audit entry), so the API, the monitor pages and the admin
behave the same. Actions answer 202 once the broker acknowledged the command; the runner
decides what happens and the history projector updates the rows.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.response import Response

from designer.api import ErrorSerializer, SluiceAPIView
from orchestrator.runtime.commands import CommandError

from . import operations
from .models import Run, RunStatus
from .permissions import visible_runs
from .serializers import (
    AcceptedSerializer,
    CancelRequestSerializer,
    RetryAcceptedSerializer,
    RetryRequestSerializer,
    RunDetailSerializer,
    RunSerializer,
    SignalRequestSerializer,
)


class RunListView(SluiceAPIView):
    # Any signed-in user; the list holds only runs they may watch (monitor.permissions).
    permissions_by_method = {}

    @extend_schema(
        summary="Runs the caller may watch, newest first",
        parameters=[
            OpenApiParameter("workflow", str, description="Workflow slug"),
            OpenApiParameter("status", str, enum=list(RunStatus.values)),
            OpenApiParameter("page", int), OpenApiParameter("page_size", int),
        ],
        responses=RunSerializer(many=True),
    )
    def get(self, request):
        runs = visible_runs(request.user)
        workflow = request.query_params.get("workflow")
        if workflow:
            runs = runs.filter(workflow=workflow)
        wanted = request.query_params.get("status")
        if wanted:
            if wanted not in RunStatus.values:
                raise exceptions.ValidationError(
                    {"status": [f"Unknown status '{wanted}'; one of {', '.join(RunStatus.values)}"]})
            runs = runs.filter(status=wanted)
        return self.paginate(runs.order_by("-created_at", "id"), RunSerializer)


def _visible_run(request, run_id: str, queryset=None) -> Run:
    """The run, or 404 also when it exists but the caller may not watch it (no existence leak)."""
    runs = visible_runs(request.user) if queryset is None else queryset
    run = runs.filter(id=run_id).first()
    if run is None:
        raise exceptions.NotFound(f"No run '{run_id}'")
    return run


class RunDetailView(SluiceAPIView):
    permissions_by_method = {}

    @extend_schema(summary="A run with its input, output and steps", responses=RunDetailSerializer)
    def get(self, request, run_id):
        run = _visible_run(request, run_id, visible_runs(request.user).prefetch_related("steps"))
        return Response(RunDetailSerializer(run).data)


class RunActionView(SluiceAPIView):
    """Base of the actions: validate the body, find the run, let monitor.operations act."""

    permissions_by_method = {"POST": "monitor.operate_run"}
    action_name = ""

    def validated(self, serializer_class, allowed: set[str]) -> dict:
        serializer = serializer_class(data=self.json_object(allowed=allowed))
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def act(self, request, run_id: str, operation, *args) -> Response:
        run = _visible_run(request, run_id)
        try:
            operation(request.user, run, *args)
        except operations.OperationForbidden as exc:
            raise exceptions.PermissionDenied(str(exc)) from exc
        except operations.OperationError as exc:
            if isinstance(exc.__cause__, CommandError):
                error = exceptions.APIException(str(exc), code="kafka_unavailable")
                error.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
            else:  # the run's state does not allow it (finished, not failed, ...)
                error = exceptions.APIException(str(exc), code="conflict")
                error.status_code = status.HTTP_409_CONFLICT
            raise error from exc
        return Response({"id": run.id, "accepted": self.action_name}, status=status.HTTP_202_ACCEPTED)


class CancelRunView(RunActionView):
    action_name = "cancel"

    @extend_schema(summary="Cancel a run that has not finished", request=CancelRequestSerializer,
                   responses={202: AcceptedSerializer, 404: ErrorSerializer, 409: ErrorSerializer})
    def post(self, request, run_id):
        data = self.validated(CancelRequestSerializer, {"reason"})
        return self.act(request, run_id, operations.cancel, data["reason"])


class RetryRunView(RunActionView):
    action_name = "retry"

    @extend_schema(summary="Retry a failed or cancelled run from its failed steps, or start it again with new input",
                   description="Without a body: the run resumes from its failed steps (failed or cancelled runs "
                               "only). With `{\"input\": ...}`: a new run of the same workflow version with that "
                               "input (trigger `{\"type\": \"replay\", \"of\": <id>}`); the answer names it.",
                   request=RetryRequestSerializer,
                   responses={202: RetryAcceptedSerializer, 404: ErrorSerializer, 409: ErrorSerializer})
    def post(self, request, run_id):
        body = self.json_object(allowed={"input"})
        if "input" in body:
            return self.retry_with_input(request, run_id, body["input"])
        return self.act(request, run_id, operations.retry)

    def retry_with_input(self, request, run_id: str, new_input) -> Response:
        """A new run with edited input, as the monitor's "retry with input" form starts one."""
        started: list[str] = []
        new_input = {} if new_input is None else new_input  # as a start without input

        def start(user, run):
            started.append(operations.retry_with_input(user, run, new_input))

        response = self.act(request, run_id, start)
        response.data.update({"accepted": "retry_with_input", "new_run": started[0],
                              "url": f"/api/runs/{started[0]}/"})
        return response


class SignalRunView(RunActionView):
    action_name = "signal"

    @extend_schema(summary="Send a named signal (e.g. an approval decision) to a run",
                   request=SignalRequestSerializer,
                   responses={202: AcceptedSerializer, 400: ErrorSerializer, 404: ErrorSerializer,
                              409: ErrorSerializer})
    def post(self, request, run_id):
        data = self.validated(SignalRequestSerializer, {"name", "payload"})
        return self.act(request, run_id, operations.signal, data["name"], data["payload"])
