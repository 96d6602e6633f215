"""Who may do what: one function per action, used by every door.

Pages, the designer's JSON endpoints, the REST API, websockets, webhook token rotation and
admin actions all ask these functions, so a rule changes in one place.

Two sources of rights:
- Roles: the groups Viewer, Author, Publisher and Operator (created by a migration, see ROLES)
  hold model permissions that apply to every workflow. A user may hold several roles.
- Grants: monitor.WorkflowAccess gives a user or a group one right (view, edit, publish,
  operate) on one workflow. Any grant also lets its holder see that workflow and its runs.
  Creating a workflow grants its creator `edit` on it.

A role's right applies to the workflows its holder can see, so "edit every workflow" is the
Author role (view + change), and a user with a grant on one workflow acts on that one only.
Superusers may do everything. Inactive and anonymous users may do nothing.

Functions take a workflow as a designer.Workflow or its slug (runs and dead letters name their
workflow by slug). Rights are read once per user object and cached on it, as Django caches
model permissions: a request (or a websocket connection) sees the rights it started with.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db.models import Q

from .models import DeadLetter, Run, WorkflowAccess

Grant = WorkflowAccess.Permission

# Model permissions, held through the roles below.
VIEW_ALL = ("designer.view_workflow", "monitor.view_run")  # either one: see every workflow and run
CREATE = "designer.add_workflow"
EDIT_ALL = "designer.change_workflow"
PUBLISH_ALL = "designer.publish_workflow"
OPERATE_ALL = "monitor.operate_run"
VIEW_DEAD_LETTERS = "monitor.view_deadletter"
VIEW_AUDIT = "monitor.view_auditentry"

# The roles and their model permissions ("app.codename"). The migration that creates the groups
# keeps its own copy (migrations are history); a test checks the two agree.
_SEE = ["designer.view_workflow", "designer.view_workflowversion", "monitor.view_run", "monitor.view_steprun",
        "monitor.view_historyentry"]
ROLES: dict[str, list[str]] = {
    "Viewer": _SEE,
    "Author": _SEE + ["designer.add_workflow", "designer.change_workflow"],
    "Publisher": _SEE + ["designer.publish_workflow"],
    "Operator": _SEE + ["monitor.operate_run", "monitor.view_deadletter", "monitor.view_auditentry",
                        "monitor.view_runnerprocess"],
}


def ensure_roles() -> None:
    """Create the role groups with their permissions where missing (a migration does it first;
    this restores them where a database was flushed, as transactional tests do)."""
    from django.contrib.auth.models import Group, Permission

    for name, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        for perm in perms:
            app_label, codename = perm.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def _slug(workflow: Any) -> str:
    return workflow if isinstance(workflow, str) else workflow.slug


def _active(user) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active)


def _has(user, perm: str) -> bool:
    return _active(user) and user.has_perm(perm)


def _grants(user) -> dict[str, set[str]]:
    """slug -> the rights granted on it to the user or one of their groups (cached on the user)."""
    cached = getattr(user, "_sluice_grants", None)
    if cached is None:
        cached = defaultdict(set)
        rows = WorkflowAccess.objects.filter(Q(user=user) | Q(group__in=user.groups.all()))
        for slug, permission in rows.values_list("workflow__slug", "permission"):
            cached[slug].add(permission)
        cached = dict(cached)
        user._sluice_grants = cached
    return cached


def _granted(user, workflow, right: str) -> bool:
    return right in _grants(user).get(_slug(workflow), ())


# ---- workflows ------------------------------------------------------------------------------
def sees_everything(user) -> bool:
    """Every workflow, every run, the installation's runners and consumer lag."""
    return _active(user) and (user.is_superuser or any(user.has_perm(perm) for perm in VIEW_ALL))


def visible_workflow_slugs(user) -> set[str] | None:
    """Slugs of the workflows `user` may see; None means every workflow."""
    if not _active(user):
        return set()
    if sees_everything(user):
        return None
    return set(_grants(user))


def can_view_any_workflow(user) -> bool:
    slugs = visible_workflow_slugs(user)
    return slugs is None or bool(slugs)


def can_view_workflow(user, workflow) -> bool:
    """See the workflow, its versions and its runs (pages, API, websockets)."""
    slugs = visible_workflow_slugs(user)
    return slugs is None or _slug(workflow) in slugs


def visible_workflows(user, queryset=None):
    from . import workflows

    queryset = workflows.workflows() if queryset is None else queryset
    slugs = visible_workflow_slugs(user)
    return queryset if slugs is None else queryset.filter(slug__in=slugs)


def can_create_workflow(user) -> bool:
    return _has(user, CREATE)


def can_edit_workflow(user, workflow) -> bool:
    """Save versions, restore one, archive or restore a draft (not live) workflow."""
    return can_view_workflow(user, workflow) and (_has(user, EDIT_ALL) or _granted(user, workflow, Grant.EDIT))


