"""The designer's pages: the workflow list and the editor, plus the small JSON endpoints the
editor's JavaScript calls (validate, side panel, save, publish, versions, diff, test run).

Every rule about definitions (validation before storing, stale-save refusal, publish order)
lives in designer/services.py, and every rule about who may do what in monitor/permissions.py;
these views only translate between HTTP and those calls, and answer bad input with a 4xx
carrying every problem (field path and step id), never a 500.
"""

from __future__ import annotations

import copy
import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from monitor import permissions, trigger_status
from monitor.models import Run
from orchestrator import spec, steps
from orchestrator.models import WebhookEndpoint
from orchestrator.spec import InvalidDefinition, Problem
from triggers import webhooks

from webbase import errors

from . import forms, services
from . import window_form as window_forms
from .diff import diff_definitions
from .models import Workflow, WorkflowVersion


def _require(allowed: bool, message: str) -> None:
    if not allowed:
        raise PermissionDenied(message)


def _visible_workflow(request, slug: str, queryset=None) -> Workflow:
    """The workflow, 404 if there is none, PermissionDenied if the user may not see it."""
    workflow = get_object_or_404(Workflow.objects.all() if queryset is None else queryset, slug=slug)
    _require(permissions.can_view_workflow(request.user, workflow), f"You have no access to workflow '{slug}'")
    return workflow


def _loads(raw, what: str = "The request body", checked: bool = True):
    """JSON text as Python values, or BadRequest naming what is wrong (depth and bad text included
    unless `checked` is off: a definition's validation names those problems on their field)."""
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}")
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply")
    if checked:
        _check_fit(value, what)
    return value


def _check_fit(value, what: str, path: str = "") -> None:
    unfit = spec.json_problems(value, path)
    if unfit:
        where, message, _code = unfit[0]
        raise BadRequest(f"{what}: {where + ': ' if where else ''}{message}")


def _json_body(request) -> dict:
    """The request's JSON object, or a 400 naming what is wrong with it.

    The `definition` in it is left to the validator, which reports unfit JSON (too deep, lone
    surrogates) as problems with their paths, like every other problem of a definition."""
    body = _loads(request.body or b"{}", checked=False)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    for key, value in body.items():
        if key != "definition":
            _check_fit({key: value}, "The request body")
    return body


class BadRequest(Exception):
    pass


def error_response(status: int, detail: str, code: str, found: list[dict] | None = None, **extra) -> JsonResponse:
    """An error answer of the editor's JSON endpoints, in the REST API's shape (webbase.errors)."""
    return JsonResponse(errors.body(detail, code, found, **extra), status=status)


def json_endpoint(view):
    """Turn the refusals of services and of request parsing into JSON errors (never a 500), in
    the shape and with the statuses the REST API answers them (webbase.errors)."""

    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except BadRequest as exc:
            return error_response(400, str(exc), "invalid")
        except PermissionDenied as exc:
            return error_response(403, str(exc) or "You do not have permission to do this", "permission_denied")
        except Exception as exc:
            refusal = errors.for_refusal(exc)
            if refusal is None:
                raise
            status, data = refusal
            return JsonResponse(data, status=status)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return login_required(wrapped)


def _definition_from(body: dict, key: str = "definition") -> dict:
    definition = body.get(key)
    if not isinstance(definition, dict):
        raise BadRequest(f"'{key}' must be a workflow definition (a JSON object)")
    return definition


# ---- the definition's JSON Schema --------------------------------------------------------
@require_GET
def workflow_schema(request):
    """GET /schema/workflow.json: the definition's JSON Schema (orchestrator.spec), for editors.

    The one route without a login and without a permission check, on purpose: it holds no data
    (it is the public format, the same text as docs/workflow.schema.json in the repository), and
    editors (VS Code's JSON support, the YAML language server) fetch a `$schema` URL without a
    session or a token. tests/test_permission_matrix.py lists it as open to everyone, and why.
    """
    response = HttpResponse(spec.schema_json(), content_type="application/schema+json")
    response["Cache-Control"] = "public, max-age=300"
    # Editors running in a browser (vscode.dev) fetch it from another origin.
    response["Access-Control-Allow-Origin"] = "*"
    return response


