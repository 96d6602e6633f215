"""The role x route matrix: every route of the URL resolver, for every kind of user.

The routes are collected from the resolver itself (HTTP and websocket), so a new endpoint
without an entry in ROUTES fails `test_every_route_is_in_the_matrix`. Each route names the
users who may use it; every other user must be refused (401, 403, 404, a redirect to the
login page, a websocket closed with 44xx), and nobody may ever get a 500. The matrix is
printed in the test output and written to tests/artifacts/permission-matrix.txt.

Users: anonymous; signed in without rights; the four roles (groups made by a migration);
a user whose grants (view, edit, publish, operate) are all on ANOTHER workflow; a superuser.
The routes act on workflow `alpha`, its run and its dead letter.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Producer
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from designer import services
from designer.models import Workflow
from monitor.models import DeadLetter, Run, WorkflowAccess
from triggers.webhooks import issue_token

ARTIFACTS = Path(__file__).parent / "artifacts"

USERS = ("anonymous", "nobody", "viewer", "author", "publisher", "operator", "scoped", "superuser")
SIGNED_IN = frozenset(USERS) - {"anonymous"}
SEES_SOME = SIGNED_IN - {"nobody"}  # scoped sees the other workflow
VIEW = frozenset({"viewer", "author", "publisher", "operator", "superuser"})
CREATE = EDIT = frozenset({"author", "superuser"})
PUBLISH = frozenset({"publisher", "superuser"})
OPERATE = frozenset({"operator", "superuser"})
EDIT_AND_OPERATE = EDIT_AND_PUBLISH = frozenset({"superuser"})
DEAD_LETTER_LIST = frozenset({"operator", "scoped", "superuser"})  # scoped operates the other workflow
AUDIT = frozenset({"operator", "superuser"})
NONE = frozenset()
STAFF = frozenset({"superuser"})


def definition(slug, topic=None):
    trigger = {"type": "kafka", "topic": topic} if topic else {"type": "manual"}
    return {"slug": slug, "name": slug.title(), "trigger": trigger,
            "steps": [{"id": "hello", "type": "transform", "config": {"output": {"n": "{{ trigger.n }}"}}}],
            "edges": []}


@dataclass
class Route:
    name: str  # as the resolver names it ("designer:editor", "api-run", "ws:runs")
    method: str
    path: str
    allowed: frozenset
    body: object = None
    form: bool = False  # a browser form post (pages), not JSON
    # Routes whose answer to an allowed user is a refusal by design (a catch-all 404, a webhook
    # that takes a token, not a session).
    expect_for_allowed: set = field(default_factory=set)


@pytest.fixture
def world(db, roles, kafka, settings):
    """Workflow alpha (v1 live, v2 draft, Kafka-triggered), its failed run and dead letter; users."""
    admin = User.objects.create_superuser("superuser", password="pw-" + uuid.uuid4().hex)
    topic = f"alpha-in-{uuid.uuid4().hex[:6]}"
    alpha = services.create_workflow(definition("alpha", topic), admin).workflow
    services.publish(alpha, 1, admin)
    services.save_version(alpha, {**definition("alpha", topic), "name": "Alpha 2"}, admin)
    other = services.create_workflow(definition("other"), admin).workflow
    issue_token("alpha")
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS})
    producer.produce(topic, value=json.dumps({"n": 1}))
    producer.flush(10)
    Run.objects.create(id="run-alpha", workflow="alpha", version=1, status="failed", created_at=timezone.now())
    letter = DeadLetter.objects.create(
        topic=kafka.dlq, partition=0, offset=1, key="run-x", stage="engine", error="workflow alpha@9 unknown",
        value=json.dumps({"type": "start", "run_id": "run-x", "workflow": "alpha", "version": 1, "ts": 1.0}),
        source_topic=kafka.runs, source_partition=0, source_offset=5, workflow="alpha", failed_at=timezone.now())
    users = {"superuser": admin}
    for name in ("nobody", "viewer", "author", "publisher", "operator", "scoped"):
        users[name] = User.objects.create_user(name, password="pw-" + uuid.uuid4().hex)
    for role in ("Viewer", "Author", "Publisher", "Operator"):
        users[role.lower()].groups.add(Group.objects.get(name=role))
    for right in WorkflowAccess.Permission.values:
        WorkflowAccess.objects.create(workflow=other, user=users["scoped"], permission=right)
    return {"users": users, "letter": letter, "alpha": alpha, "other": other, "topic": topic}


def routes(world) -> list[Route]:
    alpha_v2 = {**definition("alpha", world["topic"]), "name": "Alpha 3"}
    pk = world["letter"].pk
    run_start = {"type": "start", "run_id": "r", "workflow": "alpha", "version": 1, "ts": 1.0}
    return [
        # ---- designer pages and endpoints ----
        Route("designer:list", "GET", "/", SEES_SOME),
        Route("designer:new", "GET", "/workflows/new/", CREATE),
        Route("designer:duplicate", "POST", "/workflows/alpha/duplicate/", CREATE, {"new_slug": "alpha-copy"},
              form=True),
        Route("designer:archive", "POST", "/workflows/alpha/archive/", EDIT_AND_PUBLISH, {}, form=True),
        Route("designer:validate", "POST", "/designer/-/validate/", SEES_SOME, {"definition": alpha_v2}),
        Route("designer:panel", "POST", "/designer/-/panel/", SEES_SOME,
              {"definition": json.dumps(alpha_v2), "step_id": "hello"}, form=True),
        Route("designer:create", "POST", "/designer/-/create/", CREATE, {"definition": definition("fresh")}),
        Route("designer:editor", "GET", "/designer/alpha/", VIEW),
        Route("designer:save", "POST", "/designer/alpha/save/", EDIT, {"definition": alpha_v2, "base_version": 2}),
        Route("designer:publish", "POST", "/designer/alpha/publish/", PUBLISH, {"version": 2}),
        Route("designer:versions", "GET", "/designer/alpha/versions/", VIEW),
        Route("designer:version", "GET", "/designer/alpha/versions/1/", VIEW),
        Route("designer:restore", "POST", "/designer/alpha/versions/1/restore/", EDIT, {}),
        Route("designer:diff", "GET", "/designer/alpha/diff/?a=1&b=2", VIEW),
        Route("designer:test_run", "POST", "/designer/alpha/test-run/", EDIT_AND_OPERATE, {"version": 2, "input": {}}),
        Route("designer:sample_record", "GET", "/designer/alpha/sample-record/", EDIT),
        Route("designer:trigger_state", "GET", "/designer/alpha/trigger/", VIEW),
        Route("designer:trigger_pause", "POST", "/designer/alpha/trigger/pause/", OPERATE, {}, form=True),
        Route("designer:trigger_resume", "POST", "/designer/alpha/trigger/resume/", OPERATE, {}, form=True),
        Route("designer:alerts", "GET", "/designer/alpha/alerts/", VIEW),
        Route("designer:alerts", "POST", "/designer/alpha/alerts/", PUBLISH, {"on_failure": "", "emails": ""}, form=True),
        # ---- monitor pages ----
        Route("monitor:dashboard", "GET", "/monitor/", SEES_SOME),
        Route("monitor:dashboard_data", "GET", "/monitor/dashboard/data/", SEES_SOME),
        Route("monitor:run_list", "GET", "/monitor/runs/", SEES_SOME),
        Route("monitor:run_detail", "GET", "/monitor/runs/run-alpha/", VIEW),
        Route("monitor:run_cancel", "POST", "/monitor/runs/run-alpha/cancel/", OPERATE, {"reason": "x"}, form=True),
        Route("monitor:run_retry", "POST", "/monitor/runs/run-alpha/retry/", OPERATE, {}, form=True),
        Route("monitor:run_rerun", "POST", "/monitor/runs/run-alpha/rerun/", OPERATE, {"input": "{}"}, form=True),
        Route("monitor:run_signal", "POST", "/monitor/runs/run-alpha/signal/", OPERATE, {"name": "go"}, form=True),
        Route("monitor:dead_letters", "GET", "/monitor/dead-letters/", DEAD_LETTER_LIST),
        Route("monitor:dead_letters_replay_all", "POST", "/monitor/dead-letters/replay-all/", DEAD_LETTER_LIST, {},
              form=True),
        Route("monitor:dead_letter_detail", "GET", f"/monitor/dead-letters/{pk}/", OPERATE),
        Route("monitor:dead_letter_replay", "POST", f"/monitor/dead-letters/{pk}/replay/", OPERATE, {}, form=True),
        Route("monitor:dead_letter_discard", "POST", f"/monitor/dead-letters/{pk}/discard/", OPERATE, {}, form=True),
        Route("monitor:audit", "GET", "/monitor/audit/", AUDIT),
        # ---- REST API ----
        Route("api-workflows", "GET", "/api/workflows/", SIGNED_IN),
        Route("api-workflows", "POST", "/api/workflows/", CREATE, definition("fresh")),
        Route("api-workflow", "GET", "/api/workflows/alpha/", VIEW),
        Route("api-workflow", "PUT", "/api/workflows/alpha/", EDIT, alpha_v2),
        Route("api-versions", "GET", "/api/workflows/alpha/versions/", VIEW),
        Route("api-version", "GET", "/api/workflows/alpha/versions/1/", VIEW),
        Route("api-version-restore", "POST", "/api/workflows/alpha/versions/1/restore/", EDIT, {}),
        Route("api-duplicate", "POST", "/api/workflows/alpha/duplicate/", CREATE, {"slug": "alpha-copy"}),
        Route("api-archive", "POST", "/api/workflows/alpha/archive/", EDIT_AND_PUBLISH, {}),
        Route("api-unarchive", "POST", "/api/workflows/alpha/unarchive/", EDIT, {}),
        Route("api-publish", "POST", "/api/workflows/alpha/publish/", PUBLISH, {"version": 2}),
        Route("api-start-run", "POST", "/api/workflows/alpha/runs/", OPERATE, {"input": {"n": 1}}),
        Route("api-trigger", "GET", "/api/workflows/alpha/trigger/", VIEW),
        Route("api-trigger-pause", "POST", "/api/workflows/alpha/trigger/pause/", OPERATE, {}),
        Route("api-trigger-resume", "POST", "/api/workflows/alpha/trigger/resume/", OPERATE, {}),
        Route("api-step-types", "GET", "/api/step-types/", SIGNED_IN),
        Route("api-runs", "GET", "/api/runs/", SIGNED_IN),
        Route("api-run", "GET", "/api/runs/run-alpha/", VIEW),
        Route("api-run-cancel", "POST", "/api/runs/run-alpha/cancel/", OPERATE, {}),
        Route("api-run-retry", "POST", "/api/runs/run-alpha/retry/", OPERATE, {}),
        Route("api-run-signal", "POST", "/api/runs/run-alpha/signal/", OPERATE, {"name": "go"}),
        Route("api-dead-letters", "GET", "/api/dead-letters/", DEAD_LETTER_LIST),
        Route("api-dead-letter", "GET", f"/api/dead-letters/{pk}/", OPERATE),
        Route("api-dead-letter-replay", "POST", f"/api/dead-letters/{pk}/replay/", OPERATE,
              {"value": {**run_start, "run_id": "run-x"}}),
        Route("api-dead-letter-discard", "POST", f"/api/dead-letters/{pk}/discard/", OPERATE, {}),
        Route("api-schema", "GET", "/api/schema/", SIGNED_IN),
        Route("api-docs", "GET", "/api/docs/", SIGNED_IN),
        Route("api-not-found", "GET", "/api/nothing-here/", SIGNED_IN, expect_for_allowed={404}),
        # ---- webhooks: the token is the permission, a session is not ----
        Route("hooks:receive", "POST", "/hooks/alpha/", NONE, {"n": 1}),
        Route("hooks:rotate-token", "POST", "/hooks/alpha/token/", PUBLISH, {}),
        Route("api-webhook-token", "POST", "/api/workflows/alpha/webhook-token/", PUBLISH, {}),
        # ---- operations: probes carry no session; /metrics wants a token or an allowed network ----
        Route("healthz", "GET", "/healthz", frozenset(USERS)),
        Route("readyz", "GET", "/readyz", frozenset(USERS)),
        Route("metrics", "GET", "/metrics", NONE),
        # ---- the definition's JSON Schema: open to everyone, on purpose. It holds no data (the
        # public format, the text of docs/workflow.schema.json in the repository), and editors
        # (VS Code, the YAML language server) fetch a `$schema` URL without a session ----
        Route("designer:workflow_schema", "GET", "/schema/workflow.json", frozenset(USERS)),
        # ---- admin: staff only (Django's admin checks model permissions on top) ----
        Route("admin:index", "GET", "/admin/", STAFF),
        Route("admin:designer_workflow_changelist", "GET", "/admin/designer/workflow/", STAFF),
        Route("admin:monitor_run_changelist", "GET", "/admin/monitor/run/", STAFF),
        Route("admin:monitor_deadletter_changelist", "GET", "/admin/monitor/deadletter/", STAFF),
        Route("admin:monitor_workflowaccess_changelist", "GET", "/admin/monitor/workflowaccess/", STAFF),
    ]


# Routes outside the matrix, with the reason.
EXEMPT_PREFIXES = {
    "accounts/": "sign-in, sign-out and password pages are for everyone by nature",
    "admin/": "Django's admin: staff only, checked through representative pages above",
}


def resolver_routes() -> set[str]:
    """(name) of every named HTTP route, outside the exempt prefixes."""
    names = set()

    def walk(patterns, prefix="", namespace=""):
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                ns = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
                walk(pattern.url_patterns, route, ns)
            elif isinstance(pattern, URLPattern):
                if any(route.lstrip("^").startswith(exempt) for exempt in EXEMPT_PREFIXES):
                    continue
                assert pattern.name, f"route {route} has no name: name it and add it to the matrix"
                names.add(namespace + pattern.name)

    walk(get_resolver().url_patterns)
    return names


def test_every_route_is_in_the_matrix(world):
    declared = {route.name for route in routes(world) if not route.name.startswith("admin:")}
    missing = resolver_routes() - declared
    assert not missing, f"routes with no row in the permission matrix: {sorted(missing)}"
    assert not declared - resolver_routes(), f"matrix rows for routes that do not exist: {declared - resolver_routes()}"


REFUSED = {401, 403, 404}
LOGIN_PAGES = ("/accounts/login/", "/admin/login/")


def refused(response) -> bool:
    if response.status_code in REFUSED:
        return True
    return response.status_code == 302 and response["Location"].startswith(LOGIN_PAGES)


def call(client: Client, route: Route):
    if route.method == "GET":
        return client.get(route.path)
    if route.form:
        return client.post(route.path, route.body or {})
    return client.generic(route.method, route.path, json.dumps(route.body if route.body is not None else {}),
                          content_type="application/json")


def test_role_by_route_matrix(world, capsys):
    clients = {"anonymous": Client()}
    for name, user in world["users"].items():
        clients[name] = Client()
        clients[name].force_login(user)
    rows, problems, cells = [], [], 0
    for route in routes(world):
        row = []
        for user in USERS:
            # Every cell starts from the same database: what one user did is undone for the next.
            with transaction.atomic():
                response = call(clients[user], route)
                transaction.set_rollback(True)
            cells += 1
            status = response.status_code
            allowed = user in route.allowed
            if status >= 500:
                problems.append(f"{route.method} {route.path} as {user}: {status} {response.content[:300]!r}")
            elif allowed and route.expect_for_allowed:
                if status not in route.expect_for_allowed:
                    problems.append(f"{route.method} {route.path} as {user}: {status}, expected "
                                    f"{route.expect_for_allowed}")
            elif allowed == refused(response):
                problems.append(f"{route.method} {route.path} as {user}: {status} "
                                f"({'refused' if allowed else 'allowed'}, should be {'allowed' if allowed else 'refused'})"
                                f" {response.content[:200]!r}")
            row.append(("✓" if allowed else "✗") + str(status))
        rows.append((f"{route.method} {route.path}", row))
    table = format_matrix(rows)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "permission-matrix.txt").write_text(table)
    with capsys.disabled():
        print(f"\n{table}\n{cells} cells, {len(rows)} routes x {len(USERS)} users "
              f"(✓ may use it, ✗ must be refused; the number is the status answered)")
    assert not problems, "\n".join(problems)


def format_matrix(rows) -> str:
    width = max(len(label) for label, _ in rows)
    header = f"{'route':<{width}}  " + " ".join(f"{user[:9]:>9}" for user in USERS)
    lines = [header, "-" * len(header)]
    lines += [f"{label:<{width}}  " + " ".join(f"{cell:>9}" for cell in row) for label, row in rows]
    return "\n".join(lines)


def test_roles_match_the_groups_the_migration_made(db):
    from monitor.permissions import ROLES

    for name, perms in ROLES.items():
        group = Group.objects.get(name=name)
        held = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}
        assert held == set(perms), name


def test_grants_on_one_workflow_reach_that_workflow_only(world):
    """The scoped user (every grant on `other`, none on `alpha`) works on `other` through every door."""
    client = Client()
    client.force_login(world["users"]["scoped"])
    assert client.get("/designer/other/").status_code == 200
    assert client.get("/designer/other/").context["can_edit"] is True
    saved = client.post("/designer/other/save/", json.dumps({"definition": {**definition("other"), "name": "O2"},
                                                             "base_version": 1}), content_type="application/json")
    assert saved.status_code == 201
    assert client.post("/designer/other/publish/", json.dumps({"version": 2}),
                       content_type="application/json").status_code == 200
    started = client.post("/api/workflows/other/runs/", json.dumps({"input": {"n": 2}}),
                          content_type="application/json")
    assert started.status_code == 202
    assert client.get(f"/api/runs/{started.json()['id']}/").status_code == 200
    listed = client.get("/api/workflows/").json()["results"]
    assert [w["slug"] for w in listed] == ["other"]
    assert client.get("/api/workflows/alpha/").status_code == 404
    # A grant to a group reaches its members.
    group = Group.objects.create(name="alpha-operators")
    WorkflowAccess.objects.create(workflow=world["alpha"], group=group, permission="operate")
    member = User.objects.create_user("member", password="pw-" + uuid.uuid4().hex)
    member.groups.add(group)
    client.force_login(member)
    assert client.get("/monitor/runs/run-alpha/").status_code == 200
    assert client.post("/api/runs/run-alpha/retry/", "{}", content_type="application/json").status_code == 202
    assert client.get("/designer/other/").status_code == 403


def test_creating_a_workflow_grants_its_creator_edit(db, roles):
    creator = User.objects.create_user("creator", password="pw-" + uuid.uuid4().hex)
    creator.user_permissions.add(*Group.objects.get(name="Author").permissions.filter(codename="add_workflow"))
    client = Client()
    client.force_login(creator)
    assert client.get("/").status_code == 200  # may create, so the list opens (empty)
    created = client.post("/designer/-/create/", json.dumps({"definition": definition("mine")}),
                          content_type="application/json")
    assert created.status_code == 201
    assert WorkflowAccess.objects.filter(workflow__slug="mine", user=creator, permission="edit").exists()
    assert client.get("/designer/mine/").context["can_edit"] is True
    Workflow.objects.create(slug="theirs", name="Theirs")
    assert client.get("/designer/theirs/").status_code == 403


@pytest.mark.parametrize("user, shown, hidden", [
    ("nobody", [], ["Workflows", "Monitor", "Runs", "Dead letters", "Audit", "Admin"]),
    ("viewer", ["Workflows", "Monitor", "Runs"], ["Dead letters", "Audit", "Admin"]),
    ("operator", ["Workflows", "Monitor", "Runs", "Dead letters", "Audit"], ["Admin"]),
    ("scoped", ["Workflows", "Monitor", "Runs", "Dead letters"], ["Audit", "Admin"]),
    ("superuser", ["Workflows", "Monitor", "Runs", "Dead letters", "Audit", "Admin"], []),
])
def test_navigation_shows_only_what_the_user_can_open(world, user, shown, hidden):
    import re

    client = Client()
    client.force_login(world["users"][user])
    page = client.get("/")  # the list, or for "nobody" the refusal page: both have the navigation
    nav = re.search(r'<nav class="mainnav".*?</nav>', page.content.decode(), re.S).group(0)
    links = re.findall(r">([^<]+)</a>", nav)
    assert [label for label in shown if label in links] == shown
    assert not [label for label in hidden if label in links]


def test_a_refusal_is_a_page_with_navigation_and_sign_out(world):
    client = Client()
    client.force_login(world["users"]["nobody"])
    page = client.get("/")
    assert page.status_code == 403
    html = page.content.decode()
    assert 'class="mainnav"' in html and "Sign out" in html and "nobody" in html
    assert "no access to any workflow yet" in html
    viewer = Client()
    viewer.force_login(world["users"]["viewer"])
    html = viewer.get("/monitor/audit/").content.decode()
    assert "You cannot open this page" in html and 'href="/monitor/runs/"' in html


# ---- websockets -------------------------------------------------------------------------------
WEBSOCKETS = [
    ("ws:runs", "/ws/runs/run-alpha/", VIEW),
    ("ws:monitor", "/ws/monitor/?workflow=alpha", VIEW),
    ("ws:monitor", "/ws/monitor/", SEES_SOME),
]


def websocket_routes() -> set[str]:
    from monitor.routing import websocket_urlpatterns

    return {f"ws:{str(pattern.pattern).strip('/').split('/')[1]}" for pattern in websocket_urlpatterns}


def test_every_websocket_route_is_in_the_matrix():
    assert websocket_routes() == {name for name, _path, _allowed in WEBSOCKETS}


def test_websocket_matrix(world, live_server, capsys):
    """Real connections to daphne: a refused socket is closed at the handshake (HTTP 403)."""
    from websockets.exceptions import InvalidStatus

    from tests.test_websocket_monitor import run_async, session_cookie, ws

    cookies = {name: session_cookie(user) for name, user in world["users"].items()}
    cookies["anonymous"] = None

    async def outcome(path: str, cookie) -> str:
        try:
            async with ws(live_server, path, cookie) as socket:
                if path.startswith("/ws/runs/"):
                    while json.loads(await socket.recv())["type"] != "caught_up":
                        pass
                return "open"
        except InvalidStatus as refused:
            return str(refused.response.status_code)

    rows, problems = [], []
    for _name, path, allowed in WEBSOCKETS:
        row = []
        for user in USERS:
            result = run_async(outcome(path, cookies[user]))
            if (result == "open") != (user in allowed):
                problems.append(f"{path} as {user}: {result}")
            row.append(("✓" if user in allowed else "✗") + result)
        rows.append((f"WS {path}", row))
    table = format_matrix(rows)
    with capsys.disabled():
        print(f"\n{table}\n{len(rows) * len(USERS)} websocket cells (open: accepted; 403: closed at the handshake)")
    assert not problems, problems
