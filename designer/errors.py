"""The one shape of an error answer, for the REST API and the editor's JSON endpoints alike.

    {"detail": "one sentence", "code": "invalid_definition",
     "errors": [{"path": "steps[1].config.url", "step_id": "charge", "code": "required",
                 "message": "required: URL", "severity": "error"}, ...],
     ...extra fields some answers add ("limit", "latest_version", "saved_by")}

`errors` is never empty: an error without a field gets one entry with path "". The refusals of
designer.services map to one status and code here, so the API (designer.api.exception_handler)
and the editor (designer.views.json_endpoint) answer a refusal the same way.
"""

from __future__ import annotations

from orchestrator.spec import InvalidDefinition

from . import services


def problem(path: str, message, code: str = "invalid", step_id: str | None = None) -> dict:
    """One entry of `errors`, the same shape as orchestrator.spec.Problem.as_dict()."""
    return {"path": path, "step_id": step_id, "code": code, "message": str(message), "severity": "error"}


def body(detail: str, code: str, errors: list[dict] | None = None, **extra) -> dict:
    """An error answer's JSON: `detail`, `code`, `errors` (one entry for `detail` when not given)."""
    return {"detail": str(detail), "code": code,
            "errors": errors if errors is not None else [problem("", detail, code)], **extra}


# Service refusals a client can act on: the status that says so, and the code (first match wins).
SERVICE_STATUS = (
    (services.VersionNotFound, 404, "not_found"),
    (services.VersionConflict, 409, "version_conflict"),
    (services.NotPublished, 409, "not_published"),
    (services.WorkflowArchived, 409, "archived"),
    (services.PublishFailed, 503, "kafka_unavailable"),
    (services.StartFailed, 503, "kafka_unavailable"),
    (services.TriggerControlFailed, 503, "kafka_unavailable"),
    (services.ServiceError, 409, "conflict"),
)


def for_refusal(exc: Exception) -> tuple[int, dict] | None:
    """(status, body) for an invalid definition or input or a service refusal; None for anything else."""
    if isinstance(exc, services.InputTooLarge):
        return 413, body(str(exc), "too_large", [problem(exc.field, str(exc), "too_large")], limit=exc.limit)
    if isinstance(exc, services.InvalidInput):
        return 400, body(str(exc), "invalid_input", [p.as_dict() for p in exc.problems])
    if isinstance(exc, InvalidDefinition):
        count = len(exc.problems)
        code = "duplicate" if isinstance(exc, services.SlugTaken) else "invalid_definition"
        return 400, body(f"The workflow definition has {count} problem{'s' if count != 1 else ''}", code,
                         [p.as_dict() for p in exc.problems])
    for kind, status, code in SERVICE_STATUS:
        if isinstance(exc, kind):
            extra = {}
            if isinstance(exc, services.VersionConflict):
                extra = {"latest_version": exc.latest_number, "saved_by": exc.saved_by}
            return status, body(str(exc), code, **extra)
    return None
