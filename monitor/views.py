"""Monitor pages: dashboard, run list, run detail with actions, dead letters, audit log.

Every view requires login and asks monitor.permissions (one function per action): run pages
show only runs of workflows the user may see, actions need the right to operate that
workflow's runs and are audited (monitor.operations). A refusal is the 403 page, with the
navigation. Bad input comes back as a message on the page (or a 400 with the field named),
never a 500.
"""

from __future__ import annotations

import json
from datetime import datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from . import dead_letters as dead_letter_origins
from . import keyset, operations, permissions, run_details, snapshot, stats, trigger_status
from .kafka_lag import consumer_lag
from .models import AuditEntry, DeadLetter, Run, RunStatus, TriggerKey
from .permissions import visible_runs, visible_workflow_slugs
from .workflows import definition_of, with_live_version

PAGE_SIZE = 25
# The run list's `q` searches this many of the most recent runs matching the other filters.
SEARCH_WINDOW = 10_000
TRIGGER_TYPES = ["manual", "kafka", "schedule", "webhook", "window", "parent", "on_failure", "replay", "test"]


def _require(allowed: bool, message: str) -> None:
    if not allowed:
        raise PermissionDenied(message)


def _require_monitor(user) -> None:
    _require(permissions.can_view_any_workflow(user), "Your account may not watch the runs of any workflow")


# ---- dashboard ------------------------------------------------------------------------------
@login_required
@require_GET
def dashboard(request):
    _require_monitor(request.user)
    return render(request, "monitor/dashboard.html", {"data": _dashboard_data(request.user)})


@login_required
@require_GET
def dashboard_data(request):
    _require_monitor(request.user)
    return JsonResponse(_dashboard_data(request.user))


def _dashboard_data(user) -> dict:
    data = stats.dashboard(visible_runs(user))
    data["dead_letters"] = (permissions.visible_dead_letters(user).filter(status=DeadLetter.Status.NEW).count()
                            if permissions.can_view_dead_letters(user) else None)
    # Consumer groups and runner hosts describe the installation, not one workflow.
    if permissions.can_view_installation(user):
        data["lag"] = consumer_lag()
    else:
        data["lag"] = {"groups": [], "error": "shown to users who see every workflow"}
        data["runners"] = []
    return data


# ---- run list -------------------------------------------------------------------------------
class FilterError(ValueError):
    pass


def _parse_time(value: str, field: str):
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise FilterError(f"{field}: not a date/time ({value!r}); use YYYY-MM-DDTHH:MM") from exc
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def filter_runs(user, params, notes: dict | None = None):
    """The visible runs matching the list's filters, newest first; raises FilterError naming the
    bad field. `notes` (a dict), when given, learns how far back the `q` search looked."""
    runs = visible_runs(user)
    workflow = params.get("workflow", "").strip()
    if workflow:
        runs = runs.filter(workflow=workflow)
    status = params.get("status", "").strip()
    if status:
        if status not in RunStatus.values:
            raise FilterError(f"status: must be one of {', '.join(RunStatus.values)}")
        runs = runs.filter(status=status)
    since, until = _parse_time(params.get("since", ""), "since"), _parse_time(params.get("until", ""), "until")
    if since:
        runs = runs.filter(created_at__gte=since)
    if until:
        runs = runs.filter(created_at__lte=until)
    trigger = params.get("trigger", "").strip()
    if trigger:  # TriggerKey, not trigger__type: the same expression as the index (monitor.models)
        runs = runs.alias(trigger_type=TriggerKey("type")).filter(trigger_type=trigger)
    topic = params.get("topic", "").strip()
    if topic:
        runs = runs.filter(trigger__topic=topic)
    parent = params.get("parent", "").strip()
    if parent:
        # The child runs of a run (subworkflow and foreach steps), optionally of one step.
        runs = runs.alias(trigger_parent=TriggerKey("run_id")).filter(trigger_parent=parent, trigger__type="parent")
        step = params.get("step", "").strip()
        if step:
            runs = runs.filter(trigger__step_id=step)
    for field in ("partition", "offset"):
        value = params.get(field, "").strip()
        if value:
            if not value.lstrip("-").isdigit() or abs(int(value)) >= 2**63:
                raise FilterError(f"{field}: must be a whole number (64-bit)")
            runs = runs.filter(**{f"trigger__{field}": int(value)})
    query = params.get("q", "").strip()
    if query:
        # Run id, or anything inside the input (searched as JSON text, on SQLite and PostgreSQL).
        # Without a full-text index that reads every row it looks at, so it looks at the
        # SEARCH_WINDOW most recent runs the other filters match (the page says so; "To" moves
        # the window back); a complete run id is found however old.
        floor = list(runs.order_by("-created_at", "-id").values_list("created_at", flat=True)
                     [SEARCH_WINDOW - 1:SEARCH_WINDOW])
        if notes is not None:
            notes["searched_since"] = floor[0] if floor else None
        exact = runs.filter(id=query).values_list("created_at", flat=True).first()
        if floor and exact is not None and exact < floor[0]:
            runs = runs.filter(id=query)  # a complete run id, older than the window
        else:
            # Not `id = q OR (...)`: SQLite then reads the whole created_at index, not the window.
            found = Q(id__icontains=query) | Q(input_text__icontains=query)
            if floor:
                found &= Q(created_at__gte=floor[0])
            runs = runs.annotate(input_text=Cast("input", TextField())).filter(found)
    return runs.order_by("-created_at", "-id")