# ---- workflow list -----------------------------------------------------------------------
@login_required
def workflow_list(request):
    user = request.user
    _require(permissions.can_view_any_workflow(user) or permissions.can_create_workflow(user),
             "Your account has no access to any workflow yet")
    query = request.GET.get("q", "").strip()
    show_archived = request.GET.get("archived") == "1"
    workflows = permissions.visible_workflows(user, Workflow.objects.filter(archived=show_archived)
                                              ).select_related("live_version")
    if query:
        workflows = workflows.filter(Q(slug__icontains=query) | Q(name__icontains=query)
                                     | Q(description__icontains=query))
    workflows = list(workflows)
    latest = {}
    for version in WorkflowVersion.objects.filter(workflow__in=workflows).order_by("workflow_id", "-number"):
        latest.setdefault(version.workflow_id, version)
    last_runs = {}
    slugs = [w.slug for w in workflows]
    for run in Run.objects.filter(workflow__in=slugs).order_by("workflow", "-created_at").only(
            "id", "workflow", "status", "created_at"):
        last_runs.setdefault(run.workflow, run)
    rows = []
    for workflow in workflows:
        newest = latest.get(workflow.id)
        rows.append({
            "workflow": workflow,
            "live": workflow.live_version,
            "newest": newest,
            "has_draft": newest is not None and (workflow.live_version_id != newest.pk),
            "last_run": last_runs.get(workflow.slug),
            "can_edit": permissions.can_edit_workflow(user, workflow),
            "can_archive": permissions.can_archive_workflow(user, workflow),
            # The Run button: the live version's input form (its input_schema), for operators.
            "can_run": workflow.live_version_id is not None and not workflow.archived
            and permissions.can_operate_workflow(user, workflow),
            "input_schema": _input_schema_json(workflow.live_version),
            "trigger": trigger_state_context(user, workflow, with_lag=False),
        })
    template = "designer/_workflow_rows.html" if request.htmx and request.htmx.target == "workflow-rows" \
        else "designer/list.html"
    return render(request, template, {"rows": rows, "query": query, "show_archived": show_archived,
                                      "can_add": permissions.can_create_workflow(user)})


def _input_schema_json(version) -> str:
    """A version's input_schema as JSON for a Run button's data attribute ("" when it has none)."""
    schema = (version.definition or {}).get("input_schema") if version is not None else None
    return json.dumps(schema) if isinstance(schema, dict) else ""


@login_required
@require_POST
def workflow_duplicate(request, slug):
    workflow = _visible_workflow(request, slug)
    _require(permissions.can_create_workflow(request.user), "You may not create workflows")
    new_slug = request.POST.get("new_slug", "").strip() or _free_slug(f"{slug}-copy")
    try:
        version = services.duplicate_workflow(workflow, new_slug, request.user)
    except InvalidDefinition as exc:
        messages.error(request, "; ".join(p.message for p in exc.problems))
        return redirect("designer:list")
    messages.success(request, f"Duplicated '{slug}' as '{version.workflow.slug}'")
    return redirect("designer:editor", slug=version.workflow.slug)


def _free_slug(base: str) -> str:
    slug, n = base, 2
    while Workflow.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


@login_required
@require_POST
def workflow_archive(request, slug):
    workflow = _visible_workflow(request, slug)
    try:
        if request.POST.get("restore"):
            _require(permissions.can_edit_workflow(request.user, workflow), f"You may not edit '{slug}'")
            services.unarchive_workflow(workflow, request.user)
            messages.success(request, f"Restored '{slug}' from the archive (unpublished)")
        else:
            _require(permissions.can_archive_workflow(request.user, workflow),
                     f"You may not archive '{slug}'" + (": it is live, and archiving unpublishes it"
                                                        if workflow.live_version_id else ""))
            services.archive_workflow(workflow, request.user)
            messages.success(request, f"Archived '{slug}': its triggers stopped")
    except services.ServiceError as exc:
        messages.error(request, str(exc))
    return redirect("designer:list")