def can_use_designer_tools(user) -> bool:
    """The editor's validation and side panel (pure computations on a posted definition)."""
    return can_create_workflow(user) or can_view_any_workflow(user)


def can_publish_workflow(user, workflow) -> bool:
    """Publish a version, take a live workflow off the air (archive), see its webhook token."""
    return can_view_workflow(user, workflow) and (_has(user, PUBLISH_ALL) or _granted(user, workflow, Grant.PUBLISH))


def can_archive_workflow(user, workflow) -> bool:
    """Archiving a live workflow unpublishes it: a publishing decision as well as an edit."""
    if not can_edit_workflow(user, workflow):
        return False
    return isinstance(workflow, str) or workflow.live_version_id is None or can_publish_workflow(user, workflow)


def can_configure_alerts(user, workflow) -> bool:
    """Change who is notified when a run of the workflow fails (webhook URL, email addresses):
    a publisher's decision, like the webhook token; notifications carry run errors out."""
    return can_publish_workflow(user, workflow)


# ---- runs ----------------------------------------------------------------------------------
def can_operate_workflow(user, workflow) -> bool:
    """Start runs of the workflow; cancel, retry, signal and re-run its runs."""
    return can_view_workflow(user, workflow) and (_has(user, OPERATE_ALL) or _granted(user, workflow, Grant.OPERATE))


def can_operate_any_workflow(user) -> bool:
    return (_has(user, OPERATE_ALL) and can_view_any_workflow(user)) or bool(_active(user) and _operated_slugs(user))


def can_pause_trigger(user, workflow) -> bool:
    """Pause or resume the workflow's trigger: stopping and restarting its runs is operating it."""
    return can_operate_workflow(user, workflow)


def can_test_run(user, workflow) -> bool:
    """Run a saved draft once from the designer: it executes unpublished work, so edit and operate."""
    return can_edit_workflow(user, workflow) and can_operate_workflow(user, workflow)


def visible_runs(user):
    slugs = visible_workflow_slugs(user)
    runs = Run.objects.all()
    return runs if slugs is None else runs.filter(workflow__in=slugs)


# Kept under their earlier names: the websocket consumers and the run operations use them.
can_operate = can_operate_workflow


# ---- dead letters --------------------------------------------------------------------------
def _operated_slugs(user) -> set[str]:
    return {slug for slug, rights in _grants(user).items() if Grant.OPERATE in rights}


def can_view_dead_letters(user) -> bool:
    """Open the dead-letter list at all (what it shows is visible_dead_letters)."""
    return (_has(user, VIEW_DEAD_LETTERS) and can_view_any_workflow(user)) or bool(
        _active(user) and _operated_slugs(user))


def visible_dead_letters(user):
    """Dead letters of workflows `user` sees and has the dead-letter permission for, or operates.

    A dead letter no workflow could be told for (an undecodable record) only shows to users who
    see everything.
    """
    letters = DeadLetter.objects.all()
    if not _active(user):
        return letters.none()
    slugs = visible_workflow_slugs(user)
    if _has(user, VIEW_DEAD_LETTERS):
        if slugs is None:
            return letters
        return letters.filter(workflow__in=slugs)
    return letters.filter(workflow__in=_operated_slugs(user))


def can_view_dead_letter(user, letter: DeadLetter) -> bool:
    if not _active(user):
        return False
    if _has(user, VIEW_DEAD_LETTERS) and (sees_everything(user) or (letter.workflow and
                                                                     can_view_workflow(user, letter.workflow))):
        return True
    return bool(letter.workflow) and _granted(user, letter.workflow, Grant.OPERATE)


def can_act_on_dead_letter(user, letter: DeadLetter) -> bool:
    """Replay (optionally edited) or discard: see it, and operate its workflow."""
    if not can_view_dead_letter(user, letter):
        return False
    if not letter.workflow:
        return sees_everything(user) and _has(user, OPERATE_ALL)
    return can_operate_workflow(user, letter.workflow)


# ---- the installation -----------------------------------------------------------------------
def can_view_audit_log(user) -> bool:
    return _has(user, VIEW_AUDIT)


def can_view_installation(user) -> bool:
    """Runner processes and consumer lag describe the whole installation, not one workflow."""
    return sees_everything(user)


def can_rotate_webhook_token(user, workflow) -> bool:
    return can_publish_workflow(user, workflow)


def navigation(request) -> dict:
    """Template context: which main navigation entries the signed-in user can open."""
    user = getattr(request, "user", None)
    if not _active(user):
        return {}
    return {"nav": {
        "workflows": can_view_any_workflow(user) or can_create_workflow(user),
        "monitor": can_view_any_workflow(user),
        "dead_letters": can_view_dead_letters(user),
        "audit": can_view_audit_log(user),
        "admin": user.is_staff,
    }}