@login_required
@require_GET
def run_list(request):
    _require_monitor(request.user)
    error, notes = "", {}
    try:
        runs = filter_runs(request.user, request.GET, notes)
        split = keyset.split_by_workflow(visible_workflow_slugs(request.user), request.GET.get("workflow", "").strip())
        page = keyset.paginate(runs, request.GET, PAGE_SIZE, split)
    except (FilterError, keyset.BadCursor) as exc:
        error, page = str(exc), keyset.Page()
        if isinstance(exc, keyset.BadCursor):
            error = f"before/after: {exc}"
    # The workflows (designer's table, a few rows), not the distinct values of a million runs.
    workflows = sorted(set(permissions.visible_workflows(request.user).values_list("slug", flat=True))
                       | ({request.GET["workflow"].strip()} if request.GET.get("workflow", "").strip() else set()))
    context = {"page": page, "error": error, "filters": request.GET, "statuses": RunStatus.values,
               "workflows": workflows, "trigger_types": TRIGGER_TYPES,
               "search_window": SEARCH_WINDOW if notes.get("searched_since") else None,
               "searched_since": notes.get("searched_since"),
               "workflow_card": _workflow_card(request.user, request.GET.get("workflow", "").strip())}
    template = "monitor/_run_rows.html" if request.htmx else "monitor/run_list.html"
    response = render(request, template, context, status=400 if error else 200)
    return response


def _workflow_card(user, slug: str) -> dict | None:
    """The runs of one workflow open on the workflow itself, as in Kestra's flow page: its live
    version, its trigger (paused or not, the lag, pause and resume) and its Run button."""
    if not slug:
        return None
    workflow = with_live_version(slug)
    if workflow is None or not permissions.can_view_workflow(user, workflow):
        return None
    live = workflow.live_version
    schema = (live.definition or {}).get("input_schema") if live is not None else None
    return {
        "workflow": workflow, "live": live, "trigger": trigger_status.page_context(user, workflow, with_lag=False),
        "can_run": live is not None and not workflow.archived and permissions.can_operate_workflow(user, workflow),
        "input_schema": json.dumps(schema) if isinstance(schema, dict) else "",
    }


# ---- run detail -----------------------------------------------------------------------------
def _visible_run(user, run_id: str) -> Run:
    run = Run.objects.filter(id=run_id).first()
    if run is None:
        raise Http404(f"no run {run_id}")
    _require(permissions.can_view_workflow(user, run.workflow), f"You may not watch runs of workflow '{run.workflow}'")
    return run


