"""What every Sluice REST API view shares (designer/api.py and monitor/api.py build on it).

- `SluiceAPIView`: JSON in and out only, login required; who may do what is asked of
  monitor.permissions (one function per action), and a workflow or run the caller may not see
  answers 404, exactly like one that does not exist;
- `exception_handler` (settings.REST_FRAMEWORK): every error is JSON of one shape,
  `{"detail": str, "code": str, "errors": [{"path", "step_id", "code", "message", "severity"}]}`,
  and service refusals (webbase.errors.ServiceError) answer the status and code they carry
  (400, 404, 409, 413, 503), so this module needs to know none of the services.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from drf_spectacular.utils import inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView, set_rollback
from rest_framework.views import exception_handler as drf_exception_handler

from orchestrator import spec
from orchestrator.runtime.commands import CommandError

from . import openapi
from .errors import body, for_refusal, problem

log = logging.getLogger(__name__)


# ---- errors ------------------------------------------------------------------------------
ErrorSerializer = inline_serializer("Error", fields={
    "detail": serializers.CharField(),
    "code": serializers.CharField(),
    "errors": serializers.ListField(child=inline_serializer("Problem", fields={
        "path": serializers.CharField(), "step_id": serializers.CharField(allow_null=True),
        "code": serializers.CharField(), "message": serializers.CharField(),
        "severity": serializers.ChoiceField(choices=["error", "warning"])})),
})


def _flatten(detail, path: str = "") -> list[dict]:
    """DRF's nested error detail ({"a": {"b": ["msg"]}}) as a flat list with paths like `a.b`."""
    if isinstance(detail, dict):
        out = []
        for key, value in detail.items():
            key = "" if key == "non_field_errors" else str(key)
            out += _flatten(value, f"{path}.{key}" if path and key else path or key)
        return out
    if isinstance(detail, list):
        if all(isinstance(item, exceptions.ErrorDetail) or isinstance(item, str) for item in detail):
            return [problem(path, item, getattr(item, "code", "invalid")) for item in detail]
        out = []
        for index, item in enumerate(detail):
            out += _flatten(item, f"{path}[{index}]")
        return out
    return [problem(path, detail, getattr(detail, "code", "invalid"))]


def _error_response(status_code: int, detail: str, code: str, errors: list[dict] | None = None,
                    headers: dict | None = None) -> Response:
    return Response(body(detail, code, errors), status=status_code, headers=headers)


def exception_handler(exc, context):
    """All API errors as `{"detail", "code", "errors"}`; never an HTML page, never a bare 500 for input."""
    refusal = for_refusal(exc)
    if refusal is not None:
        set_rollback()
        status_code, data = refusal
        return Response(data, status=status_code)
    if isinstance(exc, CommandError):
        return _error_response(status.HTTP_503_SERVICE_UNAVAILABLE, f"Kafka did not acknowledge: {exc}",
                               "kafka_unavailable")
    if isinstance(exc, RequestDataTooBig):
        return _error_response(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                               f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes", "too_large")
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) if exc.args else None)
    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
        return _error_response(status.HTTP_500_INTERNAL_SERVER_ERROR,
                               "Internal error; it has been logged", "server_error")
    detail = exc.detail if isinstance(exc, exceptions.APIException) else response.data
    if isinstance(detail, (dict, list)):
        errors = _flatten(detail)
        first = errors[0] if errors else problem("", "Invalid request")
        message = f"{first['path']}: {first['message']}" if first["path"] else first["message"]
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        response.data = body(message, "invalid", errors)
    else:
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        response.data = body(str(detail), code)
    return response


# ---- what every API view shares ----------------------------------------------------------
class SignedIn(BasePermission):
    """A signed-in, active user; what they may do is asked of monitor.permissions by each view."""

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.is_active)


def require(allowed: bool, message: str) -> None:
    """403 with `message` unless `allowed` (a permissions answer (monitor.permissions))."""
    if not allowed:
        raise exceptions.PermissionDenied(message)


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = openapi.MAX_PAGE_SIZE


class StrictJSONParser(JSONParser):
    """JSON bodies only; nesting too deep for Python's decoder is a parse error, not a crash."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None


class SluiceAPIView(APIView):
    """JSON only: a form post or a body without a JSON content type is refused, not misread."""

    parser_classes = [StrictJSONParser]
    renderer_classes = [JSONRenderer]
    permission_classes = [SignedIn]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # DRF reads a body without Content-Type as empty: say so rather than ignore it.
        if request.method in ("POST", "PUT", "PATCH") and request.body and not request.content_type:
            raise exceptions.UnsupportedMediaType("", detail="Send the body as JSON (Content-Type: application/json)")

    def json_object(self, allowed: set[str] | None = None) -> dict:
        """The request body as a JSON object (missing body: {}); 400 on other values or unknown keys."""
        data = self.request.data
        if not isinstance(data, dict):
            raise exceptions.ValidationError(
                {"": [f"The body must be a JSON object, not {type(data).__name__}"]})
        # Too deep, lone surrogates, not-finite numbers: named here, before anything stores them.
        unfit = spec.json_problems(data)
        if unfit:
            raise exceptions.ValidationError({path: [message] for path, message, _code in unfit})
        data = dict(data)
        if allowed is not None:
            unknown = sorted(set(data) - allowed)
            if unknown:
                raise exceptions.ValidationError(
                    {key: [f"Unknown field; allowed: {', '.join(sorted(allowed)) or 'none'}"] for key in unknown})
        return data

    def paginate(self, queryset, serializer_class):
        # DRF would quietly ignore a bad page size: refuse it, as the schema says.
        for name, most in (("page", None), ("page_size", openapi.MAX_PAGE_SIZE)):
            raw = self.request.query_params.get(name)
            if raw is not None and (not raw.isdigit() or int(raw) < 1 or (most and int(raw) > most)):
                bounds = f"from 1 to {most}" if most else "of 1 or more"
                raise exceptions.ValidationError({name: [f"Must be a whole number {bounds}, not {raw!r}"]})
        paginator = Pagination()
        page = paginator.paginate_queryset(queryset, self.request, view=self)
        return paginator.get_paginated_response(serializer_class(page, many=True).data)
