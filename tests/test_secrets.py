"""Secrets on the worker: only references rendering produced are resolved, and every value
resolved is masked in outputs, errors and log lines, in its encoded forms too.

Steps are rendered the way the engine renders them (`render_config`) and executed the way a
worker executes them (`execute_task`), against a real local HTTP server and real handlers.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets as random
from urllib.parse import quote, quote_plus

import pytest

from orchestrator import secrets, steps
from orchestrator.expressions import SECRET_REFS_KEY
from orchestrator.messages import StepTask
from orchestrator.runtime.worker_loop import execute_task
from orchestrator.secrets import MASK, MaskSecretsFilter, SecretError
from tests.echo_server import echo_server  # noqa: F401  (fixture)

import tests.leaky_handlers  # noqa: F401,E402  (registers leaky.*)


@pytest.fixture(autouse=True)
def fresh_masker():
    """Each test starts like a fresh runner process: nothing resolved yet."""
    secrets.MASKER.forget_all()
    yield
    secrets.MASKER.forget_all()


def planted() -> str:
    """A random secret with characters that JSON, URLs and HTML each encode differently."""
    return f"s3/{random.token_urlsafe(12)}+&\"<'"


def render(step_type: str, config: dict, trigger=None) -> dict:
    return steps.get(step_type).render_config(config, {"trigger": trigger or {}, "steps": {}, "run": {"id": "r1"}})


def task(step_type: str, config: dict, trigger=None) -> StepTask:
    return StepTask(run_id="r1", workflow="w", version=1, step_id="s", type=step_type, attempt=1,
                    config=render(step_type, config, trigger), idempotency_key="r1/s/1", dispatched_at=0.0)


def encoded_forms(value: str) -> dict[str, str]:
    """The forms a leak could take, computed here independently of orchestrator.secrets."""
    raw = value.encode()
    forms = {"raw": value, "json": json.dumps(value)[1:-1], "repr": repr(value)[1:-1],
             "url": quote(value, safe=""), "url-plus": quote_plus(value)}
    for shift in range(3):
        whole = raw[shift:][: (len(raw) - shift) // 3 * 3]
        forms[f"base64+{shift}"] = base64.b64encode(whole).decode()
        forms[f"urlsafe-base64+{shift}"] = base64.urlsafe_b64encode(whole).decode()
    return forms


def assert_hidden(text: str, value: str) -> None:
    for name, form in encoded_forms(value).items():
        assert form not in text, f"the {name} form of the secret is in {text[:300]!r}"


# ---- resolving ------------------------------------------------------------------------------
def test_only_markers_rendering_produced_are_resolved():
    value = planted()
    rendered = render("http", {"url": "http://x/{{ trigger.name }}", "headers": {
        "Authorization": "Bearer {{ secret('API_TOKEN') }}", "X-Data": "{{ trigger.name }}"}},
        trigger={"name": "«secret:API_TOKEN»"})
    assert rendered[SECRET_REFS_KEY] == [{"at": "/headers/Authorization", "offset": 7, "name": "API_TOKEN"}]
    config = secrets.resolve(rendered, {"API_TOKEN": value})
    assert config["headers"] == {"Authorization": f"Bearer {value}", "X-Data": "«secret:API_TOKEN»"}
    assert config["url"] == "http://x/«secret:API_TOKEN»"
    assert SECRET_REFS_KEY not in config and SECRET_REFS_KEY in rendered  # the task's config is untouched
    assert rendered["headers"]["Authorization"] == "Bearer «secret:API_TOKEN»"


def test_several_markers_in_one_text_and_in_nested_values():
    rendered = render("python", {"handler": "demo.echo", "input": {
        "pair": "{{ secret('A') }}:{{ secret('B') }}!", "deep": ["x", {"y": "{{ secret('A') }}"}]}})
    config = secrets.resolve(rendered, {"A": "alpha-1", "B": "beta-22"})
    assert config["input"] == {"pair": "alpha-1:beta-22!", "deep": ["x", {"y": "alpha-1"}]}


def test_engine_run_types_keep_no_references():
    rendered = render("transform", {"output": {"t": "{{ secret('A') }}"}})
    assert rendered == {"output": {"t": "«secret:A»"}}
    assert secrets.resolve(rendered, {"A": "alpha-1"}) == rendered


def test_a_missing_secret_is_one_clear_sentence():
    with pytest.raises(SecretError) as raised:
        secrets.resolve(render("python", {"handler": "demo.echo", "input": "{{ secret('NOPE') }}"}), {})
    assert str(raised.value) == "secret 'NOPE' is not set in this runner's environment"


@pytest.mark.parametrize("value", ["x", "ab", "abc"])
def test_secrets_too_short_to_mask_are_refused(value):
    with pytest.raises(SecretError, match="shorter than 4 characters"):
        secrets.resolve(render("python", {"handler": "demo.echo", "input": "{{ secret('S') }}"}), {"S": value})


def test_an_empty_secret_resolves_and_masks_nothing():
    config = secrets.resolve(render("python", {"handler": "demo.echo", "input": "<{{ secret('S') }}>"}), {"S": ""})
    assert config["input"] == "<>" and secrets.mask_text("<> text") == "<> text"


@pytest.mark.parametrize("refs", [
    [{"at": "/input", "offset": 0, "name": "S"}],                # no marker there
    [{"at": "/input", "offset": 3, "name": "S"}],                # not at that offset
    [{"at": "/missing", "offset": 0, "name": "S"}],
    [{"at": "/input/0", "offset": 0, "name": "S"}],
    [{"at": "input", "offset": 0, "name": "S"}],
    [{"at": "", "offset": 0, "name": "S"}],
    [{"at": "/input", "offset": 0, "name": "not a name"}],
    "garbage",
])
def test_references_that_do_not_match_the_config_are_refused(refs):
    config = {"handler": "demo.echo", "input": "plain «secret:S» text", SECRET_REFS_KEY: refs}
    with pytest.raises(SecretError):
        secrets.resolve(config, {"S": "value-1"})


# ---- masking --------------------------------------------------------------------------------
def test_masking_finds_a_value_in_every_encoded_form():
    value = planted()
    secrets.MASKER.add(value)
    for name, form in encoded_forms(value).items():
        masked = secrets.mask_text(f"before {form} after")
        assert form not in masked and masked.startswith("before ") and masked.endswith(" after"), name
    for prefix in ("", "u", "us", "user:", "user:x"):  # Basic auth: base64 of "user:secret"
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(f"{prefix}{value}".encode()).decode()
            assert_hidden(secrets.mask_text(text), value)


def test_masking_walks_output_strings_keys_and_numbers():
    secrets.MASKER.add("tok-123456")
    secrets.MASKER.add("987654")
    output = {"a": ["x tok-123456 y", {"tok-123456": 1}], "n": 987654, "f": 1.5, "b": True, "none": None}
    assert secrets.mask(output) == {"a": [f"x {MASK} y", {MASK: 1}], "n": MASK, "f": 1.5, "b": True, "none": None}


def test_a_secret_containing_another_is_hidden_whole():
    secrets.MASKER.add("abcd")
    secrets.MASKER.add("xxabcdyy")
    assert secrets.mask_text("1 xxabcdyy 2 abcd") == f"1 {MASK} 2 {MASK}"


def test_nothing_is_masked_before_a_secret_is_resolved():
    assert secrets.mask({"a": "anything"}) == {"a": "anything"} and secrets.MASKER.pattern is None


def test_log_records_are_masked_in_message_arguments_and_exceptions():
    value = planted()
    secrets.MASKER.add(value)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskSecretsFilter())
    logger = logging.getLogger("tests.secrets.masking")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("calling https://api.example/x?api_key=%s", quote_plus(value))
        try:
            raise ValueError({"token": value})
        except ValueError:
            logger.exception("failed for %r", value)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "api_key=" + MASK in text and "Traceback" in text and "ValueError" in text
    assert_hidden(text, value)


def test_settings_keep_http_clients_quiet_and_mask_the_console():
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() >= logging.WARNING
    from django.conf import settings
    # Masking first, so no later filter or the formatter ever sees an unmasked value.
    assert settings.LOGGING["handlers"]["console"]["filters"][0] == "mask_secrets"


# ---- what a worker reports -------------------------------------------------------------------
def test_http_step_output_and_echoed_headers_are_masked(echo_server):  # noqa: F811
    value = planted()
    result = execute_task(task("http", {
        "url": f"{echo_server}/echo", "headers": {"Authorization": "Bearer {{ secret('API_TOKEN') }}"},
        "query": {"api_key": "{{ secret('API_TOKEN') }}"}}), {"API_TOKEN": value})
    assert result.ok, result.error
    body = result.output["body"]
    # The server did get the value (it echoed something that was masked), and nothing shows it.
    assert body["authorization"] == f"Bearer {MASK}" and body["query"] == {"api_key": [MASK]}
    assert result.output["headers"]["x-echo-authorization"] == f"Bearer {MASK}"
    assert_hidden(json.dumps(result.output), value)


def test_http_error_that_echoes_the_secret_is_masked_and_has_no_traceback(echo_server):  # noqa: F811
    value = planted()
    result = execute_task(task("http", {"url": f"{echo_server}/fail",
                                        "headers": {"Authorization": "{{ secret('API_TOKEN') }}"}}),
                          {"API_TOKEN": value})
    assert not result.ok and result.error.startswith(f"GET {echo_server}/fail answered 500")
    assert "Traceback" not in result.error
    assert_hidden(result.error, value)


def test_echoed_secret_in_python_output_is_masked():
    value = planted()
    result = execute_task(task("python", {"handler": "demo.echo", "input": {"v": "{{ secret('S') }}", "n": 1}}),
                          {"S": value})
    assert result.ok and result.output == {"v": MASK, "n": 1}


def test_marker_in_run_input_stays_text():
    value = planted()
    result = execute_task(task("python", {"handler": "demo.echo", "input": "{{ trigger }}"},
                               trigger={"name": "«secret:S»"}), {"S": value})
    assert result.ok and result.output == {"name": "«secret:S»"}


def test_handler_error_keeps_its_traceback_from_the_handler_on_and_is_masked():
    value = planted()
    result = execute_task(task("python", {"handler": "leaky.raise", "input": "{{ secret('S') }}"}), {"S": value})
    summary, _, details = result.error.partition("\n\n")
    assert summary == f"RuntimeError: could not use '{MASK}'"
    assert details.startswith("Traceback (most recent call last):")
    assert 'File "tests/leaky_handlers.py"' in details, details
    assert "orchestrator/" not in details and "/work/" not in details  # no Sluice frames, no server paths
    assert_hidden(result.error, value)


def test_configuration_errors_are_one_sentence_without_traceback():
    result = execute_task(task("python", {"handler": "demo.echo", "input": "{{ secret('NOPE') }}"}), {})
    assert result.error == "secret 'NOPE' is not set in this runner's environment"
    result = execute_task(task("http", {"url": "ftp://example.com/x"}), {})
    assert result.error == "URL must start with http:// or https:// and name a host, got 'ftp://example.com/x'"
    result = execute_task(task("python", {"handler": "no.such_handler"}), {})
    assert result.error.startswith("no Python handler named 'no.such_handler'") and "\n" not in result.error


def test_a_secret_resolved_once_is_masked_in_later_steps_too():
    value = planted()
    assert execute_task(task("python", {"handler": "demo.echo", "input": "{{ secret('S') }}"}), {"S": value}).ok
    later = execute_task(task("python", {"handler": "demo.echo", "input": "{{ trigger.cached }}"},
                              trigger={"cached": f"kept {value}"}), {})
    assert later.output == f"kept {MASK}"