def _visible_snapshot(user, run_id: str) -> snapshot.RunSnapshot:
    """The run with its steps and history as one consistent read (monitor.snapshot), or 404.
    Permission first: a run's whole history is read only for someone who may watch it."""
    _visible_run(user, run_id)
    found = snapshot.read_run(run_id, history=True)
    if found is None:  # purged in between
        raise Http404(f"no run {run_id}")
    return found


def _definition(run: Run) -> dict | None:
    return definition_of(run.workflow, run.version)


def _step_payload(step, details: dict | None = None) -> dict:
    return {"step_id": step.step_id, "type": step.type, "status": step.status, "attempts": step.attempts,
            "input": step.input, "output": step.output, "error": step.error, "port": step.port,
            "started_at": step.started_at.isoformat() if step.started_at else None,
            "ended_at": step.ended_at.isoformat() if step.ended_at else None,
            "details": details or run_details.empty_step_details()}


def _approval_signals(definition: dict | None) -> dict:
    """step id -> signal name for approval steps (the step id unless the config names one)."""
    if not definition:
        return {}
    return {step["id"]: (step.get("config") or {}).get("signal") or step["id"]
            for step in definition.get("steps", []) if step.get("type") == "approval"}


@login_required
@require_GET
def run_detail(request, run_id):
    found = _visible_snapshot(request.user, run_id)
    run, steps, history = found.run, found.steps, found.history
    definition = _definition(run)
    from .live import entry_payload

    events = [entry_payload(entry, run) for entry in history]
    folded_run, folded_steps = run_details.fold_history(events)
    page_data = {
        "run": {"id": run.id, "workflow": run.workflow, "version": run.version, "status": run.status,
                "last_seq": run.last_seq, "created_at": run.created_at.isoformat(),
                "error": run.error, "output": run.output,
                "started_at": run.started_at.isoformat() if run.started_at else None,
                "ended_at": run.ended_at.isoformat() if run.ended_at else None,
                "trigger": run.trigger, **folded_run},
        "definition": definition,
        "steps": [_step_payload(step, folded_steps.get(step.step_id)) for step in steps],
        "history": events,
        "static": static(""),
        "urls": {"run": reverse("monitor:run_detail", args=["RUN_ID"]),
                 "children": reverse("monitor:run_list") + "?parent=RUN_ID&step=STEP_ID"},
        "approvals": _approval_signals(definition),
        "ws_path": f"/ws/runs/{run.id}/",
    }
    return render(request, "monitor/run_detail.html", {
        "run": run, "steps": steps, "history": history, "definition": definition, "page_data": page_data,
        "can_operate": permissions.can_operate_workflow(request.user, run.workflow),
        "input_json": json.dumps(run.input, indent=2), "trigger_json": json.dumps(run.trigger, indent=2),
        "output_json": json.dumps(run.output, indent=2) if run.output is not None else "",
        "waiting_approvals": [(step.step_id, page_data["approvals"][step.step_id]) for step in steps
                              if step.status == "waiting" and step.step_id in page_data["approvals"]],
        "window": _window_facts(run.trigger),
        "parent_step_type": _parent_step_type(run.trigger),
    })


def _parent_step_type(trigger) -> str:
    """The type of the step that started this child run ("subworkflow" or "foreach"), if known."""
    if not isinstance(trigger, dict) or trigger.get("type") != "parent":
        return ""
    from .models import StepRun

    return StepRun.objects.filter(run_id=str(trigger.get("run_id")), step_id=str(trigger.get("step_id"))
                                  ).values_list("type", flat=True).first() or ""


def _window_facts(trigger) -> dict | None:
    """A window run's key, bounds and counts as the page shows them (the key as JSON when not text)."""
    if not isinstance(trigger, dict) or trigger.get("type") != "window":
        return None
    key = trigger.get("key")
    return {"key": key if isinstance(key, str) else json.dumps(key), "window_start": trigger.get("window_start") or "",
            "window_end": trigger.get("window_end") or "", "records": trigger.get("records", "—"),
            "late_records": trigger.get("late_records", 0)}


