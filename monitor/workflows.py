"""What the monitor reads of workflows: designer's tables, through Django's app registry.

Run, grant and alert rows refer to workflows (foreign keys to "designer.Workflow", declared by
app label in monitor/models.py). Reading those rows back goes through this one module, by app
label as well, so the monitor imports no designer code: the designer builds on the monitor
(runs, audit, permissions, the start service), never the other way (docs/architecture.md).
"""

from __future__ import annotations

from django.apps import apps


def workflow_model():
    """designer.Workflow (slug, live_version, archived, trigger_paused...)."""
    return apps.get_model("designer", "Workflow")


def workflows():
    """Every workflow, as a queryset."""
    return workflow_model().objects.all()


def with_live_version(slug: str):
    """The workflow `slug` with its live version loaded (None when there is no such workflow)."""
    return workflow_model().objects.select_related("live_version").filter(slug=slug).first()


def live_workflows():
    """The workflows that have a live version, with it loaded."""
    return workflow_model().objects.filter(live_version__isnull=False).select_related("live_version")


def definition_of(slug: str, number: int) -> dict | None:
    """The definition of version `number` of workflow `slug` (None when that version is gone)."""
    version = (apps.get_model("designer", "WorkflowVersion").objects
               .filter(workflow__slug=slug, number=number).first())
    return version.definition if version else None
