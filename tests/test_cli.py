"""The `sluice` CLI without a server: validate, usage errors, file reading, the follow logic.

The CLI runs as the installed console script in a child process. Commands that talk to a
server are tested against a live one in tests/test_cli_live.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from sluice_cli import documents, follow
from tests.cli_support import ROOT, cli_env, sluice

INVALID_YAML = textwrap.dedent("""\
    slug: orders
    trigger:
      type: kafka
      topic: orders
    steps:
      - id: check
        type: transform
        config:
          output:
            ok: "{{ trigger.total > 0 }}"
      - id: charge
        type: http
        config:
          method: POST
        retry:
          max_attempts: 0
    edges:
      - from: check
        to: charge
      - from: charge
        to: ship
    """)


@pytest.fixture
def env(tmp_path):
    return cli_env(tmp_path / "config")


def test_validate_names_file_line_step_and_field_for_yaml_and_json(tmp_path, env):
    (tmp_path / "orders.yaml").write_text(INVALID_YAML)
    hello = json.loads((ROOT / "examples" / "hello.json").read_text())
    hello["steps"][0]["config"]["output"] = {"greeting": "Hello, {{ trigr.name }}!"}
    # Tabs and one member per line, as editors write JSON: lines must still be right.
    (tmp_path / "hello.json").write_text(json.dumps(hello, indent="\t"))
    lines = (tmp_path / "hello.json").read_text().splitlines()
    greeting_line = next(number for number, line in enumerate(lines, 1) if '"greeting"' in line)

    result = sluice(env, "validate", "orders.yaml", "hello.json", cwd=tmp_path)

    assert result.returncode == 1, result
    out = result.stdout.splitlines()
    assert "orders.yaml:13: error: steps[1].config.url (step charge): required: URL" in out
    assert ("orders.yaml:16: error: steps[1].retry.max_attempts (step charge): must be a whole number "
            "from 1 to 100, not 0") in out
    assert any(line.startswith("orders.yaml:21: error: edges[1].to (step charge): no step has the id 'ship'")
               for line in out), out
    assert any(line.startswith(f"hello.json:{greeting_line}: error: steps[0].config.output.greeting (step greet): "
                               "unknown name 'trigr'") for line in out), out
    assert "orders.yaml (orders): 3 errors" in out and "hello.json (hello): 1 error" in out


def test_validate_json_output_and_valid_examples(env):
    result = sluice(env, "validate", "examples", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is True
    assert sorted(entry["slug"] for entry in report["files"]) == [
        "add-with-celery", "buy-stats", "charge-card", "expense-approval", "flaky-with-retries", "hello",
        "notify-ops", "order-enrichment", "order-fulfilment", "place-order", "ship-all", "ship-one"]


def test_validate_reports_warnings_without_failing(tmp_path, env):
    (tmp_path / "lonely.yaml").write_text(textwrap.dedent("""\
        slug: lonely
        trigger: {type: manual}
        steps:
          - {id: a, type: transform, config: {output: {}}}
          - {id: b, type: transform, config: {output: {}}}
        """))
    result = sluice(env, "validate", "lonely.yaml", cwd=tmp_path)
    assert result.returncode == 0, result
    assert "lonely.yaml:4: warning: steps[0] (step a): a is connected to no other step" in result.stdout
    assert "lonely.yaml (lonely): valid, 2 warnings" in result.stdout


def test_validate_multi_document_yaml_points_into_the_right_document(tmp_path, env):
    (tmp_path / "two.yaml").write_text(textwrap.dedent("""\
        slug: first
        trigger: {type: manual}
        steps: [{id: a, type: transform, config: {output: {}}}]
        ---
        slug: Second
        trigger: {type: manual}
        steps: [{id: a, type: transform, config: {output: {}}}]
        """))
    result = sluice(env, "validate", "two.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith("two.yaml:5: error: slug: 'Second' is not a valid slug")


def test_files_that_cannot_be_read(tmp_path, env):
    (tmp_path / "broken.json").write_text('{\n  "slug": "x",\n  "steps": [\n}\n')
    (tmp_path / "broken.yaml").write_text("slug: x\nsteps:\n  - id: a\n   type: b\n")
    (tmp_path / "dated.yaml").write_text("slug: x\nwhen: !!timestamp 2024-01-01\n")
    result = sluice(env, "validate", "broken.json", "broken.yaml", "dated.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "broken.json:4: error: (definition): not valid JSON: Expecting value (column 1)" in result.stdout
    assert "broken.yaml:4: error: (definition): not valid YAML" in result.stdout
    assert "dated.yaml:2: error: (definition): a date value has no JSON form" in result.stdout

    missing = sluice(env, "validate", "nowhere.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip() == "error: nowhere.yaml: no such file or directory"


def test_usage_errors_exit_2_with_one_sentence(tmp_path, env):
    unknown = sluice(env, "frobnicate")
    assert unknown.returncode == 2 and "invalid choice: 'frobnicate'" in unknown.stderr
    both = sluice(env, "run", "hello", "--wait", "--follow")
    assert both.returncode == 2 and "not allowed with argument --wait" in both.stderr
    assert sluice(env, "runs").returncode == 2
    assert sluice(env, "runs", "list", "--status", "done").returncode == 2

    unconfigured = sluice(env, "runs", "list")
    assert unconfigured.returncode == 2
    assert unconfigured.stderr == ("error: no Sluice server configured (SLUICE_URL and SLUICE_TOKEN not set): "
                                   "run `sluice login` or set SLUICE_URL and SLUICE_TOKEN\n")
    # Input is checked before anything is sent (this server does not even exist).
    configured = cli_env(tmp_path / "config", url="http://127.0.0.1:9", token="t")
    bad_input = sluice(configured, "run", "hello", "--input", "{name: Ada}")
    assert bad_input.returncode == 2
    assert bad_input.stderr.startswith("error: --input: the value is not valid JSON (Expecting property name")
    as_json = sluice(configured, "--json", "run", "hello", "--input", "@nowhere.json")
    assert as_json.returncode == 2
    assert json.loads(as_json.stderr) == {"error": "--input: cannot read nowhere.json: No such file or directory",
                                          "code": "usage", "errors": []}
    unreachable = sluice(configured, "runs", "list")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("error: could not reach the Sluice server at http://127.0.0.1:9: ")


def test_the_cli_starts_light_and_validates_without_django_settings(tmp_path):
    """Parsing arguments loads neither httpx, PyYAML nor Django; validate runs the validator without
    configuring Django (no settings module, no database)."""
    (tmp_path / "hello.json").write_text((ROOT / "examples" / "hello.json").read_text())
    script = textwrap.dedent(f"""
        import sys
        from sluice_cli import main
        main.build_parser()
        heavy = sorted(name for name in ("httpx", "yaml", "django", "orchestrator") if name in sys.modules)
        assert heavy == [], heavy
        code = main.main(["validate", {str(tmp_path / "hello.json")!r}])
        from django.conf import settings
        print("exit", code, "django configured", settings.configured)
        """)
    env = cli_env(tmp_path)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "exit 0 django configured False"


# ---- reading files -----------------------------------------------------------------------------
def test_paths_map_to_the_nearest_written_line(tmp_path):
    path = tmp_path / "w.json"
    path.write_text('{\n  "slug": "x",\n  "layout": {"a b": {"x": 1}},\n  "steps": [\n    {\n      "id": "a",\n'
                    '      "config": {}\n    }\n  ]\n}\n')
    document, = documents.load_file(path)
    assert document.line_for("steps[0].config.url") == 7  # missing field: its parent's line
    assert document.line_for("steps[0]") == 5
    assert document.line_for('layout["a b"].x') == 3
    assert document.line_for("edges[0].to") == 1  # nothing written: the document
    assert documents.parse_path('steps[12].config["odd key"].v') == ("steps", 12, "config", "odd key", "v")


@pytest.mark.parametrize("text", ["yes", "no", "on", "off", "1e5", "1.5e5", "09", "017", "10:30", "2024-01-01",
                                  "null", "~", "true", "0x1F", ".inf", "1_000", "", " padded "])
def test_yaml_strings_survive_export_and_apply(tmp_path, text):
    """What `export --yaml` writes, `apply` reads back as the same document (no silent retyping)."""
    path = tmp_path / "w.yaml"
    path.write_text(documents.dump({"value": text, "n": 1.5, "i": 7, "b": False, "z": None}, as_yaml=True))
    document, = documents.load_file(path)
    assert document.data == {"value": text, "n": 1.5, "i": 7, "b": False, "z": None}


def test_yaml_reads_like_json_not_like_yaml_1_1(tmp_path):
    path = tmp_path / "w.yml"
    path.write_text("a: yes\nb: on\nc: 2024-01-01\nd: 1:30\ne: true\nf: 010\ng: 1.0\n")
    document, = documents.load_file(path)
    assert document.data == {"a": "yes", "b": "on", "c": "2024-01-01", "d": "1:30", "e": True, "f": "010", "g": 1.0}


# ---- following a run ---------------------------------------------------------------------------
def _step(step_id, status, attempts=(), **fields):
    return {"step_id": step_id, "type": "python", "status": status, "attempts": list(attempts), **fields}


def _attempt(number, started, ended=None, error=None, backoff=None):
    return {"attempt": number, "started_at": started, "ended_at": ended, "error": error, "backoff_seconds": backoff}


def test_follow_prints_each_event_once_in_the_order_it_happened():
    t = "2026-01-01T10:00:0{}+00:00".format
    seen: set = set()
    ranks = follow.graph_ranks({"steps": [{"id": "b"}, {"id": "a"}, {"id": "c"}],
                                "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}]})
    assert ranks == {"a": 0, "b": 1, "c": 2}
    first = {"steps": [_step("a", "retrying", [_attempt(1, t(1), t(2), "boom\nTraceback ...", 1.0)])]}
    assert [(e.step_id, e.kind, e.attempt) for e in follow.new_events(first, seen, ranks)] == [
        ("a", "started", 1), ("a", "retrying", 1)]
    assert "attempt 1 failed: boom; next attempt in 1.0 s" in follow.new_events(
        first, set(), ranks)[1].describe()
    # Engine steps decided in one batch share an instant: graph order, start before end.
    second = {"steps": [
        _step("b", "succeeded", [_attempt(1, t(5), t(5))], started_at=t(5), ended_at=t(5)),
        _step("a", "succeeded", [_attempt(1, t(1), t(2), "boom", 1.0), _attempt(2, t(4), t(5))],
              started_at=t(1), ended_at=t(5)),
        _step("c", "skipped"),
    ]}
    events = follow.new_events(second, seen, ranks)
    assert [(e.step_id, e.kind, e.attempt) for e in events] == [
        ("a", "started", 2), ("a", "succeeded", 2), ("b", "started", 1), ("b", "succeeded", 1), ("c", "skipped", 1)]
    assert follow.new_events(second, seen, ranks) == []  # nothing twice


def test_a_step_shown_waiting_is_not_shown_started_later():
    seen: set = set()
    waiting = {"steps": [_step("approve", "waiting", started_at="2026-01-01T10:00:00+00:00")]}
    assert [e.kind for e in follow.new_events(waiting, seen)] == ["waiting"]
    done = {"steps": [_step("approve", "succeeded", [_attempt(1, "2026-01-01T10:00:00+00:00",
                                                                  "2026-01-01T10:00:09+00:00")],
                            started_at="2026-01-01T10:00:00+00:00", ended_at="2026-01-01T10:00:09+00:00",
                            port="approve")]}
    events = follow.new_events(done, seen)
    assert [e.kind for e in events] == ["succeeded"]
    assert events[0].detail == " in 9.0 s, port approve"


class FlakyServer:
    """The edge of the network: answers (or failures) in order, as a web process restarting gives them."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = 0

    def get(self, path, params=None):
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_following_survives_a_restarting_server_but_not_a_refusal():
    from sluice_cli.client import ApiError
    from sluice_cli.errors import CliError

    gone = CliError("could not reach the Sluice server at http://x: refused", code="unreachable")
    finished = {"id": "r", "status": "succeeded", "steps": []}
    server = FlakyServer({"id": "r", "status": "running", "steps": []}, gone, ApiError(502, "Bad gateway"), finished)
    assert follow.watch(server, "r", interval=0.001) == finished and server.calls == 4
    with pytest.raises(ApiError, match="No run"):
        follow.watch(FlakyServer(ApiError(404, "No run 'r'")), "r", interval=0.001)
    with pytest.raises(CliError, match="could not reach"):
        follow.watch(FlakyServer(*[gone] * (follow.MAX_MISSED_POLLS + 1)), "r", interval=0.001)


