"""The designer's pages: the workflow list and the editor, plus the small JSON endpoints the
editor's JavaScript calls (validate, side panel, save, publish, versions, diff, test run).

Every rule about definitions (validation before storing, stale-save refusal, publish order)
lives in designer/services.py; these views only translate between HTTP and those calls, and
answer bad input with a 4xx carrying every problem (field path and step id), never a 500.
"""

from __future__ import annotations

import copy
import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from monitor.models import Run
from orchestrator import spec, steps, webhooks
from orchestrator.models import WebhookEndpoint
from orchestrator.spec import InvalidDefinition, Problem

from . import forms, services
from .diff import diff_definitions
from .models import Workflow, WorkflowVersion

VIEW = "designer.view_workflow"
EDIT = "designer.change_workflow"
ADD = "designer.add_workflow"
PUBLISH = "designer.publish_workflow"


def _require(request, perm: str) -> None:
    if not request.user.has_perm(perm):
        raise PermissionDenied(f"You need the '{perm}' permission")


def _json_body(request) -> dict:
    """The request's JSON object, or a 400 naming what is wrong with it."""
    try:
        body = json.loads(request.body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return body


class BadRequest(Exception):
    pass


def _problems_response(problems: list[Problem], status: int = 400, message: str = "") -> JsonResponse:
    return JsonResponse({"error": message or "The definition has problems",
                         "problems": [p.as_dict() for p in problems]}, status=status)


def json_endpoint(view):
    """Turn the refusals of services and of request parsing into JSON errors (never a 500)."""

    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except BadRequest as exc:
            return JsonResponse({"error": str(exc), "problems": []}, status=400)
        except PermissionDenied as exc:
            return JsonResponse({"error": str(exc) or "You do not have permission to do this"}, status=403)
        except InvalidDefinition as exc:
            return _problems_response(exc.problems)
        except services.VersionConflict as exc:
            return JsonResponse({"error": str(exc), "code": "conflict", "latest_version": exc.latest_number,
                                 "saved_by": exc.saved_by}, status=409)
        except services.VersionNotFound as exc:
            return JsonResponse({"error": str(exc)}, status=404)
        except (services.PublishFailed, services.StartFailed) as exc:
            return JsonResponse({"error": str(exc)}, status=503)
        except services.ServiceError as exc:
            return JsonResponse({"error": str(exc)}, status=400)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return login_required(wrapped)


def _definition_from(body: dict, key: str = "definition") -> dict:
    definition = body.get(key)
    if not isinstance(definition, dict):
        raise BadRequest(f"'{key}' must be a workflow definition (a JSON object)")
    return definition


# ---- workflow list -----------------------------------------------------------------------
@login_required
@permission_required(VIEW, raise_exception=True)
def workflow_list(request):
    query = request.GET.get("q", "").strip()
    show_archived = request.GET.get("archived") == "1"
    workflows = Workflow.objects.filter(archived=show_archived).select_related("live_version")
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
        })
    template = "designer/_workflow_rows.html" if request.htmx and request.htmx.target == "workflow-rows" \
        else "designer/list.html"
    return render(request, template, {"rows": rows, "query": query, "show_archived": show_archived,
                                      "can_add": request.user.has_perm(ADD),
                                      "can_edit": request.user.has_perm(EDIT)})


@login_required
@require_POST
def workflow_duplicate(request, slug):
    _require(request, ADD)
    workflow = get_object_or_404(Workflow, slug=slug)
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
    _require(request, EDIT)
    workflow = get_object_or_404(Workflow, slug=slug)
    try:
        if request.POST.get("restore"):
            services.unarchive_workflow(workflow, request.user)
            messages.success(request, f"Restored '{slug}' from the archive (unpublished)")
        else:
            services.archive_workflow(workflow, request.user)
            messages.success(request, f"Archived '{slug}': its triggers stopped")
    except services.ServiceError as exc:
        messages.error(request, str(exc))
    return redirect("designer:list")


