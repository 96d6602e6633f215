"""REST API for runs (list, detail with steps, cancel, retry, signal) and dead letters (list,
detail, replay with an optional edited value, discard).

Who sees what and who may act is monitor.permissions' rule, and the actions are
monitor.operations' (Kafka command + audit entry), so the API, the monitor pages and the admin
behave the same. Run actions answer 202 once the broker acknowledged the command; the runner
decides what happens and the history projector updates the rows. A run or dead letter the
caller may not see answers 404, like one that does not exist.
"""

from __future__ import annotations

import json

from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.response import Response

from orchestrator.runtime.commands import CommandError
from webbase import openapi
from webbase.api import ErrorSerializer, SluiceAPIView, require

from . import keyset, operations, permissions, snapshot
from .models import DeadLetter, Run, RunStatus
from .permissions import visible_runs
from .serializers import (
    AcceptedSerializer,
    CancelRequestSerializer,
    DeadLetterDetailSerializer,
    DeadLetterReplayRequestSerializer,
    DeadLetterSerializer,
    RetryAcceptedSerializer,
    RetryRequestSerializer,
    RunDetailSerializer,
    RunSerializer,
    SignalRequestSerializer,
)


class RunListView(SluiceAPIView):
    """Any signed-in user; the list holds only runs they may watch (monitor.permissions)."""

    @extend_schema(
        summary="Runs the caller may watch, newest first", operation_id="runs_list",
        parameters=[
            OpenApiParameter("workflow", str, description="Workflow slug"),
            OpenApiParameter("status", str, enum=list(RunStatus.values)),
            *openapi.PAGE_PARAMETERS,
        ],
        responses=openapi.paginated(RunSerializer, "Run"),
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
        # Newest first, ties by id the same way: the (created_at, id) indexes give that order.
        runs = runs.order_by("-created_at", "-id")
        split = keyset.split_by_workflow(permissions.visible_workflow_slugs(request.user), workflow or "")
        if split:
            runs = PerWorkflow(runs, split)
        return self.paginate(runs, RunSerializer)


class PerWorkflow:
    """Runs of a few workflows as Django's Paginator reads them (count, slice), one workflow at a
    time: each is a range of the (workflow, created_at, id) index, where `workflow IN (...)`
    counts and sorts every run of those workflows (monitor.keyset.MAX_SPLIT)."""

    ordered = True

    def __init__(self, runs, slugs: list[str]):
        self.runs, self.slugs = runs, slugs

    def count(self) -> int:
        return sum(self.runs.filter(workflow=slug).count() for slug in self.slugs)

    def __getitem__(self, item: slice) -> list:
        return keyset.read_slice(self.runs, ("-created_at", "-id"), item.start or 0, item.stop, self.slugs)


def _visible_run(request, run_id: str, queryset=None) -> Run:
    """The run, or 404 also when it exists but the caller may not watch it (no existence leak)."""
    runs = visible_runs(request.user) if queryset is None else queryset
    run = runs.filter(id=run_id).first()
    if run is None:
        raise exceptions.NotFound(f"No run '{run_id}'")
    return run


class RunDetailView(SluiceAPIView):
    @extend_schema(summary="A run with its input, output and steps", responses=RunDetailSerializer)
    def get(self, request, run_id):
        # The run and its steps as one consistent read, whatever the bridge writes meanwhile.
        found = snapshot.read_run(run_id, visible_runs(request.user))
        if found is None:
            raise exceptions.NotFound(f"No run '{run_id}'")
        return Response(RunDetailSerializer(found.run).data)


class RunActionView(SluiceAPIView):
    """Base of the actions: validate the body, find the run, let monitor.operations act."""

    action_name = ""

    def validated(self, serializer_class, allowed: set[str]) -> dict:
        serializer = serializer_class(data=self.json_object(allowed=allowed))
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def act(self, request, run_id: str, operation, *args) -> Response:
        run = _visible_run(request, run_id)
        require(permissions.can_operate_workflow(request.user, run.workflow),
                f"You may not operate runs of workflow '{run.workflow}'")
        try:
            operation(request.user, run, *args)
        except operations.OperationForbidden as exc:
            raise exceptions.PermissionDenied(str(exc)) from exc
        except operations.BadInput as exc:
            errors: dict[str, list[str]] = {}
            for path, message in exc.problems:
                errors.setdefault(path, []).append(message)
            raise exceptions.ValidationError(errors) from exc
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


# ---- dead letters ---------------------------------------------------------------------------
# The runner loops that dead-letter records (orchestrator.runtime: the DLQ_STAGE header).
STAGES = ("trigger", "engine", "worker")


def _visible_letter(request, pk: int) -> DeadLetter:
    letter = permissions.visible_dead_letters(request.user).filter(pk=pk).first()
    if letter is None:
        raise exceptions.NotFound(f"No dead letter {pk}")
    return letter


def _letter_operation(request, operation, letter: DeadLetter, *args):
    """Run a dead-letter operation; its refusals as 403 (rights), 409 (resolved) or 422 (still failing)."""
    require(permissions.can_act_on_dead_letter(request.user, letter),
            f"You may not handle dead letter {letter.pk}: it needs the right to operate runs of "
            f"{letter.workflow or 'every workflow'}")
    try:
        return operation(request.user, letter, *args)
    except operations.OperationForbidden as exc:
        raise exceptions.PermissionDenied(str(exc)) from exc
    except operations.ReplayFailed as exc:
        error = exceptions.APIException(str(exc), code="replay_failed")
        error.status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
        raise error from exc
    except operations.OperationError as exc:
        if isinstance(exc.__cause__, CommandError) or "Kafka" in str(exc):
            error = exceptions.APIException(str(exc), code="kafka_unavailable")
            error.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        else:
            error = exceptions.APIException(str(exc), code="conflict")
            error.status_code = status.HTTP_409_CONFLICT
        raise error from exc


def _query_time(request, name: str):
    raw = request.query_params.get(name)
    if raw is None:
        return None
    moment = parse_datetime(raw) if raw else None
    if moment is None:
        raise exceptions.ValidationError({name: ["Not a date-time; use ISO 8601, e.g. 2026-01-31T12:00:00Z"]})
    return moment


class DeadLetterListView(SluiceAPIView):
    """Dead letters the caller may see (monitor.permissions), newest first."""

    @extend_schema(
        summary="Dead letters the caller may see, newest first", operation_id="dead_letters_list",
        parameters=[
            OpenApiParameter("status", str, enum=list(DeadLetter.Status.values)),
            OpenApiParameter("workflow", str, description="Workflow slug"),
            OpenApiParameter("stage", str, enum=list(STAGES),
                             description="The runner loop that gave up on the record"),
            OpenApiParameter("source_topic", str, description="The topic the record was read from"),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="Failed at or after"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="Failed at or before"),
            *openapi.PAGE_PARAMETERS,
        ],
        responses=openapi.paginated(DeadLetterSerializer, "DeadLetter"),
    )
    def get(self, request):
        require(permissions.can_view_dead_letters(request.user),
                "Dead letters need the dead-letter permission or the right to operate a workflow")
        letters = permissions.visible_dead_letters(request.user)
        wanted = request.query_params.get("status")
        if wanted:
            if wanted not in DeadLetter.Status.values:
                raise exceptions.ValidationError(
                    {"status": [f"Unknown status '{wanted}'; one of {', '.join(DeadLetter.Status.values)}"]})
            letters = letters.filter(status=wanted)
        stage = request.query_params.get("stage")
        if stage and stage not in STAGES:
            raise exceptions.ValidationError({"stage": [f"Unknown stage '{stage}'; one of {', '.join(STAGES)}"]})
        for field in ("workflow", "stage", "source_topic"):
            value = request.query_params.get(field)
            if value:
                letters = letters.filter(**{field: value})
        since, until = _query_time(request, "since"), _query_time(request, "until")
        if since:
            letters = letters.filter(failed_at__gte=since)
        if until:
            letters = letters.filter(failed_at__lte=until)
        return self.paginate(letters.order_by("-failed_at", "-offset", "-id"), DeadLetterSerializer)


