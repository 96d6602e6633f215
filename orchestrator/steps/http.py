"""http: call an HTTP endpoint (worker-run, at least once, with an Idempotency-Key header).

The worker hands `execute` a config whose templates are rendered and whose secrets are
resolved, so header values may be credentials: errors here name the method, the URL without
its query string, the status and the start of the response body, never header or query values.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from .. import secrets
from .base import StepFailure, StepType, TaskContext, as_text, json_property, template_property

MAX_BODY_BYTES = 256 * 1024
ERROR_BODY_CHARS = 500
DEFAULT_TIMEOUT_SECONDS = 30.0
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
# Headers whose values are never credentials, so error texts may keep them readable.
PLAIN_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "content-type", "user-agent"})
STATUS_RANGE_PATTERN = r"^([1-5]xx|[1-5][0-9]{2}-[1-5][0-9]{2})$"


class HttpStepError(StepFailure, RuntimeError):
    """The call did not happen or did not answer as expected (transport error, timeout, URL)."""


class UnexpectedStatus(HttpStepError):
    def __init__(self, method: str, url: str, status: int, reason: str, body: str):
        self.status = status
        self.reason = reason
        self.body = body
        super().__init__(f"{method} {url} answered {status} {reason}: {body[:ERROR_BODY_CHARS]}")


def status_expected(status: int, expected: list | None) -> bool:
    """Whether `status` is in the expected list: ints, "2xx"-style classes and "200-299" ranges."""
    for item in expected or ["2xx"]:
        if isinstance(item, int) and not isinstance(item, bool):
            if status == item:
                return True
        elif isinstance(item, str) and item.endswith("xx"):
            if status // 100 == int(item[0]):
                return True
        elif isinstance(item, str) and "-" in item:
            low, high = (int(part) for part in item.split("-", 1))
            if low <= status <= high:
                return True
    return False


def _display_url(url: httpx.URL) -> str:
    """The URL as it may appear in errors: no credentials, no query string (keys live there)."""
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


def _scrub(text: str, values: list[str]) -> str:
    """Remove header and query values from a library's error text before it leaves the step."""
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= 3:
            text = text.replace(value, "«redacted»")
    return text


def _decode_body(raw: bytes, response: httpx.Response, truncated: bool) -> Any:
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    content_type = response.headers.get("content-type", "")
    if not truncated and raw and ("json" in content_type.split(";")[0]):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


