"""The designer's alert settings page of one workflow: notify on failure by webhook or email.

Anyone who sees the workflow sees the page (with the webhook URL reduced to its host); saving
and sending a test notification need monitor.permissions.can_configure_alerts.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render

from monitor import alerts, permissions
from monitor.alert_settings import AlertSettingsForm
from monitor.audit import record
from monitor.models import WorkflowAlerts

from .models import Workflow


@login_required
def alert_settings(request, slug):
    workflow = get_object_or_404(Workflow, slug=slug)
    if not permissions.can_view_workflow(request.user, workflow):
        raise PermissionDenied(f"You have no access to workflow '{slug}'")
    may_change = permissions.can_configure_alerts(request.user, workflow)
    current = WorkflowAlerts.objects.filter(workflow=workflow).first() or WorkflowAlerts(workflow=workflow,
                                                                                         on_failure=False)
    form = AlertSettingsForm(request.POST if request.method == "POST" else None, instance=current)
    if request.method == "POST":
        if not may_change:
            raise PermissionDenied(f"You may not change the alerts of '{slug}'")
        if request.POST.get("action") == "test" and current.pk:
            for channel, problem in alerts.send_test(current):
                if problem:
                    messages.error(request, f"Test {channel} notification not sent: {problem}")
                else:
                    messages.success(request, f"Test {channel} notification sent")
            return redirect("designer:alerts", slug=slug)
        if form.is_valid():
            saved = form.save(commit=False)
            saved.updated_by = request.user.get_username()
            saved.save()
            record(request.user, "alerts.update", workflow,
                   {"on_failure": saved.on_failure, "webhook": alerts.describe_url(saved.webhook_url),
                    "emails": saved.emails})
            messages.success(request, "Alert settings saved")
            return redirect("designer:alerts", slug=slug)
    if not may_change:
        for field in form.fields.values():
            field.disabled = True
    return render(request, "designer/alerts.html", {
        "workflow": workflow, "form": form, "may_change": may_change, "saved": bool(current.pk),
        "webhook_host": alerts.describe_url(current.webhook_url),
        "recent": alerts.recent_deliveries(slug),
    })
