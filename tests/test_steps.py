"""Every step type on real inputs: engine instructions, and worker execution (http against a
real HTTP server on 127.0.0.1, python against registered handlers)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from jsonschema import Draft202012Validator

from orchestrator import handlers, steps
from orchestrator.steps.base import (
    AwaitEvent,
    AwaitSignal,
    Complete,
    Emit,
    Fail,
    Sleep,
    TaskContext,
)
from orchestrator.steps.http import HttpStepError, UnexpectedStatus, status_expected
from orchestrator.steps.python import HandlerOutputError
from orchestrator.steps.wait_for_event import correlation_value, event_key, matches

CONTEXT = {
    "trigger": {"order_id": 42, "total": 120, "customer": {"email": "ada@example.com"}, "wait": "2"},
    "record": {"topic": "orders", "partition": 0, "offset": 9, "key": "42", "headers": {}, "timestamp": 1.0},
    "steps": {"charge": {"output": {"status": 200}}},
    "run": {"id": "run-1", "workflow": "orders", "version": 3},
}


def task(attempt=1, timeout=None, step_id="call"):
    return TaskContext(run_id="run-1", workflow="orders", version=3, step_id=step_id, attempt=attempt,
                       idempotency_key=f"run-1/{step_id}/{attempt}", timeout_seconds=timeout)


# ---- registry and schemas ------------------------------------------------------------------
def test_registry_has_every_type_with_a_complete_description():
    assert set(steps.REGISTRY) == {"transform", "branch", "http", "python", "kafka_produce", "delay",
                                   "wait_for_event", "approval", "subworkflow", "foreach", "celery_task", "fail",
                                   "lookup"}
    groups = {"Data", "Logic", "Integrations", "Waiting", "Composition", "Control"}
    for entry in steps.describe_all():
        assert entry["group"] in groups, entry["type"]
        assert entry["label"] and entry["description"] and entry["icon"]
        assert entry["runs_on"] in ("engine", "worker")
        assert entry["ports"]
        Draft202012Validator.check_schema(entry["config_schema"])
        for name, prop in entry["config_schema"]["properties"].items():
            assert {"title", "description", "default"} <= set(prop), f"{entry['type']}.{name}"
        for field in entry["condition_fields"]:
            assert field in entry["config_schema"]["properties"]
    json.dumps(steps.describe_all())  # served as JSON by the API


def test_schema_defaults_are_valid_configs_where_nothing_is_required():
    for step_type in steps.REGISTRY.values():
        schema = step_type.config_schema
        defaults = {name: prop["default"] for name, prop in schema["properties"].items()}
        errors = [e.message for e in Draft202012Validator(schema).iter_errors(defaults)
                  if e.validator not in ("minLength", "pattern")]
        assert errors == [], step_type.name


# ---- engine-run types ----------------------------------------------------------------------
def test_transform_renders_native_values():
    step = steps.get("transform")
    result = step.start({"output": {"id": "{{ trigger.order_id }}", "mail": "to {{ trigger.customer.email }}",
                                    "all": "{{ trigger.customer }}", "fixed": [1, "x"]}}, CONTEXT)
    assert result == Complete(output={"id": 42, "mail": "to ada@example.com",
                                      "all": {"email": "ada@example.com"}, "fixed": [1, "x"]})


def test_transform_with_failing_expression_fails_without_retry():
    result = steps.get("transform").start({"output": "{{ trigger.order_id.__class__ }}"}, CONTEXT)
    assert isinstance(result, Fail) and not result.retryable
    assert result.error.startswith("config.output:") and "unsafe" in result.error


def test_render_config_names_the_failing_field_for_worker_dispatch():
    from orchestrator.expressions import ExpressionError

    with pytest.raises(ExpressionError, match=r"^config\.url: .*unsafe"):
        steps.get("http").render_config({"method": "GET", "url": "{{ run.__class__ }}"}, CONTEXT)


@pytest.mark.parametrize("condition, port", [
    ("trigger.total > 100", "true"),
    ("trigger.total > 1000", "false"),
    ("steps.charge.output.status == 200", "true"),
    ("trigger.missing", "false"),
])
def test_branch_picks_a_port(condition, port):
    result = steps.get("branch").start({"condition": condition}, CONTEXT)
    assert result == Complete(output={"result": port == "true"}, port=port)


def test_branch_condition_is_not_rendered_as_a_template():
    step = steps.get("branch")
    assert step.render_config({"condition": "trigger.total > 100"}, CONTEXT) == {"condition": "trigger.total > 100"}


def test_fail_renders_its_message_and_is_not_retryable():
    step = steps.get("fail")
    assert step.retryable is False
    assert step.start({"message": "order {{ trigger.order_id }} rejected"}, CONTEXT) == Fail(
        "order 42 rejected", retryable=False)
    assert step.start({}, CONTEXT) == Fail("Failed", retryable=False)


@pytest.mark.parametrize("seconds, expected", [(5, 5.0), (0.5, 0.5), ("{{ trigger.wait }}", 2.0), ("3", 3.0)])
def test_delay_sleeps(seconds, expected):
    assert steps.get("delay").start({"seconds": seconds}, CONTEXT) == Sleep(expected, output={"slept_seconds": expected})


@pytest.mark.parametrize("seconds", ["{{ trigger.customer }}", "{{ trigger.missing }}", -1, "{{ -5 }}", 10 ** 9])
def test_delay_with_unusable_seconds_fails_naming_the_field(seconds):
    result = steps.get("delay").start({"seconds": seconds}, CONTEXT)
    assert isinstance(result, Fail) and not result.retryable
    assert result.error.startswith("config.seconds:")


def test_approval_waits_for_a_signal():
    step = steps.get("approval")
    result = step.start({"signal": "refund-{{ trigger.order_id }}", "timeout_seconds": 3600,
                         "instructions": "Refund {{ trigger.total }} EUR?"}, CONTEXT)
    assert result == AwaitSignal(name="refund-42", timeout_seconds=3600.0,
                                 details={"instructions": "Refund 120 EUR?"})
    # No signal name: empty, and the engine uses the step id.
    assert step.start({}, CONTEXT) == AwaitSignal(name="", timeout_seconds=None)


@pytest.mark.parametrize("payload, port", [
    (True, "approve"), ("approve", "approve"), ("Approved", "approve"), ({"approved": True}, "approve"),
    ({"decision": "approve", "by": "ada"}, "approve"),
    (False, "reject"), ("reject", "reject"), ({"approved": False}, "reject"), ({"approved": "yes"}, "reject"),
    ({"decision": "reject"}, "reject"), (None, "reject"), (1, "reject"), ({}, "reject"), ("maybe", "reject"),
])
def test_approval_decision(payload, port):
    assert steps.get("approval").on_signal({}, CONTEXT, payload) == Complete(output=payload, port=port)


def test_approval_timeout_rejects():
    assert steps.get("approval").on_timeout({}, CONTEXT) == Complete(output={"timed_out": True}, port="reject")


def test_wait_for_event_renders_correlation_and_keeps_key_expression():
    step = steps.get("wait_for_event")
    config = {"topic": "payments", "correlation": "{{ trigger.order_id }}", "key_expression": "event.order_id",
              "timeout_seconds": 30}
    assert step.start(config, CONTEXT) == AwaitEvent(topic="payments", correlation="42",
                                                     key_expression="event.order_id", timeout_seconds=30.0)
    assert step.on_event(config, CONTEXT, {"order_id": 42, "paid": True}) == Complete(
        {"order_id": 42, "paid": True}, port="event")
    assert step.on_timeout(config, CONTEXT) == Complete({"timed_out": True}, port="timeout")


def test_wait_for_event_without_correlation_value_fails():
    result = steps.get("wait_for_event").start(
        {"topic": "payments", "correlation": "{{ trigger.nothing }}", "key_expression": "event.id"}, CONTEXT)
    assert isinstance(result, Fail) and result.error.startswith("config.correlation:")


def test_event_matching_is_type_tolerant_and_safe():
    record = {"topic": "payments", "key": "42", "partition": 0, "offset": 1, "headers": {}, "timestamp": 1.0}
    assert matches("event.order_id", "42", {"order_id": 42}, record)
    assert matches("event.order_id", "42", {"order_id": 42.0}, record)
    assert matches("event.order_id", "42", {"order_id": "42"}, record)
    assert matches("record.key", "42", {}, record)
    assert not matches("event.order_id", "42", {"order_id": 43}, record)
    assert not matches("event.order_id", "42", {"other": 1}, record)  # None never matches
    assert not matches("event.order_id", "42", "not an object", record)
    assert not matches("event.__class__", "42", {}, record)  # refused by the sandbox: no match, no crash
    assert event_key("event.customer", {"customer": {"b": 1, "a": 2}}, record) == '{"a":2,"b":1}'
    assert correlation_value(True) == "true" and correlation_value(None) is None


def test_kafka_produce_emits_rendered_record():
    step = steps.get("kafka_produce")
    result = step.start({"topic": "shipments", "value": {"order": "{{ trigger.order_id }}", "all": "{{ trigger }}"},
                         "key": "{{ trigger.order_id }}", "headers": {"source": "sluice-{{ run.workflow }}"}}, CONTEXT)
    assert result == Emit(topic="shipments", value={"order": 42, "all": CONTEXT["trigger"]}, key="42",
                          headers={"source": "sluice-orders"}, output={"topic": "shipments", "key": "42"})


def test_kafka_produce_without_key_and_with_bad_topic():
    step = steps.get("kafka_produce")
    assert step.start({"topic": "t", "value": 1}, CONTEXT).key is None
    result = step.start({"topic": "{{ trigger.missing }}", "value": 1}, CONTEXT)
    assert isinstance(result, Fail) and result.error.startswith("config.topic:")


def test_engine_types_do_not_execute_and_worker_types_do_not_start():
    with pytest.raises(NotImplementedError):
        steps.get("transform").execute({}, task())
    with pytest.raises(NotImplementedError):
        steps.get("http").start({}, CONTEXT)


# ---- http, against a real server -----------------------------------------------------------
class Recorder(BaseHTTPRequestHandler):
    """Records every request; the path decides the answer."""

    requests: list = []

    def log_message(self, *args):  # keep test output clean
        pass

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        seen = {"method": self.command, "path": url.path, "query": parse_qs(url.query),
                "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body.decode()}
        Recorder.requests.append(seen)
        if url.path.startswith("/status/"):
            code = int(url.path.rsplit("/", 1)[1])
            self._send(code, "text/plain", b"upstream exploded: " + b"x" * 2000)
        elif url.path == "/echo-auth-error":
            self._send(500, "text/plain", f"bad token {seen['headers'].get('authorization')}".encode())
        elif url.path == "/slow":
            time.sleep(2)
            self._send(200, "text/plain", b"late")
        elif url.path == "/big":
            self._send(200, "text/plain", b"y" * (300 * 1024))
        elif url.path == "/text":
            self._send(200, "text/plain; charset=utf-8", "héllo".encode())
        elif url.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/echo")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(201 if self.command == "POST" else 200, "application/json", json.dumps(seen).encode(),
                       extra={"X-Trace": "abc"})

    def _send(self, code, content_type, payload, extra=None):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)) if self.command != "HEAD" else "0")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (the timeout tests): expected

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


@pytest.fixture
def server():
    Recorder.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_post_json_sends_method_body_headers_query_and_idempotency_key(server):
    output = steps.get("http").execute({
        "method": "POST", "url": f"{server}/orders", "json": {"id": 42, "items": ["a"]},
        "headers": {"Authorization": "Bearer tok-123"}, "query": {"dry": "1", "tag": ["a", "b"]},
    }, task(attempt=2))
    assert output["status"] == 201
    seen = Recorder.requests[-1]
    assert seen["method"] == "POST" and seen["path"] == "/orders"
    assert json.loads(seen["body"]) == {"id": 42, "items": ["a"]}
    assert seen["headers"]["content-type"] == "application/json"
    assert seen["headers"]["authorization"] == "Bearer tok-123"
    assert seen["headers"]["idempotency-key"] == "run-1/call/2"
    assert seen["query"] == {"dry": ["1"], "tag": ["a", "b"]}
    assert output["body"]["method"] == "POST"  # JSON responses are parsed
    assert output["headers"]["x-trace"] == "abc"


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_http_methods(server, method):
    output = steps.get("http").execute({"method": method, "url": f"{server}/thing", "body": "raw text"}, task())
    assert output["status"] == 200 and Recorder.requests[-1]["method"] == method
    assert Recorder.requests[-1]["body"] == "raw text"


def test_http_head_has_an_empty_body(server):
    output = steps.get("http").execute({"method": "HEAD", "url": f"{server}/thing"}, task())
    assert output["status"] == 200 and output["body"] == ""


def test_http_keeps_a_caller_supplied_idempotency_key(server):
    steps.get("http").execute({"url": f"{server}/x", "headers": {"idempotency-key": "mine"}}, task())
    assert Recorder.requests[-1]["headers"]["idempotency-key"] == "mine"


def test_http_text_response(server):
    output = steps.get("http").execute({"url": f"{server}/text"}, task())
    assert output["body"] == "héllo"


def test_http_500_raises_with_status_reason_and_start_of_body(server):
    with pytest.raises(UnexpectedStatus) as raised:
        steps.get("http").execute({"url": f"{server}/status/500?api_key=hidden"}, task())
    error = raised.value
    assert error.status == 500
    message = str(error)
    assert "GET http://127.0.0.1" in message and "/status/500 answered 500 Internal Server Error" in message
    assert "upstream exploded" in message
    assert "hidden" not in message  # the query string (where keys live) is not shown
    assert len(message) < 700


def test_http_error_does_not_echo_header_values(server):
    with pytest.raises(UnexpectedStatus) as raised:
        steps.get("http").execute({"url": f"{server}/echo-auth-error",
                                   "headers": {"Authorization": "Bearer tok-SECRET-9"}}, task())
    assert "tok-SECRET-9" not in str(raised.value) and "«redacted»" in str(raised.value)


@pytest.mark.parametrize("expected, ok", [(["2xx"], False), ([404], True), (["400-499"], True), (["4xx", 500], True)])
def test_http_expected_status(server, expected, ok):
    config = {"url": f"{server}/status/404", "expected_status": expected}
    if ok:
        assert steps.get("http").execute(config, task())["status"] == 404
    else:
        with pytest.raises(UnexpectedStatus):
            steps.get("http").execute(config, task())


def test_status_expected_rules():
    assert status_expected(204, None) and not status_expected(301, None)
    assert status_expected(301, ["3xx"]) and status_expected(418, ["400-420"]) and not status_expected(421, ["400-420"])


def test_http_timeout(server):
    started = time.monotonic()
    with pytest.raises(HttpStepError, match="timed out after 0.3 s"):
        steps.get("http").execute({"url": f"{server}/slow", "timeout_seconds": 0.3}, task())
    assert time.monotonic() - started < 1.9


def test_http_uses_the_step_timeout_when_config_has_none(server):
    with pytest.raises(HttpStepError, match="timed out after 0.3 s"):
        steps.get("http").execute({"url": f"{server}/slow"}, task(timeout=0.3))


def test_http_transport_error_is_clear():
    with pytest.raises(HttpStepError, match="GET http://127.0.0.1:9/nothing failed: ConnectError"):
        steps.get("http").execute({"url": "http://127.0.0.1:9/nothing?token=abc"}, task())


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "not a url", ""])
def test_http_refuses_non_http_urls(url):
    with pytest.raises(HttpStepError):
        steps.get("http").execute({"url": url}, task())


def test_http_truncates_large_bodies(server):
    output = steps.get("http").execute({"url": f"{server}/big"}, task())
    assert len(output["body"]) == 256 * 1024 and output["truncated"] is True


def test_http_redirects_only_when_asked(server):
    http = steps.get("http")
    with pytest.raises(UnexpectedStatus, match="302"):
        http.execute({"url": f"{server}/redirect"}, task())
    assert http.execute({"url": f"{server}/redirect", "follow_redirects": True}, task())["body"]["path"] == "/echo"


# ---- python -------------------------------------------------------------------------------
@pytest.fixture
def temporary_handlers():
    names = []

    def register(name, function):
        handlers.handler(name)(function)
        names.append(name)

    yield register
    for name in names:
        handlers.unregister(name)


def test_python_calls_the_registered_handler_with_input_and_context(temporary_handlers):
    calls = []

    def refund(input, ctx):
        calls.append((input, ctx))
        return {"refunded": input["amount"], "key": ctx.idempotency_key}

    temporary_handlers("tests.refund", refund)
    output = steps.get("python").execute({"handler": "tests.refund", "input": {"amount": 5}}, task(attempt=3))
    assert output == {"refunded": 5, "key": "run-1/call/3"}
    assert calls[0][1].attempt == 3


def test_python_handler_errors_propagate(temporary_handlers):
    def broken(input, ctx):
        raise ValueError("card declined")

    temporary_handlers("tests.broken", broken)
    with pytest.raises(ValueError, match="card declined"):
        steps.get("python").execute({"handler": "tests.broken"}, task())


def test_python_non_json_output_is_refused(temporary_handlers):
    temporary_handlers("tests.weird", lambda input, ctx: {"when": object()})
    with pytest.raises(HandlerOutputError, match="tests.weird"):
        steps.get("python").execute({"handler": "tests.weird"}, task())


def test_python_unknown_handler_names_the_known_ones(settings):
    settings.SLUICE_HANDLER_MODULES = ["demo.handlers"]
    with pytest.raises(handlers.HandlerNotFound) as raised:
        steps.get("python").execute({"handler": "shop.nothing"}, task())
    assert "shop.nothing" in str(raised.value) and "demo.echo" in str(raised.value)


def test_python_loads_configured_modules_on_first_miss(settings):
    import sys

    handlers.unregister("demo.echo")
    sys.modules.pop("demo.handlers", None)
    settings.SLUICE_HANDLER_MODULES = ["demo.handlers"]
    assert steps.get("python").execute({"handler": "demo.echo", "input": [1]}, task()) == [1]