def _json_field(text: str, field: str):
    """A form field holding JSON, or OperationError naming the field (bad JSON, too deep, bad text)."""
    from orchestrator import spec

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise operations.OperationError(f"{field}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
    except RecursionError:
        raise operations.OperationError(f"{field}: nested too deeply")
    problems = spec.json_problems(value, field)
    if problems:
        path, message, _code = problems[0]
        raise operations.OperationError(f"{path}: {message}")
    return value


def _operate(request, run_id, action):
    run = _visible_run(request.user, run_id)
    try:
        result = action(run)
    except operations.OperationForbidden as exc:
        raise PermissionDenied(str(exc)) from exc
    except operations.OperationError as exc:
        messages.error(request, str(exc))
        return redirect("monitor:run_detail", run_id=run.id)
    return result or redirect("monitor:run_detail", run_id=run.id)


@login_required
@require_POST
def run_cancel(request, run_id):
    def action(run):
        operations.cancel(request.user, run, reason=request.POST.get("reason", "")[:500])
        messages.success(request, f"Cancel sent for run {run.id}.")
    return _operate(request, run_id, action)


@login_required
@require_POST
def run_retry(request, run_id):
    def action(run):
        operations.retry(request.user, run)
        messages.success(request, f"Retry sent: run {run.id} resumes from its failed steps.")
    return _operate(request, run_id, action)


@login_required
@require_POST
def run_rerun(request, run_id):
    """Retry with edited input: a new run of the same version, trigger {"type": "replay", "of": id}."""
    def action(run):
        new_input = _json_field(request.POST.get("input", ""), "input")
        new_id = operations.retry_with_input(request.user, run, new_input)
        messages.success(request, f"Started run {new_id} with the edited input.")
        return redirect("monitor:run_detail", run_id=new_id)
    return _operate(request, run_id, action)


@login_required
@require_POST
def run_signal(request, run_id):
    def action(run):
        name = request.POST.get("name", "").strip()
        decision = request.POST.get("decision", "")
        if decision:
            if decision not in ("approve", "reject"):
                raise operations.OperationError("decision: must be approve or reject")
            payload = {"decision": decision, "comment": request.POST.get("comment", "")[:1000]}
        else:
            raw = request.POST.get("payload", "").strip()
            payload = _json_field(raw, "payload") if raw else None
        operations.signal(request.user, run, name, payload)
        messages.success(request, f"Signal '{name}' sent" + (f" ({decision})" if decision else "") + ".")
    return _operate(request, run_id, action)


# ---- dead letters ---------------------------------------------------------------------------
def _visible_letter(user, pk) -> DeadLetter:
    letter = get_object_or_404(DeadLetter, pk=pk)
    _require(permissions.can_view_dead_letter(user, letter), f"You may not see dead letter {pk}")
    return letter


@login_required
@require_GET
def dead_letters(request):
    user = request.user
    _require(permissions.can_view_dead_letters(user), "Dead letters need the dead-letter permission or the right to "
                                                       "operate a workflow")
    status = request.GET.get("status", DeadLetter.Status.NEW)
    letters = permissions.visible_dead_letters(user)
    visible_new = letters.filter(status=DeadLetter.Status.NEW)
    if status in DeadLetter.Status.values:
        letters = letters.filter(status=status)
    page = Paginator(letters, PAGE_SIZE).get_page(request.GET.get("page"))
    for letter in page.object_list:
        letter.can_act = permissions.can_act_on_dead_letter(user, letter)
        # As on its own page: no Replay for a letter with nowhere to go (a `projector` letter).
        letter.replayable = dead_letter_origins.origin(letter) is not None
    return render(request, "monitor/dead_letters.html", {
        "page": page, "status": status, "statuses": DeadLetter.Status.values,
        "can_operate": any(letter.can_act for letter in page.object_list),
        "new_count": visible_new.count()})


_DESTINATIONS = {
    dead_letter_origins.TRIGGER: "Replay through the trigger",
    dead_letter_origins.RUNS: "Replay into the runs topic",
    dead_letter_origins.TASKS: "Replay to the workers",
}


@login_required
@require_GET
def dead_letter_detail(request, pk):
    letter = _visible_letter(request.user, pk)
    pretty = letter.value
    try:
        pretty = json.dumps(json.loads(letter.value), indent=2)
    except (ValueError, RecursionError):
        pass
    origin = dead_letter_origins.origin(letter)
    return render(request, "monitor/dead_letter_detail.html", {
        "letter": letter, "pretty_value": pretty, "origin": origin,
        "replay_label": _DESTINATIONS.get(origin, ""),
        "editable": origin in (dead_letter_origins.TRIGGER, dead_letter_origins.RUNS),
        "failed_again": dead_letter_origins.later_failure(letter),
        "replayed_run": Run.objects.filter(id=(letter.replay or {}).get("run_id") or "").first(),
        "can_operate": permissions.can_act_on_dead_letter(request.user, letter)})


def _dead_letter_action(request, action):
    try:
        return True, action()
    except operations.OperationForbidden as exc:
        raise PermissionDenied(str(exc)) from exc
    except operations.OperationError as exc:
        messages.error(request, str(exc))
        return False, None


@login_required
@require_POST
def dead_letter_replay(request, pk):
    letter = _visible_letter(request.user, pk)
    edited = request.POST.get("value")
    if edited is not None and edited.strip() in (letter.value.strip(), _pretty(letter.value).strip()):
        edited = None
    if edited is not None and request.POST.get("json") == "1":
        try:
            _json_field(edited, "value")
        except operations.OperationError as exc:
            messages.error(request, str(exc))
            return redirect("monitor:dead_letter_detail", pk=pk)
    done, outcome = _dead_letter_action(request, lambda: operations.replay_dead_letter(request.user, letter, edited))
    if done:
        messages.success(request, f"Dead letter {pk}: {outcome.detail}.")
    return redirect("monitor:dead_letter_detail", pk=pk)


def _pretty(value: str) -> str:
    try:
        return json.dumps(json.loads(value), indent=2)
    except (ValueError, RecursionError):
        return value


@login_required
@require_POST
def dead_letter_discard(request, pk):
    letter = _visible_letter(request.user, pk)
    done, _ = _dead_letter_action(request, lambda: operations.discard_dead_letter(request.user, letter))
    if done:
        messages.success(request, f"Dead letter {pk} discarded.")
    return redirect("monitor:dead_letters")


@login_required
@require_POST
def dead_letters_replay_all(request):
    user = request.user
    _require(permissions.can_view_dead_letters(user), "Dead letters need the dead-letter permission or the right to "
                                                       "operate a workflow")
    letters = [letter for letter in permissions.visible_dead_letters(user).filter(status=DeadLetter.Status.NEW)
               .order_by("failed_at", "offset")[:1000] if permissions.can_act_on_dead_letter(user, letter)]
    done, failed = 0, []
    for letter in letters:
        try:
            operations.replay_dead_letter(user, letter)
            done += 1
        except operations.OperationError as exc:
            failed.append(f"{letter.pk}: {exc}")
    if failed:
        messages.error(request, f"{len(failed)} not replayed: " + "; ".join(failed[:5]) + (" ..." if len(failed) > 5 else ""))
    messages.success(request, f"Replayed {done} of {len(letters)} dead letters.")
    return redirect("monitor:dead_letters")


# ---- audit ----------------------------------------------------------------------------------
@login_required
@require_GET
def audit_log(request):
    _require(permissions.can_view_audit_log(request.user), "The audit log needs the permission monitor.view_auditentry")
    entries = AuditEntry.objects.all()
    action = request.GET.get("action", "").strip()
    if action:
        entries = entries.filter(action=action)
    who = request.GET.get("user", "").strip()
    if who:
        entries = entries.filter(username=who)
    target = request.GET.get("target", "").strip()
    if target:
        entries = entries.filter(target_id__icontains=target)
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    return render(request, "monitor/audit.html", {
        "page": page, "filters": request.GET,
        "actions": AuditEntry.objects.order_by().values_list("action", flat=True).distinct()})
