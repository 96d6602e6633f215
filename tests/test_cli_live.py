"""`sluice` end to end: the installed console script against a live Sluice.

Real parts only: daphne serving the REST API (live_server) on the test database, the embedded
broker, and for runs a real runner and history bridge (`manage.py runner`, `manage.py bridge`).
The CLI runs as a child process with a config directory of its own, as a user or a CI job runs it.
"""

from __future__ import annotations

import json
import queue
import shutil
import stat
import subprocess
import textwrap
import threading
import time

import pytest

from tests.cli_support import ROOT, SLUICE, cli_env, sluice, sluice_json
from tests.runtime_support import ManageProcess

pytestmark = [pytest.mark.kafka]

# The editor lines a README reader copies: a YAML language server comment and a `$schema` key
# (accepted and ignored by the server).
GREET_YAML = textwrap.dedent("""\
    # yaml-language-server: $schema=../docs/workflow.schema.json
    $schema: ../docs/workflow.schema.json
    slug: greet
    name: Greet
    trigger:
      type: manual
    steps:
      - id: hello
        type: transform
        config:
          output:
            text: "Hello, {{ trigger.name }}!"
    edges: []
    """)


def make_user(username: str, *perms: str, superuser: bool = False) -> str:
    """A user with an API token (what `manage.py issue_token` prints); returns the key."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from rest_framework.authtoken.models import Token

    User = get_user_model()
    if superuser:
        user = User.objects.create_superuser(username, f"{username}@example.com", None)
    else:
        user = User.objects.create_user(username, password=None)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return Token.objects.create(user=user).key


def versions(slug: str) -> list[int]:
    from designer.models import WorkflowVersion

    return sorted(WorkflowVersion.objects.filter(workflow__slug=slug).values_list("number", flat=True))


def live_version(slug: str) -> int | None:
    from designer.models import Workflow

    workflow = Workflow.objects.select_related("live_version").get(slug=slug)
    return workflow.live_version.number if workflow.live_version else None


def one_error_line(result) -> str:
    """A refusal is one sentence on stderr."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# ---- workflows as code -----------------------------------------------------------------------