# ---- the trigger: its state, pause and resume --------------------------------------------
trigger_state_context = trigger_status.page_context


@login_required
@require_GET
def trigger_state(request, slug):
    """The trigger's state with its lag from the broker, as an HTML fragment (htmx polls it)."""
    workflow = _visible_workflow(request, slug, Workflow.objects.select_related("live_version"))
    return render(request, "designer/_trigger_state.html", trigger_state_context(request.user, workflow,
                                                                                  with_lag=True))


@login_required
@require_POST
def trigger_control(request, slug, paused: bool):
    """Pause or resume from a page: the fragment again for htmx, else back to where the form was."""
    workflow = _visible_workflow(request, slug, Workflow.objects.select_related("live_version"))
    _require(permissions.can_pause_trigger(request.user, workflow),
             f"Pausing or resuming the trigger of '{slug}' needs the right to operate its runs")
    error = ""
    try:
        workflow = services.set_trigger_paused(workflow, paused, request.user)
    except services.ServiceError as exc:
        error = str(exc)
    trigger_status.forget_cached()
    if request.htmx:
        context = trigger_state_context(request.user, workflow, with_lag=True)
        context["error"] = error
        return render(request, "designer/_trigger_state.html", context, status=200)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"The trigger of '{slug}' is {'paused' if paused else 'running again'}.")
    target = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        target = reverse("designer:list")
    return redirect(target)


# ---- editor page -------------------------------------------------------------------------
def _editor_context(request, workflow: Workflow | None, version: WorkflowVersion | None, definition: dict):
    user = request.user
    can_edit = permissions.can_edit_workflow(user, workflow) if workflow else permissions.can_create_workflow(user)
    return {
        "workflow": workflow,
        "version": version,
        "definition_json": definition,
        "step_types": steps.describe_all(),
        "trigger_types": list(spec.TRIGGER_TYPES),
        "live_number": workflow.live_version.number if workflow and workflow.live_version_id else None,
        "can_edit": can_edit,
        "can_publish": bool(workflow) and permissions.can_publish_workflow(user, workflow),
        "can_test_run": bool(workflow) and permissions.can_test_run(user, workflow),
        "can_run": bool(workflow) and workflow.live_version_id is not None and not workflow.archived
        and permissions.can_operate_workflow(user, workflow),
        # The button exists (hidden until a version is live) for operators of an unarchived workflow.
        "can_run_any": bool(workflow) and not workflow.archived and permissions.can_operate_workflow(user, workflow),
        "live_input_schema": _input_schema_json(workflow.live_version) if workflow else "",
        "trigger": trigger_state_context(user, workflow, with_lag=False) if workflow else None,
        "editor_config": {
            "canEdit": can_edit,
            "slug": workflow.slug if workflow else None,
            "version": version.number if version else None,
            "live": workflow.live_version.number if workflow and workflow.live_version_id else None,
            "urls": {
                "validate": reverse("designer:validate"),
                "panel": reverse("designer:panel"),
                "create": reverse("designer:create"),
                "base": reverse("designer:editor", args=[workflow.slug]) if workflow else None,
                "runWebsocket": "/ws/runs/RUN_ID/",
                "runPage": reverse("monitor:run_detail", args=["RUN_ID"]),
                # A row stored under an older rule may hold a slug no API route takes: no link then.
                "webhookToken": (reverse("api-webhook-token", args=[workflow.slug])
                                 if workflow and spec.is_slug(workflow.slug) else None),
            },
            "staticUrl": static(""),
        },
    }


@login_required
def editor_new(request):
    _require(permissions.can_create_workflow(request.user), "You may not create workflows")
    definition = {"slug": "", "name": "", "trigger": {"type": "manual"}, "steps": [], "edges": [], "layout": {}}
    return render(request, "designer/editor.html", _editor_context(request, None, None, definition))


@login_required
def editor(request, slug):
    workflow = _visible_workflow(request, slug, Workflow.objects.select_related("live_version"))
    try:
        version = services.get_version(workflow, _int_param(request.GET.get("version")))
    except (BadRequest, services.VersionNotFound):
        raise Http404(f"Workflow '{slug}' has no version {request.GET.get('version')!r}")
    return render(request, "designer/editor.html",
                  _editor_context(request, workflow, version, version.definition))


