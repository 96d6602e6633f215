"""Secrets on the worker: resolve the references rendering produced, and mask every value
resolved before anything leaves the process.

Resolving (`resolve`): a rendered config carries, under `$secrets`, the positions of the
`«secret:NAME»` markers that `secret()` produced (see `orchestrator.expressions`). Only those
positions are replaced by the runner's environment variable NAME; a marker anywhere else came
from data and stays text.

Masking, as CI systems do it (GitHub Actions' secret masking is the model): every value this
process has resolved is registered with `MASKER`, and the worker runs all it emits through it:
step outputs (including HTTP response bodies and headers), errors and tracebacks, and log
lines (`MaskSecretsFilter`, installed on the console handler by settings.LOGGING, which also
catches what handler code and libraries log during an attempt). A value is also found
- inside longer text, and in its JSON-escaped, Python-repr, HTML-escaped, URL-encoded and
  base64 forms (base64 at each of the three byte alignments, so `user:secret` encoded for a
  Basic auth header is caught);
- in every later output of this process, not only in the step that resolved it: a value
  cached by a handler or a library must not leak through another step.

Short values: masking a 1-character secret would replace that character everywhere, and
not masking it would show it. GitHub Actions and Azure Pipelines skip short values (they stay
visible); Sluice refuses to resolve a secret shorter than MIN_SECRET_LENGTH characters
instead, with an error naming it, so a secret is either masked or never used. (An empty value
resolves: there is nothing to show.)
"""

from __future__ import annotations

import base64
import copy
import html
import json
import logging
import os
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus

from .expressions import SECRET_NAME, SECRET_REFS_KEY
from .steps.base import StepFailure

MASK = "«secret»"
MIN_SECRET_LENGTH = 4


class SecretError(StepFailure):
    """A secret the step refers to cannot be used (not set, too short, a broken reference)."""


# ---- resolving -----------------------------------------------------------------------------
def _pointer_parts(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise SecretError(f"secret reference {pointer!r} is not a JSON pointer")
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def _secret_value(name: str, environ) -> str:
    if name not in environ:
        raise SecretError(f"secret {name!r} is not set in this runner's environment")
    value = environ[name]
    if 0 < len(value) < MIN_SECRET_LENGTH:
        raise SecretError(f"secret {name!r} is shorter than {MIN_SECRET_LENGTH} characters: Sluice does not use "
                          "values it could not mask in outputs and logs without hiding ordinary text")
    return value


def resolve(config: Any, environ=None) -> Any:
    """`config` (a rendered config from a StepTask) with its secret references replaced by
    values from `environ` (the runner's environment by default). Every value used is
    registered with MASKER. The `$secrets` entry is removed; `config` itself is not changed."""
    if not isinstance(config, dict) or SECRET_REFS_KEY not in config:
        return config
    environ = os.environ if environ is None else environ
    refs = config[SECRET_REFS_KEY]
    resolved = copy.deepcopy({key: value for key, value in config.items() if key != SECRET_REFS_KEY})
    by_pointer: dict[str, list[tuple[int, str]]] = {}
    for ref in refs if isinstance(refs, list) else [refs]:
        if not (isinstance(ref, dict) and isinstance(ref.get("at"), str) and isinstance(ref.get("offset"), int)
                and isinstance(ref.get("name"), str) and SECRET_NAME.fullmatch(ref["name"])):
            raise SecretError(f"the step's secret references are malformed: {ref!r}")
        by_pointer.setdefault(ref["at"], []).append((ref["offset"], ref["name"]))
    for pointer, entries in by_pointer.items():
        parent, key = _locate(resolved, pointer)
        text = parent[key]
        if not isinstance(text, str):
            raise SecretError(f"secret reference at {pointer!r} does not point at a text in the step's config")
        # From the last marker to the first, so earlier offsets stay valid.
        for offset, name in sorted(entries, reverse=True):
            marker = f"«secret:{name}»"
            if text[offset:offset + len(marker)] != marker:
                raise SecretError(f"secret reference to {name!r} at {pointer!r} does not match the step's config")
            value = _secret_value(name, environ)
            MASKER.add(value)
            text = text[:offset] + value + text[offset + len(marker):]
        parent[key] = text
    return resolved


def _locate(document: Any, pointer: str) -> tuple[Any, Any]:
    """The container holding the value at `pointer`, and its key."""
    parts = _pointer_parts(pointer)
    if not parts:
        raise SecretError("a secret reference points at the whole config, not at a text in it")
    node = document
    for part in parts[:-1]:
        node = _child(node, part, pointer)
    last = parts[-1]
    if isinstance(node, list):
        last = _index(node, last, pointer)
    elif not isinstance(node, dict) or last not in node:
        raise SecretError(f"secret reference at {pointer!r} does not point into the step's config")
    return node, last


def _index(node: list, part: str, pointer: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise SecretError(f"secret reference at {pointer!r} does not point into the step's config")
    return int(part)


def _child(node: Any, part: str, pointer: str) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list):
        return node[_index(node, part, pointer)]
    raise SecretError(f"secret reference at {pointer!r} does not point into the step's config")


# ---- masking -------------------------------------------------------------------------------
def _base64_forms(raw: bytes) -> set[str]:
    """The base64 text that encodes `raw` wherever it sits in a longer byte string: at each of
    the three alignments, the characters that only depend on `raw`'s own bytes."""
    forms = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        forms.add(encode(raw).decode().rstrip("="))
        for shift in range(3):
            # `shift` bytes of unknown text before `raw` complete the first group: skip to the
            # next group boundary, then keep only complete groups.
            start = (3 - shift) % 3
            whole = (len(raw) - start) // 3 * 3
            if whole > 0:
                forms.add(encode(raw[start:start + whole]).decode())
    return forms


def forms_of(value: str) -> set[str]:
    """`value` and the encodings in which it shows up in JSON, tracebacks, HTML, URLs, base64."""
    forms = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        html.escape(value),
        html.escape(value, quote=False),
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
    }
    forms |= _base64_forms(value.encode())
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