def test_login_apply_diff_export_and_exit_codes(kafka, live_server, tmp_path):
    token = make_user("ci", superuser=True)
    viewer_token = make_user("viewer", "designer.view_workflow")
    config_home = tmp_path / "config"
    env = cli_env(config_home)  # no SLUICE_URL / SLUICE_TOKEN: only what login stores

    # login checks the token first: a wrong one is refused and nothing is stored.
    refused = sluice(env, "login", "--url", live_server.url, "--with-token", stdin="not-a-token\n")
    assert refused.returncode == 1
    assert one_error_line(refused) == f"error: the server at {live_server.url} did not accept the token; nothing was stored"
    assert not (config_home / "sluice").exists()
    logged_in = sluice(env, "login", "--url", live_server.url + "/", "--with-token", stdin=token + "\n")
    assert logged_in.returncode == 0, logged_in.stderr
    stored = config_home / "sluice" / "config.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    assert json.loads(stored.read_text()) == {"url": live_server.url, "token": token}

    flows = tmp_path / "flows"
    flows.mkdir()
    shutil.copy(ROOT / "examples" / "hello.json", flows / "hello.json")
    (flows / "greet.yaml").write_text(GREET_YAML)

    # First apply creates both; the second finds nothing to do and makes no version.
    first = sluice(env, "apply", "-f", str(flows))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["created    greet: version 1 (draft)", "created    hello: version 1 (draft)"]
    second = sluice(env, "apply", "-f", str(flows))
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == ["unchanged  greet: version 1 (draft)", "unchanged  hello: version 1 (draft)"]
    assert versions("greet") == [1] and versions("hello") == [1]
    draft = sluice(env, "run", "greet", "--wait")
    assert draft.returncode == 1
    assert one_error_line(draft) == "error: Workflow 'greet' has no published version: publish it first"

    # diff says what apply would do, in the file's own format, and changes nothing.
    (flows / "greet.yaml").write_text(GREET_YAML.replace("Hello, ", "Hi, "))
    diff = sluice(env, "diff", "-f", str(flows))
    assert diff.returncode == 0, diff.stderr
    out = diff.stdout.splitlines()
    assert out[:2] == ["update     greet: version 1 -> 2", "  step hello changed: config.output.text"]
    assert "-      text: Hello, {{ trigger.name }}!" in out and "+      text: Hi, {{ trigger.name }}!" in out
    assert "--- server: greet version 1" in out and f"+++ file: {flows / 'greet.yaml'}" in out
    assert out[-1] == "unchanged  hello: same as version 1"
    assert versions("greet") == [1]

    # apply --publish saves the change and makes both live (hello was unchanged, but a draft).
    published = sluice(env, "apply", "-f", str(flows), "--publish", "-m", "from CI")
    assert published.returncode == 0, published.stderr
    assert published.stdout.splitlines() == ["updated    greet: version 2 (was 1), published (live)",
                                             "unchanged  hello: version 1, published (live)"]
    assert versions("greet") == [1, 2] and live_version("greet") == 2 and live_version("hello") == 1

    # export writes what apply reads: the round trip is a no-op.
    exported = sluice(env, "export", "greet", "--yaml")
    assert exported.returncode == 0 and "text: Hi, {{ trigger.name }}!" in exported.stdout
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "greet.yml").write_text(exported.stdout)
    again = sluice_json(env, "apply", "-f", str(tmp_path / "exported"))
    assert [(r["slug"], r["action"], r["version"]) for r in again["results"]] == [("greet", "unchanged", 2)]
    old = sluice_json(env, "export", "greet", "--version", "1")
    assert old["version"] == 1 and old["definition"]["steps"][0]["config"]["output"]["text"] == "Hello, {{ trigger.name }}!"

    # An invalid file is refused with file and line before anything is sent.
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "broken.yaml").write_text(GREET_YAML.replace("slug: greet", "slug: broken")
                                                     .replace("type: transform", "type: transfrom"))
    invalid = sluice(env, "apply", "-f", str(tmp_path / "broken"))
    assert invalid.returncode == 1
    assert invalid.stderr.splitlines()[0] == "error: 1 workflow has 1 error; nothing was sent"
    assert invalid.stderr.splitlines()[1].startswith(
        f"  {tmp_path / 'broken' / 'broken.yaml'}:9: error: steps[0].type (step hello): unknown step type 'transfrom'")
    assert versions("broken") == []

    # A request the server refuses: one sentence, exit 1. The environment wins over the stored login.
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "new.yaml").write_text(GREET_YAML.replace("slug: greet", "slug: newcomer"))
    as_viewer = cli_env(config_home, url=live_server.url, token=viewer_token)
    forbidden = sluice(as_viewer, "apply", "-f", str(tmp_path / "new"))
    assert forbidden.returncode == 1
    assert one_error_line(forbidden) == (f"error: {tmp_path / 'new' / 'new.yaml'} (newcomer): "
                                         "You may not create workflows")
    missing = sluice(env, "export", "nothing")
    assert missing.returncode == 1 and one_error_line(missing) == "error: No workflow 'nothing'"
    as_json = sluice(env, "--json", "export", "nothing")
    assert as_json.returncode == 1
    assert json.loads(as_json.stderr)["error"] == "No workflow 'nothing'"

    # Dead letters: the REST endpoints may not exist on this server yet; either way the answer is
    # one clear sentence and exit 1 for a dead letter that does not exist.
    for args in (("dlq", "get", "999999"), ("dlq", "replay", "999999"), ("dlq", "discard", "999999")):
        result = sluice(env, *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        line = one_error_line(result)
        assert "/api/dead-letters/999999/" in line or "999999" in line, line
    listing = sluice(env, "dlq", "list")
    if listing.returncode == 1:
        assert one_error_line(listing) == (f"error: the server at {live_server.url} has no endpoint "
                                           "/api/dead-letters/: it runs a Sluice older than this client")
    else:
        assert listing.returncode == 0 and listing.stdout == "no dead letters\n"

    # logout forgets the token: commands then ask for a server (usage error).
    assert sluice(env, "logout").returncode == 0 and not stored.exists()
    assert sluice(env, "runs", "list").returncode == 2


# ---- runs -------------------------------------------------------------------------------------
SLOW = {
    "slug": "slow", "name": "Slow", "trigger": {"type": "manual"},
    "steps": [
        {"id": "warmup", "type": "python", "config": {"handler": "demo.sleep", "input": {"seconds": 2}}},
        {"id": "greet", "type": "transform", "config": {"output": {"greeting": "Hello, {{ trigger.name }}!"}}},
        {"id": "nap", "type": "python", "config": {"handler": "demo.sleep", "input": {"seconds": 1}}},
    ],
    "edges": [{"from": "warmup", "to": "greet"}, {"from": "greet", "to": "nap"}],
}
PICKY = {
    "slug": "picky", "name": "Picky", "trigger": {"type": "manual"},
    "steps": [
        {"id": "check", "type": "branch", "config": {"condition": "trigger.ok == true"}},
        {"id": "accept", "type": "transform", "config": {"output": {"accepted": True}}},
        {"id": "refuse", "type": "fail", "config": {"message": "not ok: {{ trigger }}"}},
    ],
    "edges": [{"from": "check", "port": "true", "to": "accept"}, {"from": "check", "port": "false", "to": "refuse"}],
}


class Lines:
    """A child's stdout read line by line in a thread, so a test can wait for a line."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"no such line within {timeout}s; got {self.lines}")

    def rest(self, timeout: float = 90) -> list[str]:
        self.process.wait(timeout)
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return self.lines


def follow_process(env: dict, *args: str) -> tuple[subprocess.Popen, Lines]:
    process = subprocess.Popen([str(SLUICE), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT)
    return process, Lines(process)


def step_lines(lines: list[str]) -> list[tuple[str, str]]:
    """(step, what) of each step line of `--follow` (`HH:MM:SS  step  type  what...`)."""
    parsed = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 4 and parts[0].count(":") == 2:
            parsed.append((parts[1], parts[3].rstrip(":")))
    return parsed


@pytest.fixture
def stack(kafka, live_server, tmp_path):
    """A live server with a runner and a bridge, the test workflows applied and published."""
    token = make_user("operator", superuser=True)
    env = cli_env(tmp_path / "config", url=live_server.url, token=token)
    bridge = ManageProcess("bridge")
    runner = ManageProcess("runner", "--instance-id", "cli-test")
    try:
        flows = tmp_path / "flows"
        flows.mkdir()
        for name in ("hello.json", "expense-approval.json"):
            shutil.copy(ROOT / "examples" / name, flows / name)
        for definition in (SLOW, PICKY):
            (flows / f"{definition['slug']}.json").write_text(json.dumps(definition, indent=2))
        applied = sluice(env, "apply", "-f", str(flows), "--publish")
        assert applied.returncode == 0, applied.stderr
        yield env
    finally:
        runner_log, bridge_log = runner.stop(), bridge.stop()
        assert "Traceback" not in runner_log, runner_log
        assert "Traceback" not in bridge_log, bridge_log


def test_run_wait_follow_failure_and_retries(stack):
    from monitor.models import Run

    env = stack
    # --wait: the outcome decides the exit code; a success prints the run's output.
    hello = sluice(env, "run", "hello", "--input", '{"name": "Ada"}', "--wait")
    assert hello.returncode == 0, hello.stderr
    assert hello.stdout.splitlines()[-1].startswith('output: {"said": "Hello, Ada!"')

    # --follow prints each step as it starts and as it ends, while the run goes on.
    process, lines = follow_process(env, "run", "slow", "--input", '{"name": "Ada"}', "--follow")
    header = lines.wait_for(lambda line: line.startswith("run "))
    run_id = header.split()[1]
    lines.wait_for(lambda line: " warmup " in line and line.endswith("started"))
    assert Run.objects.get(id=run_id).status != "succeeded"  # the first line came while the run ran
    rest = lines.rest()
    assert process.returncode == 0, process.stderr.read()
    assert step_lines(rest) == [("warmup", "started"), ("warmup", "succeeded"), ("greet", "started"),
                                ("greet", "succeeded"), ("nap", "started"), ("nap", "succeeded")]
    assert rest[-2].startswith(f"run {run_id} succeeded in ")

    # A run that fails exits 1 with the reason; list and get find it.
    failed = sluice(env, "run", "picky", "--input", '{"ok": false}', "--wait")
    assert failed.returncode == 1
    last = failed.stdout.splitlines()[-1]
    assert last.startswith("run ") and " failed" in last and "not ok" in last, failed.stdout
    failed_id = last.split()[1]
    listed = sluice_json(env, "runs", "list", "--workflow", "picky", "--status", "failed")
    assert [run["id"] for run in listed["results"]] == [failed_id]
    shown = sluice(env, "runs", "get", failed_id)
    assert shown.returncode == 0
    assert shown.stdout.splitlines()[0] == f"run {failed_id}: picky version 1, failed in " + \
        shown.stdout.splitlines()[0].split(" failed in ")[1]
    steps = {line.split()[0]: line.split()[2] for line in shown.stdout.splitlines()[-3:]}
    assert steps == {"check": "succeeded", "accept": "skipped", "refuse": "failed"}

    # Retry with new input: a new run of the same version, which succeeds this time.
    retried = sluice_json(env, "runs", "retry", failed_id, "--input", '{"ok": true}')
    new_id = retried["new_run"]
    assert new_id != failed_id
    finished = sluice(env, "runs", "get", new_id, "--wait", "--json")
    assert finished.returncode == 0, finished.stderr
    run = json.loads(finished.stdout)
    assert run["status"] == "succeeded" and run["input"] == {"ok": True}
    assert run["trigger"] == {"type": "replay", "of": failed_id}

    # Retry in place: the failed run resumes from its failed step (which fails again).
    resumed = sluice(env, "runs", "retry", failed_id)
    assert resumed.returncode == 0 and resumed.stdout == f"retry sent: run {failed_id} resumes from its failed steps\n"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        refuse = next(s for s in sluice_json(env, "runs", "get", failed_id)["steps"] if s["step_id"] == "refuse")
        if len(refuse["attempts"]) == 2 and refuse["status"] == "failed":
            break
        time.sleep(0.5)
    assert len(refuse["attempts"]) == 2, refuse
    # A running run cannot be retried: the server's refusal, one sentence, exit 1.
    not_failed = sluice(env, "runs", "retry", new_id)
    assert not_failed.returncode == 1
    assert one_error_line(not_failed) == (f"error: run {new_id} is succeeded: only failed or cancelled runs "
                                          "can be retried")


def test_follow_an_approval_signal_it_and_cancel_another(stack):
    env = stack
    process, lines = follow_process(env, "run", "expense-approval", "--input", '{"employee": "ada", "amount": 42}',
                                    "--follow")
    run_id = lines.wait_for(lambda line: line.startswith("run ")).split()[1]
    lines.wait_for(lambda line: " approve " in line and "waiting for a decision" in line)
    signalled = sluice(env, "signal", run_id, "approve", "--payload", '{"approved": true}')
    assert signalled.returncode == 0 and signalled.stdout == f"signal 'approve' sent to run {run_id}\n"
    rest = lines.rest()
    assert process.returncode == 0, process.stderr.read()
    assert step_lines(rest) == [("request", "started"), ("request", "succeeded"), ("approve", "waiting"),
                                ("approve", "succeeded"), ("pay", "started"), ("pay", "succeeded"),
                                ("rejected", "skipped")]
    assert any(line.endswith("port approve") for line in rest), rest

    # Cancel a waiting run: following it then ends with exit 1, and it cannot be cancelled twice.
    started = sluice_json(env, "run", "expense-approval", "--input", '{"employee": "bob", "amount": 7}')
    waiting = sluice(env, "runs", "get", started["id"], "--follow", "--timeout", "0.1")
    deadline = time.monotonic() + 60
    while "waiting for a decision" not in waiting.stdout and time.monotonic() < deadline:
        assert waiting.returncode == 1 and "is still running after 0.1 s" in waiting.stderr, waiting.stderr
        waiting = sluice(env, "runs", "get", started["id"], "--follow", "--timeout", "0.1")
    assert "waiting for a decision" in waiting.stdout
    cancelled = sluice(env, "runs", "cancel", started["id"], "--reason", "duplicate")
    assert cancelled.returncode == 0, cancelled.stderr
    outcome = sluice(env, "runs", "get", started["id"], "--wait")
    assert outcome.returncode == 1
    assert outcome.stdout.startswith(f"run {started['id']} cancelled in ")
    assert outcome.stdout.rstrip().endswith("cancelled by operator: duplicate")
    again = sluice(env, "runs", "cancel", started["id"])
    assert again.returncode == 1
    assert one_error_line(again) == f"error: run {started['id']} already cancelled: nothing to cancel"
    late = sluice(env, "signal", started["id"], "approve")
    assert late.returncode == 1
    assert one_error_line(late) == f"error: run {started['id']} already cancelled: it waits for no signal"
