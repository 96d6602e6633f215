"""How a failed step attempt reads in history, the API and the run page.

Two shapes, so the reader sees what went wrong before any code:
- an error Sluice or the step explains in full (a bad config value, a missing secret, an
  unknown handler, an HTTP answer the step did not expect): that one message, nothing else. A
  traceback there would only show Sluice's own code and the server's paths;
- any other exception (a handler's own error, a bug): a summary line, a blank line, then the
  traceback, starting at the first frame outside Sluice (the handler's code), paths shown
  relative to the project or to site-packages. Pages fold everything after the first blank
  line (`split_failure`).
"""

from __future__ import annotations

import os
import sysconfig
import traceback
from pathlib import Path

from ..expressions import ExpressionError
from ..handlers import HandlerNotFound
from .base import StepFailure

EXPLAINED = (StepFailure, ExpressionError, HandlerNotFound)
MAX_FRAMES = 12
TRACEBACK_SEPARATOR = "\n\n"

_SLUICE_PACKAGE = str(Path(__file__).resolve().parent.parent) + os.sep
_PROJECT = str(Path(__file__).resolve().parent.parent.parent) + os.sep
_LIBRARIES = sorted({path + os.sep for key in ("purelib", "platlib", "stdlib", "platstdlib")
                     if (path := sysconfig.get_paths().get(key))}, key=len, reverse=True)


def _short_path(filename: str) -> str:
    for library in _LIBRARIES:
        if filename.startswith(library):
            return filename[len(library):]
    if filename.startswith(_PROJECT):
        return filename[len(_PROJECT):]
    return os.path.basename(filename)


def _trim(stack: traceback.StackSummary) -> None:
    """Drop Sluice's own frames before the handler's, keep the last MAX_FRAMES, shorten paths."""
    frames = list(stack)
    first_outside = next((index for index, frame in enumerate(frames)
                          if not frame.filename.startswith(_SLUICE_PACKAGE)), 0)
    frames = frames[first_outside:][-MAX_FRAMES:]
    for frame in frames:
        frame.filename = _short_path(frame.filename)
    stack[:] = frames


def describe_failure(exc: BaseException) -> str:
    """The text a worker reports for an attempt that raised `exc` (see the module doc)."""
    summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if isinstance(exc, EXPLAINED):
        return str(exc).strip() or summary
    details = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    seen, chain = set(), [details]
    while chain:
        current = chain.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        _trim(current.stack)
        chain += [linked for linked in (current.__cause__, current.__context__) if linked is not None]
    return summary + TRACEBACK_SEPARATOR + "".join(details.format()).rstrip()


def split_failure(error: str) -> tuple[str, str]:
    """(summary, folded details) of a reported error; details are "" for explained errors."""
    summary, _, details = (error or "").partition(TRACEBACK_SEPARATOR)
    return summary, details
