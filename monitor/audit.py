"""The audit log: who published, cancelled, retried, replayed, approved or discarded what, with what.

`record(user, action, target, details)` is the one way to write it; every operator action in
the monitor, the admin and the API calls it. Entries are never edited (the admin is read-only).
"""

from __future__ import annotations

from typing import Any

from django.db import models

from .models import AuditEntry

# Keys whose values never belong in the log, whatever an action passes in `details`.
_SECRET_WORDS = ("password", "secret", "token", "authorization", "api_key", "apikey")


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: "***" if any(word in str(key).lower() for word in _SECRET_WORDS) else _redact(item)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(item) for item in value]
    return value


def _describe(target: Any) -> tuple[str, str]:
    """(type, id) for a model instance, or for a ("type", "id") pair / plain string target."""
    if isinstance(target, models.Model):
        return target._meta.model_name, str(getattr(target, "slug", None) or target.pk)
    if isinstance(target, (tuple, list)) and len(target) == 2:
        return str(target[0]), str(target[1])
    return "object", str(target)


def record(user, action: str, target: Any, details: dict | None = None) -> AuditEntry:
    """Write one audit entry. `target`: a model instance, a ("run", run_id) pair, or a string."""
    target_type, target_id = _describe(target)
    authenticated = user is not None and getattr(user, "is_authenticated", False)
    return AuditEntry.objects.create(
        user=user if authenticated else None,
        username=user.get_username() if authenticated else (str(user) if user else "system"),
        action=action,
        target_type=target_type,
        target_id=target_id[:200],
        details=_redact(details or {}),
    )
