"""The `webhook` trigger: POST /hooks/<slug>/ with a JSON body starts a run of the live version.

Webhook callers (GitHub, Stripe, a cron job elsewhere) have no login session, so a per-workflow
secret token is the permission check: header `X-Sluice-Token` (preferred: query strings end up
in proxy logs) or `?token=`. Only a SHA-256 digest is stored; the plain token is shown once
when issued: on the first publish of a webhook-triggered version (in the designer and the
publish API's answer), by `manage.py webhook_token`, or by `POST /api/workflows/<slug>/webhook-token/`
(also at `POST /hooks/<slug>/token/`; session or API token, for users allowed to publish).

Answers are JSON in the API's error shape `{"detail", "code", "errors"}`: 401 no token,
403 wrong token, 404 no live webhook trigger, 423 the workflow's trigger is paused, 400 body
not JSON (or nested too deeply, or not valid text, or not matching the workflow's
`input_schema`, each mismatch at its path), 413 body larger than SLUICE_MAX_INPUT_BYTES, 422
trigger filter failed on the body, 503 Kafka unreachable; 202 `{"run_id", "workflow",
"version", "started": true}` when the start was acknowledged, 200 with `"started": false` when
the body did not pass the trigger's `filter` (names: `trigger` = body, `record` = request).

`Idempotency-Key: K` makes the run id a function of (slug, K): a caller retrying a delivery
starts the same run, which the engine ignores the second time.

The start itself is monitor.runs.start_run's (command, pending row, audit entry by "webhook").
The token's table is `orchestrator.WebhookEndpoint` (the model stayed where it was created).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import uuid

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError
from django.http import JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from monitor import runs, workflows
from orchestrator import expressions
from orchestrator.models import WebhookEndpoint
from orchestrator.runtime import commands

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Sluice-Token"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 200
# uuid5 namespace for run ids derived from idempotency keys (a fixed, arbitrary UUID).
RUN_ID_NAMESPACE = uuid.UUID("6f1c5c52-3f2e-4b8e-9a57-5b0c1d7e9a10")
# Headers never copied into the run's trigger: credentials would otherwise reach Kafka and the DB.
DROPPED_HEADERS = {"authorization", "proxy-authorization", "cookie", TOKEN_HEADER.lower(), "content-length"}
SECRET_WORDS = ("token", "secret", "password", "api-key", "apikey", "signature")


# ---- tokens ------------------------------------------------------------------------------
def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(slug: str) -> str:
    """Create or rotate the token of `slug`; returns the new plain token (the old one stops working)."""
    token = secrets.token_urlsafe(32)
    endpoint, created = WebhookEndpoint.objects.get_or_create(slug=slug, defaults={"token_hash": hash_token(token)})
    if not created:
        endpoint.token_hash = hash_token(token)
        endpoint.rotated_at = timezone.now()
        endpoint.save(update_fields=["token_hash", "rotated_at"])
    return token


def ensure_endpoint(slug: str) -> str | None:
    """Give `slug` a token if it has none; returns the new token, or None if one existed already."""
    if WebhookEndpoint.objects.filter(slug=slug).exists():
        return None
    token = secrets.token_urlsafe(32)
    try:
        WebhookEndpoint.objects.create(slug=slug, token_hash=hash_token(token))
    except IntegrityError:  # a concurrent publish created it first; that token stands
        return None
    return token


def sync_webhook(slug: str, definition: dict | None) -> str | None:
    """Call after publishing: a webhook-triggered live version gets a token on its first publish.

    Returns the plain token when one was just created (show it to the publisher once), else None.
    The endpoint is kept when the trigger changes, so switching back does not break callers.
    """
    if definition and (definition.get("trigger") or {}).get("type") == "webhook":
        return ensure_endpoint(slug)
    return None


def token_matches(slug: str, token: str) -> bool:
    endpoint = WebhookEndpoint.objects.filter(slug=slug).first()
    # Compare against a dummy digest when there is no endpoint so timing says nothing either way.
    expected = endpoint.token_hash if endpoint else hash_token(secrets.token_urlsafe(32))
    return hmac.compare_digest(expected, hash_token(token)) and endpoint is not None


# ---- request handling --------------------------------------------------------------------
def error(status: int, detail: str, code: str, path: str = "") -> JsonResponse:
    return JsonResponse({"detail": detail, "code": code,
                         "errors": [{"path": path, "step_id": None, "code": code, "message": detail}]},
                        status=status)


def run_id_for(slug: str, idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return commands.new_run_id()
    return uuid.uuid5(RUN_ID_NAMESPACE, f"webhook:{slug}:{idempotency_key}").hex


def selected_headers(request) -> dict[str, str]:
    """The request headers a workflow may look at (lower-case names), credentials removed."""
    return {
        name.lower(): value
        for name, value in request.headers.items()
        if name.lower() not in DROPPED_HEADERS and not any(word in name.lower() for word in SECRET_WORDS)
    }


def live_webhook_version(slug: str):
    """(workflow, live version) when `slug`'s live version has a webhook trigger, else None."""
    workflow = workflows.with_live_version(slug)
    if workflow is None or workflow.archived or workflow.live_version is None:
        return None
    trigger = (workflow.live_version.definition or {}).get("trigger") or {}
    if trigger.get("type") != "webhook":
        return None
    return workflow, workflow.live_version