class DeadLetterDetailView(SluiceAPIView):
    @extend_schema(summary="A dead letter with its value, headers and what its replay did",
                   responses={200: DeadLetterDetailSerializer, 404: ErrorSerializer})
    def get(self, request, pk):
        return Response(DeadLetterDetailSerializer(_visible_letter(request, int(pk))).data)


class DeadLetterReplayView(SluiceAPIView):
    @extend_schema(
        summary="Replay a dead letter to where it came from, optionally with an edited value",
        description="A record that failed at a trigger goes back through its workflow's trigger (the live "
                    "version's filter is evaluated again; a run starts whose trigger names the original record "
                    "and the replay). A `wf.runs` record goes back to `wf.runs`, decoded first as the engine "
                    "decodes it. `replay` in the answer says what happened. 422 when the record still cannot "
                    "be processed (the reason is in `detail`; the dead letter stays new).",
        request=DeadLetterReplayRequestSerializer,
        responses={200: DeadLetterDetailSerializer, 400: ErrorSerializer, 403: ErrorSerializer,
                   404: ErrorSerializer, 409: ErrorSerializer, 422: ErrorSerializer, 503: ErrorSerializer},
    )
    def post(self, request, pk):
        letter = _visible_letter(request, int(pk))
        body = self.json_object(allowed={"value"})
        edited = None
        if body.get("value") is not None:
            # A string is the record's text as it is (a record that is not JSON can be fixed too).
            value = body["value"]
            edited = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        _letter_operation(request, operations.replay_dead_letter, letter, edited)
        return Response(DeadLetterDetailSerializer(letter).data)


class DeadLetterDiscardView(SluiceAPIView):
    @extend_schema(summary="Discard a dead letter (it stays listed, as discarded)", request=None,
                   responses={200: DeadLetterDetailSerializer, 403: ErrorSerializer, 404: ErrorSerializer,
                              409: ErrorSerializer})
    def post(self, request, pk):
        letter = _visible_letter(request, int(pk))
        self.json_object(allowed=set())
        _letter_operation(request, operations.discard_dead_letter, letter)
        return Response(DeadLetterDetailSerializer(letter).data)