def _int_param(value):
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"'{value}' is not a version number")


# ---- continuous validation and the side panel --------------------------------------------
@json_endpoint
@require_POST
def validate_definition(request):
    """POST {definition} -> {problems: [...]}; drives node badges and the problems list."""
    _require(permissions.can_use_designer_tools(request.user), "You have no access to the designer")
    definition = _definition_from(_json_body(request))
    return JsonResponse({"problems": [p.as_dict() for p in services.validate(definition)]})


@login_required
@require_POST
def panel(request):
    """The side-panel form for one step (or the trigger), validated, as HTML for htmx.

    The browser posts the form fields plus the whole current definition; the answer is the
    re-rendered panel with inline errors, and an `HX-Trigger` event carrying the updated step
    (or trigger) so the page's model and canvas follow the form.
    """
    _require(permissions.can_use_designer_tools(request.user), "You have no access to the designer")
    try:
        definition = _loads(request.POST.get("definition") or "{}", "The definition")
        if not isinstance(definition, dict):
            raise BadRequest("The definition is not an object")
    except BadRequest as exc:
        return HttpResponse(f"The editor sent a broken definition ({exc}); reload the page.", status=400)
    step_id = request.POST.get("step_id") or None
    submitted = request.POST.get("submitted") == "1"
    if step_id is None:
        context, updated = _trigger_panel(definition, request.POST if submitted else None)
        event = {"sluice:trigger-updated": {"trigger": updated}}
    else:
        context, updated = _step_panel(definition, step_id, request.POST if submitted else None)
        if context is None:
            return HttpResponse(f"There is no step '{step_id}' in this workflow any more.", status=404)
        event = {"sluice:step-updated": {"step_id": step_id, "step": updated}}
    slug = definition.get("slug")
    saved = Workflow.objects.filter(slug=slug).first() if isinstance(slug, str) else None
    context["can_edit"] = (permissions.can_edit_workflow(request.user, saved) if saved
                           else permissions.can_create_workflow(request.user))
    if step_id is None:
        context["webhook"] = _webhook_panel(request, definition, updated)
    else:
        # Sub-workflow and foreach steps name a workflow: offer the ones the author can see.
        context["workflow_slugs"] = list(permissions.visible_workflows(request.user, Workflow.objects.filter(
            archived=False)).order_by("slug").values_list("slug", flat=True)[:500])
    response = render(request, "designer/_panel.html", context)
    if submitted:
        response["HX-Trigger"] = json.dumps(event)
    return response


def _webhook_panel(request, definition: dict, trigger: dict) -> dict | None:
    """For a saved workflow with a webhook trigger: how to call it, and whether it has a token."""
    slug = definition.get("slug")
    if (trigger or {}).get("type") != "webhook" or not slug or not Workflow.objects.filter(slug=slug).exists():
        return None
    return {**webhooks.call_details(request, slug, None), "has_token": WebhookEndpoint.objects.filter(slug=slug).exists(),
            "can_rotate": permissions.can_rotate_webhook_token(request.user, slug)}


def _problems_for(definition: dict, step_id: str | None) -> list[Problem]:
    problems = services.validate(definition)
    if step_id is None:
        return [p for p in problems if p.path == "trigger" or p.path.startswith("trigger.")]
    return [p for p in problems if p.step_id == step_id]


def _attach_problems(problems: list[Problem], sections: dict[str, list[forms.Field]], prefix_of) -> list[str]:
    """Put each problem on its field when its path names one; return the rest as panel errors."""
    general = []
    for problem in problems:
        key = prefix_of(problem.path)
        placed = False
        if key:
            section, _, name = key.partition(".")
            for f in sections.get(section, []):
                if f.key == name.split(".")[0].split("[")[0]:
                    if problem.message not in f.errors:
                        f.errors.append(problem.message)
                    placed = True
        if not placed and problem.message not in general:
            general.append(problem.message)
    return general


