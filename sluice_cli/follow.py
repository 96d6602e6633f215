"""Following a run: each step's start and end as it happens, by polling the REST API.

Why polling and not the monitor's websocket: the websocket signs in with the browser's session
cookie (Channels' AuthMiddlewareStack) behind an Origin check, and has no token sign-in; giving
it one would widen the server's security surface for a client that does not need it. Polling
`GET /api/runs/<id>/` uses the same token and permission checks as every other command and reads
the same projected rows the monitor pages show, at one small request every half second while
someone watches. The cost: a line can appear up to half a second late, and a step shorter than
that shows its start and end together, still in their real order (lines are sorted by the
times the runner recorded, not by when the CLI saw them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from .client import ApiError, Client, api_path
from .errors import CliError
from .output import one_line, parse_time, seconds

POLL_SECONDS = 0.5
# Polls in a row that may fail (server unreachable, 502-504) before following gives up: about 40 s.
MAX_MISSED_POLLS = 10
FINISHED = ("succeeded", "failed", "cancelled")
STEP_ENDINGS = ("succeeded", "failed", "skipped", "cancelled")
LATEST = datetime.max.replace(tzinfo=timezone.utc)
# Among events at one instant of one step: its start, a failed attempt, waiting, then its end.
_KIND_RANK = {"started": 0, "retrying": 1, "waiting": 2}


@dataclass(frozen=True)
class StepEvent:
    key: tuple  # what makes it the same event on the next poll
    at: str | None  # when the runner says it happened (ISO 8601)
    kind: str  # started, retrying, waiting, succeeded, failed, skipped, cancelled
    step_id: str
    step_type: str
    attempt: int
    detail: str = ""

    def as_dict(self) -> dict:
        return {"event": f"step_{self.kind}", "step_id": self.step_id, "type": self.step_type,
                "attempt": self.attempt, "at": self.at, "detail": self.detail or None}

    def describe(self) -> str:
        return f"{self.step_id:<16} {self.step_type:<14} {self.kind}{self.detail}"


def step_events(step: dict) -> list[StepEvent]:
    """The events a step's projected row shows so far (its attempts, then where it stands)."""
    step_id, step_type = step.get("step_id", "?"), step.get("type") or ""
    status = step.get("status") or ""
    attempts = [attempt for attempt in step.get("attempts") or [] if isinstance(attempt, dict)]
    events: list[StepEvent] = []
    for position, attempt in enumerate(attempts):
        number = attempt.get("attempt") or 1
        if attempt.get("started_at"):
            detail = f" (attempt {number})" if number > 1 else ""
            events.append(StepEvent(("started", step_id, number), attempt["started_at"], "started",
                                    step_id, step_type, number, detail))
        final_failure = status == "failed" and position == len(attempts) - 1
        if attempt.get("error") and not final_failure:
            backoff = attempt.get("backoff_seconds")
            later = f"; next attempt in {seconds(backoff)}" if backoff is not None else ""
            events.append(StepEvent(("retrying", step_id, number), attempt.get("ended_at") or attempt.get("started_at"),
                                    "retrying", step_id, step_type, number,
                                    f": attempt {number} failed: {first_line(attempt['error'])}{later}"))
    count = max([attempt.get("attempt") or 1 for attempt in attempts], default=1)
    if status == "running" and not attempts:
        events.append(StepEvent(("started", step_id, 1), step.get("started_at"), "started", step_id, step_type, 1))
    if status == "waiting":
        events.append(StepEvent(("waiting", step_id, count), step.get("started_at"), "waiting", step_id, step_type,
                                count, _waiting_for(step_type)))
    if status in STEP_ENDINGS:
        last = attempts[-1] if attempts else {}
        events.append(StepEvent((status, step_id, count), step.get("ended_at") or last.get("ended_at")
                                or step.get("started_at"), status, step_id, step_type, count,
                                _ending_detail(status, step, last)))
    return events


