"""What can be done to a workflow definition: create, save, publish, start, duplicate, archive.

The REST API, the editor pages and the management commands all go through these functions,
so the rules (validate before storing, refuse a save based on a stale version, publish to
Kafka before the database says "live", never start an unpublished workflow) live in one place.

Starting a run is monitor.runs.start_run's job (the one service every door uses); here
`start_run` and `start_test_run` choose the version and hand over.

Errors are exceptions with a clear message: `InvalidDefinition` (from orchestrator.spec, with
every problem), `VersionConflict`, `NotPublished`, `WorkflowArchived`, `PublishFailed`,
`StartFailed`, `TriggerControlFailed`, `VersionNotFound`, `InvalidInput`, `InputTooLarge`
(the last three from monitor.runs). Each `ServiceError` carries the HTTP status the API answers.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from monitor import audit, runs
from monitor.models import WorkflowAccess
from monitor.runs import (  # noqa: F401  (part of this module's API: callers catch services.InvalidInput)
    SCHEMA_CHECKED_TRIGGERS,
    InputTooLarge,
    InvalidInput,
    StartFailed,
    check_input_schema,
    check_run_input,
)
from orchestrator import spec
from orchestrator.runtime import commands
from orchestrator.spec import InvalidDefinition, Problem
from triggers.schedules import sync_schedule
from triggers.webhooks import sync_webhook
from webbase.errors import ServiceError

from .models import Workflow, WorkflowVersion

# Version states as users see them (a version row itself only knows whether it was published).
DRAFT = "draft"
LIVE = "live"
PUBLISHED = "published"  # published once, but another version is live now


class VersionConflict(ServiceError):
    """Someone saved a newer version since the editor loaded `base_version`."""

    code = "version_conflict"

    def body(self) -> dict:
        return {"latest_version": self.latest_number, "saved_by": self.saved_by}

    def __init__(self, workflow: Workflow, base_version: int, latest: WorkflowVersion):
        self.base_version = base_version
        self.latest_number = latest.number
        self.saved_by = latest.created_by.get_username() if latest.created_by else ""
        self.saved_at = latest.created_at
        who = f" by {self.saved_by}" if self.saved_by else ""
        super().__init__(
            f"Workflow '{workflow.slug}' was saved as version {latest.number}{who} after you loaded "
            f"version {base_version}; nothing was saved. Reload version {latest.number} and apply your changes again."
        )


class NotPublished(ServiceError):
    code = "not_published"

    def __init__(self, workflow: Workflow):
        super().__init__(f"Workflow '{workflow.slug}' has no published version: publish it first")


class WorkflowArchived(ServiceError):
    code = "archived"

    def __init__(self, workflow: Workflow, action: str):
        super().__init__(f"Workflow '{workflow.slug}' is archived: it cannot be {action}")


class VersionNotFound(ServiceError):
    status_code = 404
    code = "not_found"

    def __init__(self, workflow: Workflow, number: int):
        self.number = number
        super().__init__(f"Workflow '{workflow.slug}' has no version {number}")


class PublishFailed(ServiceError):
    """Kafka did not acknowledge the definition; the database was left unchanged."""

    status_code = 503
    code = "kafka_unavailable"


class TriggerControlFailed(ServiceError):
    """Kafka did not acknowledge a pause or resume; the database was left unchanged."""

    status_code = 503
    code = "kafka_unavailable"


class SlugTaken(InvalidDefinition):
    """A workflow with this slug exists already (an InvalidDefinition on the `slug` field)."""

    code = "duplicate"

    def __init__(self, slug: str):
        super().__init__([Problem(path="slug", code="duplicate",
                                  message=f"A workflow with slug '{slug}' already exists")])


# ---- helpers -----------------------------------------------------------------------------
def _username(user) -> str:
    return user.get_username() if user is not None and getattr(user, "is_authenticated", False) else ""


def _db_user(user):
    """The user to store in a foreign key (None for anonymous or CLI calls without one)."""
    return user if user is not None and getattr(user, "is_authenticated", False) else None


def record_audit(user, action: str, target, details: dict | None = None) -> None:
    """One entry in the audit log (monitor.audit); target is a ("workflow", slug) or ("run", id) pair."""
    audit.record(user, action, target, details or {})


def validate(definition: Any) -> list[Problem]:
    """Every problem of a definition, for this installation (its prefix of Sluice's own topics)."""
    problems = spec.validate(definition, topic_prefix=settings.SLUICE_TOPIC_PREFIX)
    if not spec.errors(problems):
        size = len(json.dumps(definition, separators=(",", ":")).encode())
        if size > settings.SLUICE_MAX_DEFINITION_BYTES:
            problems.append(Problem(path="", code="too-long", message=(
                f"the definition is {size} bytes of JSON, more than the limit of "
                f"{settings.SLUICE_MAX_DEFINITION_BYTES} bytes (SLUICE_MAX_DEFINITION_BYTES)")))
    return problems


def check_definition(definition: Any) -> list[Problem]:
    """Raise InvalidDefinition with every error; return the warnings (accepted, worth showing)."""
    problems = validate(definition)
    errors = spec.errors(problems)
    if errors:
        raise InvalidDefinition(errors)
    return [problem for problem in problems if problem not in errors]


def _check_slug_matches(workflow: Workflow, definition: dict) -> None:
    if definition.get("slug") != workflow.slug:
        raise InvalidDefinition([Problem(
            path="slug", code="slug_mismatch",
            message=f"The slug of a saved workflow cannot change: expected '{workflow.slug}', "
                    f"got '{definition.get('slug')}' (duplicate the workflow to get a new slug)",
        )])


def _sync_workflow_fields(workflow: Workflow, definition: dict) -> None:
    workflow.name = definition.get("name") or definition["slug"]
    workflow.description = definition.get("description") or ""


def version_status(version: WorkflowVersion, workflow: Workflow | None = None) -> str:
    workflow = workflow or version.workflow
    if workflow.live_version_id == version.pk:
        return LIVE
    return PUBLISHED if version.published_at else DRAFT


def get_version(workflow: Workflow, number: int | None = None) -> WorkflowVersion:
    """Version `number` of the workflow, or its latest when number is None."""
    versions = workflow.versions.select_related("created_by", "published_by")
    version = versions.order_by("-number").first() if number is None else versions.filter(number=number).first()
    if version is None:
        raise VersionNotFound(workflow, number if number is not None else 0)
    return version


# ---- definitions -------------------------------------------------------------------------
def create_workflow(definition: dict, user, message: str = "") -> WorkflowVersion:
    """A new workflow with `definition` as its version 1 (a draft)."""
    check_definition(definition)
    definition = copy.deepcopy(definition)
    slug = definition["slug"]
    try:
        with transaction.atomic():
            if Workflow.objects.filter(slug=slug).exists():
                raise SlugTaken(slug)
            workflow = Workflow(slug=slug, created_by=_db_user(user))
            _sync_workflow_fields(workflow, definition)
            workflow.save()
            version = WorkflowVersion.objects.create(
                workflow=workflow, number=1, definition=definition,
                message=message or "Created", created_by=_db_user(user),
            )
            if _db_user(user) is not None:
                # The creator may edit what they created, whatever their role (an explicit,
                # revocable grant rather than a hidden owner rule).
                WorkflowAccess.objects.create(workflow=workflow, user=user, permission=WorkflowAccess.Permission.EDIT)
    except IntegrityError as exc:  # two creates of one slug raced; the other one won
        raise SlugTaken(slug) from exc
    record_audit(user, "create", ("workflow", slug), {"version": 1})
    return version


def save_version(workflow: Workflow, definition: dict, user, message: str = "",
                 base_version: int | None = None) -> WorkflowVersion:
    """Store `definition` as the workflow's next draft version.

    `base_version` is the version the editor started from; if someone saved another version
    since, the save is refused with VersionConflict so neither person's work is overwritten.
    """
    if workflow.archived:
        raise WorkflowArchived(workflow, "edited (restore it first)")
    check_definition(definition)
    _check_slug_matches(workflow, definition)
    definition = copy.deepcopy(definition)
    try:
        with transaction.atomic():
            # Lock the workflow row (PostgreSQL) so concurrent saves are numbered one after another;
            # SQLite's IMMEDIATE transactions serialise writers anyway.
            locked = Workflow.objects.select_for_update().get(pk=workflow.pk)
            latest = locked.versions.select_related("created_by").order_by("-number").first()
            latest_number = latest.number if latest else 0
            if base_version is not None and latest is not None and base_version != latest_number:
                raise VersionConflict(workflow, base_version, latest)
            _sync_workflow_fields(locked, definition)
            locked.save(update_fields=["name", "description", "updated_at"])
            version = WorkflowVersion.objects.create(
                workflow=locked, number=latest_number + 1, definition=definition,
                message=message, created_by=_db_user(user),
            )
    except IntegrityError as exc:  # another save took the same number between read and insert
        latest = workflow.versions.select_related("created_by").order_by("-number").first()
        raise VersionConflict(workflow, base_version if base_version is not None else latest.number - 1,
                              latest) from exc
    workflow.refresh_from_db()
    record_audit(user, "save", ("workflow", workflow.slug), {"version": version.number, "message": message})
    return version


def publish(workflow: Workflow, version_number: int | None, user) -> WorkflowVersion:
    """Make a version live: validated again, on Kafka first, then marked live in the database.

    Kafka goes first so a runner can always find the version a start names: the web answers a
    start only for the live version, and the live version is on `wf.definitions` already.
    """
    if workflow.archived:
        raise WorkflowArchived(workflow, "published (restore it first)")
    version = get_version(workflow, version_number)
    # Rules may have tightened since the version was saved (a step type changed its schema).
    check_definition(version.definition)
    by = _username(user)
    try:
        commands.publish_definition(workflow.slug, version.number, version.definition, by=by)
    except commands.CommandError as exc:
        raise PublishFailed(
            f"Could not publish '{workflow.slug}' version {version.number}: Kafka did not acknowledge "
            f"({exc}); nothing changed"
        ) from exc
    with transaction.atomic():
        version.published_at = timezone.now()
        version.published_by = _db_user(user)
        version.save(update_fields=["published_at", "published_by"])
        Workflow.objects.filter(pk=workflow.pk).update(live_version=version, updated_at=timezone.now())
    workflow.refresh_from_db()
    # Triggers that live outside the runners follow the live version: cron entries for
    # Celery beat, and a webhook token (shown once to the publisher when it is new).
    sync_schedule(workflow.slug, version.definition)
    version.new_webhook_token = sync_webhook(workflow.slug, version.definition)
    record_audit(user, "publish", ("workflow", workflow.slug), {"version": version.number})
    return version


def set_trigger_paused(workflow: Workflow, paused: bool, user) -> Workflow:
    """Pause or resume the workflow's trigger; returns the workflow with its new state.

    Kafka first (the TriggerControl record every runner follows, kept across restarts), then the
    Workflow row that pages, schedules and webhooks read: a refused record changes nothing.
    Pausing affects whatever trigger is live: Kafka records wait in their topic, schedule ticks
    and webhook calls start nothing; runs started by hand still start.
    """
    if workflow.archived:
        raise WorkflowArchived(workflow, "paused or resumed (restore it first)")
    by = _username(user)
    try:
        commands.set_trigger_paused(workflow.slug, paused, by=by)
    except commands.CommandError as exc:
        raise TriggerControlFailed(
            f"Could not {'pause' if paused else 'resume'} the trigger of '{workflow.slug}': Kafka did not "
            f"acknowledge ({exc}); nothing changed") from exc
    now = timezone.now()
    Workflow.objects.filter(pk=workflow.pk).update(trigger_paused=paused, trigger_paused_by=by,
                                                   trigger_paused_at=now, updated_at=now)
    workflow.refresh_from_db()
    record_audit(user, "pause_trigger" if paused else "resume_trigger", ("workflow", workflow.slug), {})
    return workflow


def start_run(workflow: Workflow, input: Any, user, version: int | None = None, trigger: dict | None = None,
              run_id: str | None = None) -> str:
    """Start a run of the live version (or of a given published version); returns the run id.

    monitor.runs.start_run checks the input, sends the command, writes the pending Run row and
    the audit entry. `trigger` describes how the run started (default: by hand); `run_id` makes
    the start idempotent.
    """
    if workflow.archived:
        raise WorkflowArchived(workflow, "started")
    if version is None:
        if workflow.live_version_id is None:
            raise NotPublished(workflow)
        chosen = workflow.live_version
    else:
        chosen = get_version(workflow, version)
        if chosen.published_at is None:
            raise ServiceError(f"Version {version} of workflow '{workflow.slug}' was never published: "
                               f"runners do not know it")
    return runs.start_run(workflow.slug, chosen.number, input, actor=user, trigger=trigger,
                          definition=chosen.definition, run_id=run_id)


def _offer_to_runners(workflow: Workflow, version: WorkflowVersion, user) -> None:
    """Put a draft on `wf.definitions` under its `slug@version` key only, without a live record.

    Runners can then run it, while triggers keep using the live version.
    """
    if version.published_at is not None:
        return  # already on wf.definitions
    commands.offer_definition(workflow.slug, version.number, version.definition, by=_username(user))


def start_test_run(workflow: Workflow, number: int, input: Any, user, record: dict | None = None) -> str:
    """Run a saved version (draft or not) once with sample input, without making it live.

    `record` (optional) describes a sample Kafka record (topic, partition, offset, key,
    timestamp) so trigger-dependent expressions see what a real trigger would give them.
    """
    if workflow.archived:
        raise WorkflowArchived(workflow, "test-run")
    version = get_version(workflow, number)
    check_definition(version.definition)
    trigger = {"type": "test"}
    if isinstance(record, dict):
        trigger.update({key: record.get(key) for key in ("topic", "partition", "offset", "key", "timestamp")})
    input = {} if input is None else input
    runs.check_input(input, version.definition, "test")
    check_run_input(trigger, "record")
    what = f"a test run of '{workflow.slug}' version {number}"
    try:
        _offer_to_runners(workflow, version, user)
    except commands.CommandError as exc:
        raise StartFailed(f"Could not start {what}: Kafka did not acknowledge ({exc})") from exc
    return runs.start_run(workflow.slug, version.number, input, actor=user, trigger=trigger,
                          definition=version.definition, action="test_run", what=what)


def duplicate_workflow(workflow: Workflow, new_slug: str, user, name: str | None = None) -> WorkflowVersion:
    """A new workflow (version 1, draft) with the latest definition of `workflow` under `new_slug`."""
    definition = copy.deepcopy(get_version(workflow).definition)
    definition["slug"] = new_slug
    definition["name"] = name or f"{definition.get('name') or workflow.slug} (copy)"
    version = create_workflow(definition, user, message=f"Duplicated from {workflow.slug}")
    record_audit(user, "duplicate", ("workflow", workflow.slug), {"new_slug": new_slug})
    return version


def archive_workflow(workflow: Workflow, user) -> Workflow:
    """Hide the workflow and stop its triggers; runs already started finish on their version."""
    if workflow.live_version_id is not None:
        try:
            _unpublish(workflow.slug)
        except commands.CommandError as exc:
            raise PublishFailed(
                f"Could not archive '{workflow.slug}': Kafka did not acknowledge the unpublish ({exc}); "
                f"nothing changed"
            ) from exc
    Workflow.objects.filter(pk=workflow.pk).update(archived=True, live_version=None, updated_at=timezone.now())
    workflow.refresh_from_db()
    record_audit(user, "archive", ("workflow", workflow.slug), {})
    return workflow


def _unpublish(slug: str) -> None:
    """Tell runners the workflow has no live version any more, so its triggers stop.

    Schedules stop with it.
    """
    commands.unpublish_definition(slug)
    sync_schedule(slug, None)


def unarchive_workflow(workflow: Workflow, user) -> Workflow:
    """Bring an archived workflow back as editable; it stays unpublished until published again."""
    Workflow.objects.filter(pk=workflow.pk).update(archived=False, updated_at=timezone.now())
    workflow.refresh_from_db()
    record_audit(user, "unarchive", ("workflow", workflow.slug), {})
    return workflow


def restore_version(workflow: Workflow, number: int, user) -> WorkflowVersion:
    """Save the definition of version `number` again as the newest draft (history stays intact)."""
    old = get_version(workflow, number)
    return save_version(workflow, old.definition, user, message=f"Restored version {number}")