def _step_panel(definition: dict, step_id: str, post):
    raw_steps = definition.get("steps") or []
    index = next((i for i, s in enumerate(raw_steps) if isinstance(s, dict) and s.get("id") == step_id), None)
    if index is None:
        return None, None
    step = copy.deepcopy(raw_steps[index])
    try:
        step_type = steps.get(step.get("type"))
        schema, conditions = step_type.config_schema, step_type.condition_fields
        type_info = step_type.describe()
    except KeyError:
        step_type, schema, conditions, type_info = None, {"type": "object"}, (), None
    config = step.get("config") or {}
    retry = step.get("retry") or {}
    # Configuration first: it is what an author came to the panel for.
    sections = {
        "config": forms.fields_for(schema, config, "config", conditions),
        "step": forms.fields_for(forms.STEP_FIELDS_SCHEMA, step, "step"),
        "retry": forms.fields_for(forms.RETRY_SCHEMA, retry, "retry"),
    }
    if post is not None:
        fields_step = forms.read_section(sections["step"], post, forms.STEP_FIELDS_SCHEMA,
                                         {k: step[k] for k in ("id", "name", "timeout_seconds") if k in step})
        new_id = fields_step.pop("id", step_id)
        id_field = next(f for f in sections["step"] if f.key == "id")
        taken = {s.get("id") for i, s in enumerate(raw_steps) if i != index and isinstance(s, dict)}
        if new_id != step_id and not spec.is_step_id(new_id):
            id_field.errors.append("A step id starts with a letter or _ and holds only letters, digits and _ "
                                   "(at most 64)")
        elif new_id != step_id and new_id in taken:
            id_field.errors.append(f"Another step is called '{new_id}' already")
        elif new_id != step_id:
            step["id"] = new_id  # the canvas moves its connections along; expressions are not rewritten
        id_field.value = step["id"]
        step.pop("name", None)
        step.pop("timeout_seconds", None)
        step.update(fields_step)
        step["config"] = forms.read_section(sections["config"], post, schema, config)
        new_retry = forms.read_section(sections["retry"], post, forms.RETRY_SCHEMA, retry)
        if new_retry:
            step["retry"] = new_retry
        else:
            step.pop("retry", None)
        definition = {**definition, "steps": [*raw_steps[:index], step, *raw_steps[index + 1:]]}
        if step["id"] != step_id:  # check the renamed step with its connections, as the canvas will have them
            rename = lambda value: step["id"] if value == step_id else value  # noqa: E731
            definition["edges"] = [{**e, "from": rename(e.get("from")), "to": rename(e.get("to"))}
                                   if isinstance(e, dict) else e for e in definition.get("edges") or []]
            layout = dict(definition.get("layout") or {})
            if step_id in layout:
                layout[step["id"]] = layout.pop(step_id)
            definition["layout"] = layout
    prefix = f"steps[{index}]."

    def prefix_of(path: str):
        if not path.startswith(prefix):
            return None
        rest = path[len(prefix):]
        if rest.startswith("config."):
            return rest
        if rest.startswith("retry."):
            return rest
        if rest in ("id", "name", "timeout_seconds"):
            return f"step.{rest}"
        return None

    general = _attach_problems(_problems_for(definition, step["id"]), sections, prefix_of)
    field_errors = any(f.errors for fs in sections.values() for f in fs)
    return {
        "kind": "step", "step": step, "step_id": step["id"], "type_info": type_info,
        "sections": sections, "general_errors": general, "has_errors": bool(general or field_errors),
        "context_names": forms.context_names(definition, step["id"]), "definition_json": json.dumps(definition),
    }, step