# ---- editor page -------------------------------------------------------------------------
def _editor_context(request, workflow: Workflow | None, version: WorkflowVersion | None, definition: dict):
    return {
        "workflow": workflow,
        "version": version,
        "definition_json": definition,
        "step_types": steps.describe_all(),
        "trigger_types": list(spec.TRIGGER_TYPES),
        "live_number": workflow.live_version.number if workflow and workflow.live_version_id else None,
        "can_edit": request.user.has_perm(EDIT) if workflow else request.user.has_perm(ADD),
        "can_publish": request.user.has_perm(PUBLISH),
        "editor_config": {
            "canEdit": request.user.has_perm(EDIT) if workflow else request.user.has_perm(ADD),
            "slug": workflow.slug if workflow else None,
            "version": version.number if version else None,
            "live": workflow.live_version.number if workflow and workflow.live_version_id else None,
            "urls": {
                "validate": reverse("designer:validate"),
                "panel": reverse("designer:panel"),
                "create": reverse("designer:create"),
                "base": reverse("designer:editor", args=[workflow.slug]) if workflow else None,
                "runStatus": reverse("designer:run_status", args=["RUN_ID"]),
                "runWebsocket": "/ws/runs/RUN_ID/",
                "runPage": reverse("monitor:run_detail", args=["RUN_ID"]),
                "webhookToken": reverse("api-webhook-token", args=[workflow.slug]) if workflow else None,
            },
            "staticUrl": static(""),
        },
    }


@login_required
@permission_required(ADD, raise_exception=True)
def editor_new(request):
    definition = {"slug": "", "name": "", "trigger": {"type": "manual"}, "steps": [], "edges": [], "layout": {}}
    return render(request, "designer/editor.html", _editor_context(request, None, None, definition))


@login_required
@permission_required(VIEW, raise_exception=True)
def editor(request, slug):
    workflow = get_object_or_404(Workflow.objects.select_related("live_version"), slug=slug)
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
    _require(request, VIEW)
    definition = _definition_from(_json_body(request))
    return JsonResponse({"problems": [p.as_dict() for p in spec.validate(definition)]})


@login_required
@require_POST
def panel(request):
    """The side-panel form for one step (or the trigger), validated, as HTML for htmx.

    The browser posts the form fields plus the whole current definition; the answer is the
    re-rendered panel with inline errors, and an `HX-Trigger` event carrying the updated step
    (or trigger) so the page's model and canvas follow the form.
    """
    _require(request, VIEW)
    try:
        definition = json.loads(request.POST.get("definition") or "{}")
        if not isinstance(definition, dict):
            raise ValueError("not an object")
    except ValueError:
        return HttpResponse("The editor sent a broken definition; reload the page.", status=400)
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
    context["can_edit"] = request.user.has_perm(EDIT) or request.user.has_perm(ADD)
    if step_id is None:
        context["webhook"] = _webhook_panel(request, definition, updated)
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
            "can_rotate": request.user.has_perm(PUBLISH)}


def _problems_for(definition: dict, step_id: str | None) -> list[Problem]:
    problems = spec.validate(definition)
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
        if new_id != step_id and not spec.STEP_ID_PATTERN.match(new_id):
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
    if post is not None:
        values = forms.read_section(fields, post, forms.TRIGGER_SCHEMA,
                                    {k: v for k, v in trigger.items() if k in shown})
        extra = {k: v for k, v in trigger.items() if k not in forms.TRIGGER_SCHEMA["properties"]}
        trigger = {**extra, **values}
        definition = {**definition, "trigger": trigger}
    sections = {"trigger": fields}

    def prefix_of(path: str):
        return path if path.startswith("trigger.") else None

    general = _attach_problems(_problems_for(definition, None), sections, prefix_of)
    return {
        "kind": "trigger", "trigger": trigger, "sections": sections, "general_errors": general,
        "has_errors": bool(general or any(f.errors for f in fields)),
        "context_names": forms.context_names(definition, None), "definition_json": json.dumps(definition),
    }, trigger


# ---- save, publish, versions, diff -------------------------------------------------------
@json_endpoint
@require_POST
def create(request):
    """POST {definition, message} -> a new workflow with the definition as version 1."""
    _require(request, ADD)
    body = _json_body(request)
    version = services.create_workflow(_definition_from(body), request.user, message=str(body.get("message") or ""))
    return JsonResponse({"slug": version.workflow.slug, "version": version.number,
                         "url": reverse("designer:editor", args=[version.workflow.slug])}, status=201)