@login_not_required  # no session by nature: the token below is the permission check
@csrf_exempt
@require_POST
def receive(request, slug: str):
    token = request.headers.get(TOKEN_HEADER) or request.GET.get("token")
    if not token:
        return error(401, f"Send the workflow's webhook token in the {TOKEN_HEADER} header", "not_authenticated",
                     path=f"headers.{TOKEN_HEADER}")
    if not token_matches(slug, token):
        return error(403, "The webhook token is not valid for this workflow", "permission_denied",
                     path=f"headers.{TOKEN_HEADER}")
    live = live_webhook_version(slug)
    if live is None:
        return error(404, f"Workflow '{slug}' has no live version with a webhook trigger", "not_found")
    workflow, version = live
    if workflow.trigger_paused:
        # 423 Locked: the endpoint exists and the token is right, but it takes nothing now.
        # Nothing is queued: the caller keeps its event and may send it again after a resume.
        return error(423, f"The trigger of workflow '{slug}' is paused: nothing was started; send it again "
                          f"once the trigger is resumed", "trigger_paused")

    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        return error(400, f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters",
                     "invalid", path=f"headers.{IDEMPOTENCY_HEADER}")
    try:
        raw = request.body
    except RequestDataTooBig:
        return error(413, "The request body is too large", "too_large", path="body")
    if raw.strip():
        try:
            payload = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            return error(400, f"The request body is not valid JSON: {exc}", "parse_error", path="body")
        except RecursionError:
            return error(400, "The request body is nested too deeply", "parse_error", path="body")
    else:
        payload = {}  # an empty POST is a bare "go" signal
    refusal = _unfit_input(payload, version.definition)
    if refusal is not None:
        return refusal

    received_at = timezone.now()
    trigger = {"type": "webhook", "headers": selected_headers(request), "received_at": received_at.isoformat()}
    condition = ((version.definition or {}).get("trigger") or {}).get("filter")
    if condition:
        # Same names as a Kafka trigger's filter: `trigger` is the payload, `record` the request.
        try:
            wanted = expressions.truthy(condition, {"trigger": payload, "record": trigger})
        except (expressions.ExpressionError, RecursionError) as exc:
            return error(422, f"The trigger filter could not be evaluated on this body: {exc}", "filter_error",
                         path="trigger.filter")
        if not wanted:
            return JsonResponse({"run_id": None, "workflow": slug, "version": version.number,
                                 "started": False, "detail": "The body did not pass the trigger filter"},
                                status=200)
    try:
        run_id = runs.start_run(slug, version.number, payload, actor="webhook", trigger=trigger,
                                definition=version.definition, run_id=run_id_for(slug, key), field="body")
    except runs.StartFailed as exc:
        log.warning("webhook start of %s failed: %s", slug, exc)
        return error(503, "Kafka did not acknowledge the start; try again", "unavailable")
    return JsonResponse({"run_id": run_id, "workflow": slug, "version": version.number, "started": True},
                        status=202)


def _unfit_input(payload, definition: dict | None = None) -> JsonResponse | None:
    """The answer for a body no runner could carry or that does not match the workflow's
    `input_schema` (every mismatch listed), else None: monitor.runs' checks, asked before the
    trigger's filter sees the body."""
    try:
        runs.check_input(payload, definition, "webhook", "body")
    except runs.InputTooLarge as exc:
        return error(413, str(exc), "too_large", path="body")
    except runs.InvalidInput as exc:
        return JsonResponse({"detail": str(exc), "code": exc.problems[0].code,
                             "errors": [problem.as_dict() for problem in exc.problems]}, status=400)
    return None


def call_details(request, slug: str, token: str | None) -> dict:
    """How to call `slug`'s webhook: the full URL, the token header and a ready curl line.

    `token` is the plain token when it was just issued (shown once); otherwise the curl line
    names a shell variable in its place, since only the digest is stored.
    """
    url = request.build_absolute_uri(reverse("hooks:receive", args=[slug]))
    shown = token or "$SLUICE_WEBHOOK_TOKEN"
    curl = (f"curl -X POST '{url}' -H \"{TOKEN_HEADER}: {shown}\" "
            f"-H 'Content-Type: application/json' -d '{{}}'")
    return {"workflow": slug, "url": url, "header": TOKEN_HEADER, "token": token, "curl": curl}


def shown_on_publish(request, version) -> dict:
    """`{"webhook": call_details}` when publishing `version` issued its workflow's first token
    (services.publish leaves it on `new_webhook_token`; shown this once), else `{}`."""
    token = getattr(version, "new_webhook_token", None)
    return {"webhook": call_details(request, version.workflow.slug, token)} if token else {}