def _trigger_panel(definition: dict, post):
    trigger = copy.deepcopy(definition.get("trigger") or {"type": "manual"})
    trigger_type = post.get("trigger.type") if post is not None else trigger.get("type", "manual")
    if trigger_type not in forms.TRIGGER_FIELDS:
        trigger_type = "manual"
    shown = ("type",) + forms.TRIGGER_FIELDS[trigger_type]
    fields = forms.fields_for(forms.TRIGGER_SCHEMA, trigger, "trigger", forms.TRIGGER_CONDITIONS, only=shown)
    # A Kafka trigger may aggregate over time windows: its own block, with a list of aggregates.
    window_form = None
    if trigger_type == "kafka":
        window_form, window = window_forms.build(trigger, post)
    if post is not None:
        values = forms.read_section(fields, post, forms.TRIGGER_SCHEMA,
                                    {k: v for k, v in trigger.items() if k in shown})
        extra = {k: v for k, v in trigger.items() if k not in forms.TRIGGER_SCHEMA["properties"] and k != "window"}
        trigger = {**extra, **values}
        if window_form is not None and window is not None:
            trigger["window"] = window
        definition = {**definition, "trigger": trigger}
    sections = {"trigger": fields}

    def prefix_of(path: str):
        return path if path.startswith("trigger.") else None

    problems = _problems_for(definition, None)
    if window_form is not None:
        problems = window_forms.attach(problems, window_form)
    general = _attach_problems(problems, sections, prefix_of)
    return {
        "kind": "trigger", "trigger": trigger, "sections": sections, "general_errors": general,
        "window": window_form,
        "has_errors": bool(general or any(f.errors for f in fields)),
        "context_names": forms.context_names(definition, None), "definition_json": json.dumps(definition),
    }, trigger


# ---- save, publish, versions, diff -------------------------------------------------------
@json_endpoint
@require_POST
def create(request):
    """POST {definition, message} -> a new workflow with the definition as version 1."""
    _require(permissions.can_create_workflow(request.user), "You may not create workflows")
    body = _json_body(request)
    version = services.create_workflow(_definition_from(body), request.user, message=str(body.get("message") or ""))
    return JsonResponse({"slug": version.workflow.slug, "version": version.number,
                         "url": reverse("designer:editor", args=[version.workflow.slug])}, status=201)


@json_endpoint
@require_POST
def save(request, slug):
    """POST {definition, message, base_version} -> the new version; 409 if someone saved since."""
    workflow = _visible_workflow(request, slug)
    _require(permissions.can_edit_workflow(request.user, workflow), f"You may not edit '{slug}'")
    body = _json_body(request)
    base = body.get("base_version")
    if base is not None and not isinstance(base, int):
        raise BadRequest("'base_version' must be a version number")
    version = services.save_version(workflow, _definition_from(body), request.user,
                                    message=str(body.get("message") or "")[:500], base_version=base)
    return JsonResponse({"version": version.number, "message": version.message}, status=201)


@json_endpoint
@require_POST
def publish(request, slug):
    workflow = _visible_workflow(request, slug)
    _require(permissions.can_publish_workflow(request.user, workflow), f"You may not publish '{slug}'")
    body = _json_body(request)
    number = body.get("version")
    if not isinstance(number, int):
        raise BadRequest("'version' must be the number of the version to publish")
    version = services.publish(workflow, number, request.user)
    return JsonResponse({"live": version.number, **webhooks.shown_on_publish(request, version)})


@json_endpoint
@require_POST
def restore(request, slug, number):
    workflow = _visible_workflow(request, slug)
    _require(permissions.can_edit_workflow(request.user, workflow), f"You may not edit '{slug}'")
    version = services.restore_version(workflow, number, request.user)
    return JsonResponse({"version": version.number, "definition": version.definition})


@login_required
@require_GET
def versions(request, slug):
    workflow = _visible_workflow(request, slug)
    rows = [(v, services.version_status(v, workflow))
            for v in workflow.versions.select_related("created_by", "published_by").order_by("-number")]
    return render(request, "designer/_versions.html", {
        "workflow": workflow, "rows": rows, "can_edit": permissions.can_edit_workflow(request.user, workflow),
        "can_publish": permissions.can_publish_workflow(request.user, workflow)})


@json_endpoint
@require_GET
def version_json(request, slug, number):
    workflow = _visible_workflow(request, slug)
    version = services.get_version(workflow, number)
    return JsonResponse({"version": version.number, "definition": version.definition,
                         "status": services.version_status(version, workflow)})