class Masker:
    """The secret values this process has resolved, and the pattern that finds them."""

    def __init__(self):
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self.pattern: re.Pattern | None = None

    def add(self, value: str) -> None:
        if not value or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            forms = set().union(*(forms_of(known) for known in self._values))
            # Longest first, so a secret that contains another is hidden whole.
            ordered = sorted(forms, key=len, reverse=True)
            self.pattern = re.compile("|".join(re.escape(form) for form in ordered)) if ordered else None

    def forget_all(self) -> None:
        """For tests: a fresh process has resolved nothing."""
        with self._lock:
            self._values.clear()
            self.pattern = None

    def text(self, text: str) -> str:
        pattern = self.pattern
        if pattern is None or not isinstance(text, str):
            return text
        return pattern.sub(MASK, text)

    def value(self, value: Any) -> Any:
        """A JSON value with every secret masked in its strings, keys and numbers."""
        pattern = self.pattern
        if pattern is None:
            return value
        return self._walk(value, pattern)

    def _walk(self, value: Any, pattern: re.Pattern) -> Any:
        if isinstance(value, str):
            return pattern.sub(MASK, value)
        if isinstance(value, dict):
            return {pattern.sub(MASK, str(key)): self._walk(item, pattern) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._walk(item, pattern) for item in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and pattern.search(str(value)):
            return MASK  # a secret that is a number, returned as one
        return value


MASKER = Masker()


def mask(value: Any) -> Any:
    """`value` (JSON data) with every secret this process resolved replaced by «secret»."""
    return MASKER.value(value)


def mask_text(text: str) -> str:
    return MASKER.text(text)


class MaskSecretsFilter(logging.Filter):
    """Masks resolved secrets in log records (message, exception and stack text) before any
    handler writes them. settings.LOGGING installs it on the console handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if MASKER.pattern is None:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: logging reports it
            return True
        masked = MASKER.text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = MASKER.text(record.exc_text)
        if record.stack_info:
            record.stack_info = MASKER.text(record.stack_info)
        return True