class Http(StepType):
    name = "http"
    label = "HTTP request"
    group = "Integrations"
    icon = "globe"
    description = "Call an API: send an HTTP request with an Idempotency-Key header and check the status; the response becomes the output."
    config_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "HTTP request",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "method": {
                "type": "string",
                "enum": list(METHODS),
                "title": "Method",
                "description": "HTTP method.",
                "default": "GET",
            },
            "url": template_property(
                "URL", "http:// or https:// address, e.g. https://api.example.com/orders/{{ trigger.id }}.",
                default="https://", minLength=1,
            ),
            "headers": {
                "type": "object",
                "title": "Headers",
                "description": "Request headers: names to template strings; use {{ secret('NAME') }} for credentials.",
                "default": {},
                "additionalProperties": {"type": "string"},
                "x-widget": "json",
            },
            "query": {
                "type": "object",
                "title": "Query parameters",
                "description": "Added to the URL: names to values (templates allowed).",
                "default": {},
                "additionalProperties": {"type": ["string", "number", "boolean", "array"]},
                "x-widget": "json",
            },
            "json": json_property(
                "JSON body", "Sent as application/json: any JSON, strings are templates. Leave empty to send none.",
                default=None,
            ),
            "body": template_property(
                "Raw body", "Sent as is when no JSON body is given (a template).", default=""
            ),
            "expected_status": {
                "type": "array",
                "title": "Expected status",
                "description": "Statuses that count as success: codes (201), classes (\"2xx\") or ranges (\"200-299\").",
                "default": ["2xx"],
                "minItems": 1,
                "items": {
                    "anyOf": [
                        {"type": "integer", "minimum": 100, "maximum": 599},
                        {"type": "string", "pattern": STATUS_RANGE_PATTERN},
                    ]
                },
            },
            "timeout_seconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 3600,
                "title": "Timeout (seconds)",
                "description": "Give up on the call after this long (connect plus whole response).",
                "default": DEFAULT_TIMEOUT_SECONDS,
            },
            "follow_redirects": {
                "type": "boolean",
                "title": "Follow redirects",
                "description": "Follow 3xx answers to their Location.",
                "default": False,
            },
        },
    }
    runs_on = "worker"

    def check_config(self, config: dict) -> list[tuple[str, str]]:
        problems = []
        if config.get("json") is not None and config.get("body"):
            problems.append(("body", "give either a JSON body or a raw body, not both"))
        for index, item in enumerate(config.get("expected_status") or []):
            if isinstance(item, str) and "-" in item:
                low, high = item.split("-", 1)
                if low.isdigit() and high.isdigit() and int(low) > int(high):
                    problems.append((f"expected_status[{index}]", f"range {item!r} is empty (low > high)"))
        return problems

    def execute(self, config: dict, task: TaskContext) -> dict:
        method = str(config.get("method") or "GET").upper()
        if method not in METHODS:
            raise HttpStepError(f"method {method!r} is not one of {', '.join(METHODS)}")
        headers = {str(name): as_text(value) for name, value in (config.get("headers") or {}).items()}
        query = {str(name): value for name, value in (config.get("query") or {}).items()}
        sensitive = [value for name, value in headers.items() if name.lower() not in PLAIN_HEADERS]
        sensitive += [as_text(value) for value in query.values()]
        try:
            url = httpx.URL(as_text(config.get("url") or ""))
        except (httpx.InvalidURL, TypeError) as exc:
            raise HttpStepError(f"invalid URL: {_scrub(str(exc), sensitive)}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise HttpStepError(f"URL must start with http:// or https:// and name a host, got {_display_url(url)!r}")
        shown = _display_url(url)
        if not any(name.lower() == "idempotency-key" for name in headers):
            headers["Idempotency-Key"] = task.idempotency_key
        timeout = float(config.get("timeout_seconds") or task.timeout_seconds or DEFAULT_TIMEOUT_SECONDS)
        body: dict[str, Any] = {}
        if config.get("json") is not None:
            body["json"] = config["json"]
        elif config.get("body"):
            body["content"] = as_text(config["body"]).encode()

        deadline = time.monotonic() + timeout
        try:
            with httpx.Client(timeout=timeout, follow_redirects=bool(config.get("follow_redirects"))) as client:
                with client.stream(method, url, headers=headers, params=query or None, **body) as response:
                    raw, truncated = self._read_capped(response, deadline, timeout, method, shown)
        except httpx.TimeoutException:
            raise HttpStepError(f"{method} {shown} timed out after {timeout:g} s") from None
        except httpx.HTTPError as exc:
            reason = _scrub(str(exc), sensitive) or "no details"
            raise HttpStepError(f"{method} {shown} failed: {type(exc).__name__}: {reason}") from None

        decoded = _decode_body(raw, response, truncated)
        if not status_expected(response.status_code, config.get("expected_status")):
            text = decoded if isinstance(decoded, str) else json.dumps(decoded)
            # Some servers echo the request back in errors: keep our header values out, and
            # mask secrets before the body is cut, so the cut cannot leave half of one.
            raise UnexpectedStatus(method, shown, response.status_code, response.reason_phrase,
                                   _scrub(secrets.mask_text(text), sensitive)[: ERROR_BODY_CHARS * 4])
        output = {
            "status": response.status_code,
            "headers": {name: ", ".join(response.headers.get_list(name)) for name in response.headers.keys()},
            "body": decoded,
        }
        if truncated:
            output["truncated"] = True
        return output

    @staticmethod
    def _read_capped(response: httpx.Response, deadline: float, timeout: float, method: str, shown: str):
        """At most MAX_BODY_BYTES of the body, within the total deadline."""
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            if time.monotonic() > deadline:
                raise HttpStepError(f"{method} {shown} timed out after {timeout:g} s while reading the response")
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return b"".join(chunks)[:MAX_BODY_BYTES], True
        return b"".join(chunks), False


STEP_TYPE = Http()