@login_required
@require_GET
def diff(request, slug):
    workflow = _visible_workflow(request, slug)
    try:
        a, b = _int_param(request.GET.get("a")), _int_param(request.GET.get("b"))
        old, new = services.get_version(workflow, a), services.get_version(workflow, b)
    except (BadRequest, services.VersionNotFound) as exc:
        return HttpResponse(f'<p class="error">{exc}</p>', status=400)
    return render(request, "designer/_diff.html", {"old": old, "new": new,
                                                   "diff": diff_definitions(old.definition, new.definition)})


# ---- test runs ---------------------------------------------------------------------------
@json_endpoint
@require_POST
def test_run(request, slug):
    """POST {version, input, record?} -> {run_id}: run a saved version (draft or not) once.

    It executes unpublished work, so it takes both rights: edit the workflow and operate its runs.
    """
    workflow = _visible_workflow(request, slug)
    _require(permissions.can_test_run(request.user, workflow),
             f"A test run of '{slug}' needs the rights to edit it and to operate its runs")
    body = _json_body(request)
    number = body.get("version")
    if not isinstance(number, int):
        raise BadRequest("'version' must be the number of a saved version (save before a test run)")
    run_id = services.start_test_run(workflow, number, body.get("input", {}), request.user, record=body.get("record"))
    return JsonResponse({"run_id": run_id, "version": number}, status=201)


@json_endpoint
@require_GET
def sample_record(request, slug):
    """The newest record on the workflow's trigger topic, to use as test input.

    Only the topic a saved version of this workflow is triggered by (a user may not read any
    topic through the designer, least of all Sluice's own), and only for users who may edit it.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from orchestrator.runtime.kafka import consumer_config

    workflow = _visible_workflow(request, slug)
    _require(permissions.can_edit_workflow(request.user, workflow),
             f"Reading sample records needs the right to edit '{slug}'")
    trigger_topics = _trigger_topics(workflow)
    topic = (request.GET.get("topic") or "").strip() or next(iter(trigger_topics), "")
    if not topic:
        raise BadRequest(f"'{slug}' has no saved version with a Kafka trigger: set its topic and save first")
    if topic not in trigger_topics:
        raise PermissionDenied(f"Sample records come only from the trigger topic of '{slug}' "
                               f"({', '.join(sorted(trigger_topics)) or 'none saved'}); save the version first")
    consumer = Consumer(consumer_config(f"sluice-designer-sample-{request.user.pk}",
                                        **{"isolation.level": "read_committed"}))
    try:
        # All topics' metadata, not list_topics(topic): asking for one topic by name makes a
        # broker with auto-creation on create it, and a typo must not create topics.
        metadata = consumer.list_topics(timeout=5).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return error_response(404, f"Topic '{topic}' does not exist", "not_found")
        newest, newest_ts = None, -1
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, high - 1)])
            message = consumer.poll(3)
            if message is not None and message.error() is None and message.timestamp()[1] > newest_ts:
                newest, newest_ts = message, message.timestamp()[1]
        if newest is None:
            return error_response(404, f"Topic '{topic}' has no records yet", "not_found")
        raw = newest.value() or b""
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw.decode("utf-8", "replace")
        return JsonResponse({"value": value, "record": {
            "topic": topic, "partition": newest.partition(), "offset": newest.offset(),
            "key": (newest.key() or b"").decode("utf-8", "replace"), "timestamp": newest_ts}})
    except KafkaException as exc:
        return error_response(503, f"Could not read '{topic}': {exc}", "kafka_unavailable")
    finally:
        consumer.close()


def _trigger_topics(workflow: Workflow) -> list[str]:
    """Kafka topics the latest and the live version are triggered by (newest first), never Sluice's own."""
    topics = []
    for version in (workflow.latest_version, workflow.live_version):
        trigger = ((version.definition if version else None) or {}).get("trigger") or {}
        topic = trigger.get("topic") if trigger.get("type") == "kafka" else None
        if spec.topic_problem(topic, settings.SLUICE_TOPIC_PREFIX) is None and topic not in topics:
            topics.append(topic)
    return topics