def first_line(text: str) -> str:
    """An error's first line (a handler's error carries its traceback after it)."""
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return one_line(lines[0] if lines else "", 200)


def _waiting_for(step_type: str) -> str:
    return {"approval": " for a decision (sluice signal)", "wait_for_event": " for an event",
            "delay": " (delay)"}.get(step_type, "")


def _ending_detail(status: str, step: dict, last: dict) -> str:
    if status == "failed":
        return f": {first_line(step.get('error') or last.get('error') or 'no reason given')}"
    if status != "succeeded":
        return ""
    started, ended = parse_time(last.get("started_at") or step.get("started_at")), parse_time(step.get("ended_at"))
    took = f" in {seconds((ended - started).total_seconds())}" if started and ended else ""
    port = step.get("port") or ""
    return took + (f", port {port}" if port and port != "out" else "")


def new_events(run: dict, seen: set, step_ranks: dict[str, int] | None = None) -> list[StepEvent]:
    """Events of `run` not in `seen` (which is updated), oldest first."""
    fresh: list[StepEvent] = []
    for step in run.get("steps") or []:
        for event in step_events(step):
            if event.key in seen:
                continue
            seen.add(event.key)
            # A step that was shown waiting has been shown started (its start time is only
            # filled in when it ends).
            if event.kind == "started" and ("waiting",) + event.key[1:] in seen:
                continue
            fresh.append(event)
    order = {id(event): index for index, event in enumerate(fresh)}
    ranks = step_ranks or {}
    return sorted(fresh, key=lambda event: (parse_time(event.at) or LATEST, ranks.get(event.step_id, len(ranks)),
                                            _KIND_RANK.get(event.kind, 3), order[id(event)]))


def graph_ranks(definition: dict) -> dict[str, int]:
    """Each step's place in a topological order of the workflow (definition order among equals).

    Steps the engine decides in one batch share one timestamp; this puts their lines in the
    order they ran (a step before the steps after it), not in alphabetical order.
    """
    steps = [step.get("id") for step in definition.get("steps") or [] if isinstance(step, dict)]
    incoming = {step: 0 for step in steps}
    outgoing: dict[str, list[str]] = {step: [] for step in steps}
    for edge in definition.get("edges") or []:
        if not isinstance(edge, dict):
            continue
        source, target = edge.get("from"), edge.get("to")
        if source in outgoing and target in incoming:
            outgoing[source].append(target)
            incoming[target] += 1
    ready = [step for step in steps if incoming[step] == 0]
    ranks: dict[str, int] = {}
    while ready:
        step = ready.pop(0)
        ranks[step] = len(ranks)
        for target in outgoing[step]:
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    return ranks


def watch(client: Client, run_id: str, on_event: Callable[[StepEvent], Any] | None = None,
          timeout: float | None = None, interval: float = POLL_SECONDS, step_ranks: dict | None = None) -> dict:
    """Poll the run until it has finished; call `on_event` for each step event; return the run."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: set = set()
    missed = 0
    while True:
        try:
            run = client.get(api_path("runs", run_id))
        except CliError as exc:
            # A web process restarting (`manage.py up` restarts a crashed child) should not end
            # a follow that may have run for an hour; anything else is a real answer.
            if not _transient(exc) or missed >= MAX_MISSED_POLLS:
                raise
            missed += 1
            if deadline is not None and time.monotonic() >= deadline:
                raise
            time.sleep(min(interval * 2 ** missed, 5.0))
            continue
        missed = 0
        for event in new_events(run, seen, step_ranks):
            if on_event is not None:
                on_event(event)
        if run.get("status") in FINISHED:
            return run
        if deadline is not None and time.monotonic() >= deadline:
            raise CliError(f"run {run_id} is still {run.get('status')} after {timeout:g} s; it goes on "
                           f"(`sluice runs get {run_id}` shows where it is)", code="timeout")
        time.sleep(interval)


def _transient(error: CliError) -> bool:
    if isinstance(error, ApiError):
        return error.status in (502, 503, 504)
    return error.code == "unreachable"
