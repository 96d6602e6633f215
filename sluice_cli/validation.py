"""`sluice validate`: the server's own validator (orchestrator.spec), offline, with file and line.

orchestrator.spec is pure (no Django settings, no database, no Kafka), so a CI job can check
workflow files without a server and get exactly the answers the server would give.
"""

from __future__ import annotations

from .documents import Document
from .output import describe_problem


def problems(document: Document) -> list[dict]:
    """Every problem of one document (errors and warnings), each with its file and line."""
    from orchestrator import spec

    return [located(document, problem.as_dict()) for problem in spec.validate(document.data)]


def located(document: Document, problem: dict) -> dict:
    """A problem (from the validator or a server answer) with the file and line it points at."""
    return {**problem, "file": document.file, "line": document.line_for(problem.get("path") or ""),
            "severity": problem.get("severity") or "error"}


def format_problem(problem: dict) -> str:
    """`flows/orders.yaml:14: error: steps[1].config.url (step charge): required: ...`"""
    return f"{problem['file']}:{problem['line']}: {problem['severity']}: {describe_problem(problem)}"


def errors(found: list[dict]) -> list[dict]:
    return [problem for problem in found if problem["severity"] == "error"]