@json_endpoint
@require_POST
def save(request, slug):
    """POST {definition, message, base_version} -> the new version; 409 if someone saved since."""
    _require(request, EDIT)
    workflow = get_object_or_404(Workflow, slug=slug)
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
    _require(request, PUBLISH)
    workflow = get_object_or_404(Workflow, slug=slug)
    body = _json_body(request)
    number = body.get("version")
    if not isinstance(number, int):
        raise BadRequest("'version' must be the number of the version to publish")
    version = services.publish(workflow, number, request.user)
    return JsonResponse({"live": version.number, **webhooks.shown_on_publish(request, version)})


@json_endpoint
@require_POST
def restore(request, slug, number):
    _require(request, EDIT)
    workflow = get_object_or_404(Workflow, slug=slug)
    version = services.restore_version(workflow, number, request.user)
    return JsonResponse({"version": version.number, "definition": version.definition})


@login_required
@require_GET
def versions(request, slug):
    _require(request, VIEW)
    workflow = get_object_or_404(Workflow, slug=slug)
    rows = [(v, services.version_status(v, workflow))
            for v in workflow.versions.select_related("created_by", "published_by").order_by("-number")]
    return render(request, "designer/_versions.html", {"workflow": workflow, "rows": rows,
                                                       "can_edit": request.user.has_perm(EDIT),
                                                       "can_publish": request.user.has_perm(PUBLISH)})


@json_endpoint
@require_GET
def version_json(request, slug, number):
    _require(request, VIEW)
    workflow = get_object_or_404(Workflow, slug=slug)
    version = services.get_version(workflow, number)
    return JsonResponse({"version": version.number, "definition": version.definition,
                         "status": services.version_status(version, workflow)})


@login_required
@require_GET
def diff(request, slug):
    _require(request, VIEW)
    workflow = get_object_or_404(Workflow, slug=slug)
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
    """POST {version, input, record?} -> {run_id}: run a saved version (draft or not) once."""
    _require(request, EDIT)
    workflow = get_object_or_404(Workflow, slug=slug)
    body = _json_body(request)
    number = body.get("version")
    if not isinstance(number, int):
        raise BadRequest("'version' must be the number of a saved version (save before a test run)")
    run_id = services.start_test_run(workflow, number, body.get("input", {}), request.user, record=body.get("record"))
    return JsonResponse({"run_id": run_id, "version": number}, status=201)


@json_endpoint
@require_GET
def sample_record(request, slug):
    """The newest record on the workflow's trigger topic, to use as test input."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from orchestrator.runtime.kafka import consumer_config

    _require(request, VIEW)
    topic = (request.GET.get("topic") or "").strip()
    if not topic:
        raise BadRequest("Give the trigger topic to read a sample record from")
    consumer = Consumer(consumer_config(f"sluice-designer-sample-{request.user.pk}",
                                        **{"isolation.level": "read_committed"}))
    try:
        # All topics' metadata, not list_topics(topic): asking for one topic by name makes a
        # broker with auto-creation on create it, and a typo must not create topics.
        metadata = consumer.list_topics(timeout=5).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return JsonResponse({"error": f"Topic '{topic}' does not exist"}, status=404)
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
            return JsonResponse({"error": f"Topic '{topic}' has no records yet"}, status=404)
        raw = newest.value() or b""
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw.decode("utf-8", "replace")
        return JsonResponse({"value": value, "record": {
            "topic": topic, "partition": newest.partition(), "offset": newest.offset(),
            "key": (newest.key() or b"").decode("utf-8", "replace"), "timestamp": newest_ts}})
    except KafkaException as exc:
        return JsonResponse({"error": f"Could not read '{topic}': {exc}"}, status=503)
    finally:
        consumer.close()


@login_required
@require_GET
def run_status(request, run_id):
    """A run's status and each step's, for colouring the canvas during a test run."""
    _require(request, VIEW)
    run = Run.objects.filter(id=run_id).first()
    if run is None:
        return JsonResponse({"error": f"No run '{run_id}'"}, status=404)
    return JsonResponse({
        "run_id": run.id, "status": run.status, "error": run.error, "output": run.output,
        "steps": {s.step_id: {"status": s.status, "output": s.output, "error": s.error,
                              "attempts": len(s.attempts or [])} for s in run.steps.all()},
    })
