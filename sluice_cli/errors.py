"""How the CLI fails: one exception type per exit code.

Exit codes are part of the CLI's contract (scripts and CI rely on them):
0 success; 1 a failed run or a refused request (the server said no, a document is invalid, the
server cannot be reached); 2 a usage error (the command line itself is wrong).
"""

from __future__ import annotations

SUCCESS = 0
REFUSED = 1
USAGE = 2


class CliError(Exception):
    """A failure to report as one sentence; `problems` are field-level details, if any."""

    exit_code = REFUSED

    def __init__(self, message: str, problems: list[dict] | None = None, code: str = "error"):
        super().__init__(message)
        self.message = message
        self.problems = problems or []
        self.code = code

    def as_dict(self) -> dict:
        return {"error": self.message, "code": self.code, "errors": self.problems}


class UsageError(CliError):
    """The command line is wrong: a missing file, input that is not JSON, no server configured."""

    exit_code = USAGE

    def __init__(self, message: str):
        super().__init__(message, code="usage")


class RunFailed(CliError):
    """A run that ended failed or cancelled (exit 1, like any refusal)."""
