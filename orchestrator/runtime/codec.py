"""Bytes and headers for Sluice's records: JSON (readable in any Kafka tool) via msgspec.

Each record carries `sluice-schema` (format version) and `sluice-kind` headers. Decoding is
strict: a record that does not match its schema raises DecodeError, and the loops send it to
the dead-letter topic instead of guessing.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..engine.state import RunState
from ..messages import (
    SCHEMA_VERSION,
    DefinitionRecord,
    HistoryEvent,
    RunCommand,
    StepTask,
    WaitSubscription,
    WindowInput,
)

DecodeError = msgspec.DecodeError

_encoder = msgspec.json.Encoder()
_run_decoder = msgspec.json.Decoder(RunCommand)
_task_decoder = msgspec.json.Decoder(StepTask)
_history_decoder = msgspec.json.Decoder(HistoryEvent)
_state_decoder = msgspec.json.Decoder(RunState)
_definition_decoder = msgspec.json.Decoder(DefinitionRecord)
_wait_decoder = msgspec.json.Decoder(WaitSubscription)
_window_input_decoder = msgspec.json.Decoder(WindowInput)


_headers_by_type: dict[type, list[tuple[str, bytes]]] = {}


def headers_for(message: Any) -> list[tuple[str, bytes]]:
    """Headers naming the record's schema version and kind (built once per kind: a hot path)."""
    headers = _headers_by_type.get(type(message))
    if headers is None:
        headers = [("sluice-schema", str(SCHEMA_VERSION).encode()), ("sluice-kind", type(message).__name__.encode())]
        _headers_by_type[type(message)] = headers
    return headers


def encode(message: Any) -> bytes:
    return _encoder.encode(message)


_CURRENT_SCHEMA = str(SCHEMA_VERSION).encode()


def _check_schema(headers) -> None:
    for name, value in headers or ():
        if name == "sluice-schema":
            # The usual case costs a bytes comparison: this runs for every record read.
            if value != _CURRENT_SCHEMA and value is not None and int(value) > SCHEMA_VERSION:
                raise DecodeError(f"record schema {value.decode()} is newer than this runner understands "
                                  f"({SCHEMA_VERSION})")
            return


def decode_run_command(value: bytes, headers=None) -> RunCommand:
    _check_schema(headers)
    return _run_decoder.decode(value)


def decode_task(value: bytes, headers=None) -> StepTask:
    _check_schema(headers)
    return _task_decoder.decode(value)


def decode_history(value: bytes, headers=None) -> HistoryEvent:
    _check_schema(headers)
    return _history_decoder.decode(value)


def decode_state(value: bytes) -> RunState:
    return _state_decoder.decode(value)


def decode_definition(value: bytes) -> DefinitionRecord:
    return _definition_decoder.decode(value)


def decode_wait(value: bytes) -> WaitSubscription:
    return _wait_decoder.decode(value)


def to_builtins(message: Any) -> Any:
    return msgspec.to_builtins(message)


def decode_window_input(value: bytes, headers=None) -> WindowInput:
    _check_schema(headers)
    return _window_input_decoder.decode(value)