def test_validate_accepts_the_editor_schema_lines(tmp_path, env):
    """The README's editor set-up: `$schema` in JSON, the yaml-language-server comment (and key) in YAML."""
    hello = json.loads((ROOT / "examples" / "hello.json").read_text())
    (tmp_path / "hello.json").write_text(json.dumps({"$schema": "../docs/workflow.schema.json", **hello}, indent=2))
    (tmp_path / "greet.yaml").write_text(textwrap.dedent("""\
        # yaml-language-server: $schema=http://127.0.0.1:8000/schema/workflow.json
        $schema: http://127.0.0.1:8000/schema/workflow.json
        slug: greet
        trigger: {type: manual}
        steps:
          - {id: a, type: transform, config: {output: {x: 1}}}
        """))
    (tmp_path / "odd.yaml").write_text("$schema: 5\nslug: odd\ntrigger: {type: manual}\n"
                                       "steps: [{id: a, type: transform, config: {output: {}}}]\n")
    result = sluice(env, "validate", "hello.json", "greet.yaml", cwd=tmp_path)
    assert result.returncode == 0, result
    assert "hello.json (hello): valid" in result.stdout and "greet.yaml (greet): valid" in result.stdout
    odd = sluice(env, "validate", "odd.yaml", cwd=tmp_path)
    assert odd.returncode == 1 and 'odd.yaml:1: error: ["$schema"]: must be a string' in odd.stdout, odd
