"""Printing: JSON for scripts (`--json`), short aligned text for people, problems as file:line."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False), flush=True)


def print_json_line(data: Any) -> None:
    """One JSON object per line, for streams (`run --follow --json`)."""
    print(json.dumps(data, ensure_ascii=False, separators=(",", ":")), flush=True)


def table(rows: list[list[Any]], headers: list[str]) -> str:
    """Columns padded to their widest cell; the last column is left ragged."""
    cells = [[str(header) for header in headers]] + [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1])] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def local_time(value: Any, with_date: bool = True) -> str:
    """A server timestamp (ISO 8601, UTC) in the reader's local time."""
    moment = parse_time(value)
    if moment is None:
        return ""
    moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def seconds(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


def one_line(text: Any, limit: int = 80) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_problem(problem: dict) -> str:
    """`steps[1].config.url (step charge): message`, as the validator and the server name it."""
    path = problem.get("path") or "(definition)"
    step = f" (step {problem['step_id']})" if problem.get("step_id") else ""
    return f"{path}{step}: {problem.get('message', '')}"


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
