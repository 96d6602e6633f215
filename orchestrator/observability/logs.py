"""Structured logs: which run and step a log line belongs to, and one JSON object per line.

The engine and worker loops set RUN_ID / STEP_ID (context variables, so each thread and each
handler call sees its own) around the processing of a record; ContextFilter copies them onto
every log record, unless the call passed them itself in `extra`. With SLUICE_LOG_FORMAT=json
(settings.LOGGING) JsonFormatter writes each record as one JSON object.

The formatter writes a fixed set of fields, never every attribute of the record: a log call's
`extra` could carry a step's config or output, which the secret-masking filter does not look
at (it masks the message and the exception text, which is all that is written here).
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar, Token
from datetime import datetime, timezone

RUN_ID: ContextVar[str | None] = ContextVar("sluice_run_id", default=None)
STEP_ID: ContextVar[str | None] = ContextVar("sluice_step_id", default=None)


def bind(run_id: str | None = None, step_id: str | None = None) -> tuple[Token, Token]:
    """Name the run and step of the log lines that follow (in this thread); undo with unbind."""
    return RUN_ID.set(run_id), STEP_ID.set(step_id)


def unbind(tokens: tuple[Token, Token]) -> None:
    run_token, step_token = tokens
    STEP_ID.reset(step_token)
    RUN_ID.reset(run_token)


class ContextFilter(logging.Filter):
    """Adds `run_id` and `step_id` to each record (None where there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_id", None) is None:
            record.run_id = RUN_ID.get()
        if getattr(record, "step_id", None) is None:
            record.step_id = STEP_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, process, thread, and run_id,
    step_id and exception where there are any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        for name in ("run_id", "step_id"):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)
