"""The one shape of an error answer, for the REST API and the editor's JSON endpoints alike,
and the base of every refusal a Sluice service raises (designer.services, monitor.runs, ...).

    {"detail": "one sentence", "code": "invalid_definition",
     "errors": [{"path": "steps[1].config.url", "step_id": "charge", "code": "required",
                 "message": "required: URL", "severity": "error"}, ...],
     ...extra fields some answers add ("limit", "latest_version", "saved_by")}

`errors` is never empty: an error without a field gets one entry with path "".
"""

from __future__ import annotations

from orchestrator.spec import InvalidDefinition


class ServiceError(Exception):
    """Base of the services' refusals; `str(error)` is a message fit to show a user.

    `status_code` and `code` are what the REST API and the editor answer with (for_refusal);
    a subclass sets its own (404 for a missing version, 503 when Kafka did not acknowledge...).
    `body()` adds fields to the error body.
    """

    status_code = 409
    code = "conflict"

    def body(self) -> dict:
        return {}


def problem(path: str, message, code: str = "invalid", step_id: str | None = None) -> dict:
    """One entry of `errors`, the same shape as orchestrator.spec.Problem.as_dict()."""
    return {"path": path, "step_id": step_id, "code": code, "message": str(message), "severity": "error"}


def body(detail: str, code: str, errors: list[dict] | None = None, **extra) -> dict:
    """An error answer's JSON: `detail`, `code`, `errors` (one entry for `detail` when not given)."""
    return {"detail": str(detail), "code": code,
            "errors": errors if errors is not None else [problem("", detail, code)], **extra}


def for_refusal(exc: Exception) -> tuple[int, dict] | None:
    """(status, body) for an invalid definition or a service refusal; None for anything else."""
    if isinstance(exc, InvalidDefinition):
        count = len(exc.problems)
        return 400, body(f"The workflow definition has {count} problem{'s' if count != 1 else ''}",
                         getattr(exc, "code", "invalid_definition"), [p.as_dict() for p in exc.problems])
    if isinstance(exc, ServiceError):
        # Input problems list every path; a refusal about one field names it.
        problems = getattr(exc, "problems", None)
        found = [p.as_dict() for p in problems] if problems else None
        if found is None and getattr(exc, "field", None):
            found = [problem(exc.field, str(exc), exc.code)]
        return exc.status_code, body(str(exc), exc.code, found, **exc.body())
    return None
