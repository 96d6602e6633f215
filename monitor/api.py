"""REST API for runs: list, detail with steps, and the operator actions cancel, retry and signal.

Actions are commands on Kafka (`wf.runs`), answered 202 once the broker acknowledged them; the
runner decides and the history projector updates the rows. The Run row is read first only to
refuse actions that cannot apply (cancelling a finished run) with a clear 409.
"""

from __future__ import annotations

import time

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.response import Response

from designer.api import ErrorSerializer, SluiceAPIView
from designer.services import record_audit
from orchestrator.messages import CancelRun, RetryRun, SignalRun
from orchestrator.runtime import commands

from .models import Run, RunStatus
from .serializers import (
    AcceptedSerializer,
    CancelRequestSerializer,
    RunDetailSerializer,
    RunSerializer,
    SignalRequestSerializer,
)

FINISHED = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
RETRYABLE = {RunStatus.FAILED, RunStatus.CANCELLED}


class RunListView(SluiceAPIView):
    permissions_by_method = {"GET": "monitor.view_run"}

    @extend_schema(
        summary="Runs, newest first",
        parameters=[
            OpenApiParameter("workflow", str, description="Workflow slug"),
            OpenApiParameter("status", str, enum=list(RunStatus.values)),
            OpenApiParameter("page", int), OpenApiParameter("page_size", int),
        ],
        responses=RunSerializer(many=True),
    )
    def get(self, request):
        runs = Run.objects.all()
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


class RunDetailView(SluiceAPIView):
    permissions_by_method = {"GET": "monitor.view_run"}

    @extend_schema(summary="A run with its input, output and steps", responses=RunDetailSerializer)
    def get(self, request, run_id):
        run = get_object_or_404(Run.objects.prefetch_related("steps"), id=run_id)
        return Response(RunDetailSerializer(run).data)


class RunActionView(SluiceAPIView):
    """Base of the actions: find the run, check it can take the action, send the command."""

    permissions_by_method = {"POST": "monitor.operate_run"}
    action_name = ""

    def run(self, run_id: str) -> Run:
        return get_object_or_404(Run, id=run_id)

    def validated(self, serializer_class, allowed: set[str]) -> dict:
        serializer = serializer_class(data=self.json_object(allowed=allowed))
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def accepted(self, run: Run, command, details: dict | None = None) -> Response:
        commands.send_command(command)
        record_audit(self.request.user, f"run.{self.action_name}", run.id, details or {})
        return Response({"id": run.id, "accepted": self.action_name}, status=status.HTTP_202_ACCEPTED)

    def conflict(self, message: str):
        error = exceptions.APIException(message, code="conflict")
        error.status_code = status.HTTP_409_CONFLICT
        return error


class CancelRunView(RunActionView):
    action_name = "cancel"

    @extend_schema(summary="Cancel a run that has not finished", request=CancelRequestSerializer,
                   responses={202: AcceptedSerializer, 404: ErrorSerializer, 409: ErrorSerializer})
    def post(self, request, run_id):
        run = self.run(run_id)
        data = self.validated(CancelRequestSerializer, {"reason"})
        if run.status in FINISHED:
            raise self.conflict(f"Run {run.id} already finished ({run.status}): there is nothing to cancel")
        return self.accepted(run, CancelRun(run_id=run.id, reason=data["reason"], by=request.user.get_username(),
                                            ts=time.time()), {"reason": data["reason"]})


class RetryRunView(RunActionView):
    action_name = "retry"

    @extend_schema(summary="Retry a failed or cancelled run from its failed steps", request=None,
                   responses={202: AcceptedSerializer, 404: ErrorSerializer, 409: ErrorSerializer})
    def post(self, request, run_id):
        run = self.run(run_id)
        self.json_object(allowed=set())
        if run.status not in RETRYABLE:
            raise self.conflict(f"Run {run.id} is {run.status}: only failed or cancelled runs can be retried")
        return self.accepted(run, RetryRun(run_id=run.id, by=request.user.get_username(), ts=time.time()))


class SignalRunView(RunActionView):
    action_name = "signal"

    @extend_schema(summary="Send a named signal (e.g. an approval decision) to a run",
                   request=SignalRequestSerializer,
                   responses={202: AcceptedSerializer, 400: ErrorSerializer, 404: ErrorSerializer,
                              409: ErrorSerializer})
    def post(self, request, run_id):
        run = self.run(run_id)
        data = self.validated(SignalRequestSerializer, {"name", "payload"})
        if run.status in FINISHED:
            raise self.conflict(f"Run {run.id} already finished ({run.status}): it takes no more signals")
        return self.accepted(run, SignalRun(run_id=run.id, name=data["name"], payload=data["payload"],
                                            by=request.user.get_username(), ts=time.time()),
                             {"name": data["name"]})
