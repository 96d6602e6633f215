"""Who may watch and operate which runs.

Watching: superusers and holders of the model permission monitor.view_run see every workflow's
runs; everyone else sees the runs of workflows they created and of workflows granted to them or
to one of their groups (monitor.WorkflowAccess). Operating (cancel, retry, signal, replay dead
letters) additionally needs monitor.operate_run.
"""

from __future__ import annotations

from django.db.models import Q

from .models import Run, WorkflowAccess

VIEW_ALL = "monitor.view_run"
OPERATE = "monitor.operate_run"


def sees_all_runs(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.has_perm(VIEW_ALL))


def visible_workflow_slugs(user) -> set[str] | None:
    """Slugs whose runs `user` may watch; None means every workflow."""
    if not (user and user.is_authenticated and user.is_active):
        return set()
    if sees_all_runs(user):
        return None
    from designer.models import Workflow

    granted = WorkflowAccess.objects.filter(Q(user=user) | Q(group__in=user.groups.all())).values("workflow_id")
    return set(Workflow.objects.filter(Q(created_by=user) | Q(id__in=granted)).values_list("slug", flat=True))


def can_view_workflow(user, slug: str) -> bool:
    slugs = visible_workflow_slugs(user)
    return slugs is None or slug in slugs


def visible_runs(user):
    slugs = visible_workflow_slugs(user)
    runs = Run.objects.all()
    return runs if slugs is None else runs.filter(workflow__in=slugs)


def can_operate(user, slug: str) -> bool:
    return can_view_workflow(user, slug) and user.has_perm(OPERATE)
