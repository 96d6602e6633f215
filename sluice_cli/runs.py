"""Runs: `run`, `runs list|get|cancel|retry` and `signal`.

A run's outcome is the exit code of `run --wait` and `run --follow`: 0 when it succeeded, 1 when
it failed or was cancelled, so a CI step can run a workflow and fail with it.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from . import follow, output
from .client import Client, api_path
from .errors import SUCCESS, RunFailed, UsageError


def json_argument(option: str, text: str | None) -> Any:
    """A JSON value given inline, as @FILE (JSON, or YAML for .yaml/.yml), or @- for stdin."""
    if text is None:
        return None
    source = "the value"
    if text.startswith("@"):
        name = text[1:]
        source = "stdin" if name == "-" else name
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise UsageError(f"{option}: cannot read {name}: {exc.strerror}") from None
        if name.lower().endswith((".yaml", ".yml")):
            from .documents import DocumentError, load_file

            try:
                loaded = load_file(name)
            except DocumentError as exc:
                raise UsageError(f"{option}: {exc.message}") from None
            return loaded[0].data
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option}: {source} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                         "quote it for the shell, e.g. --input '{\"name\": \"Ada\"}', or pass @file.json") from None


# ---- run --------------------------------------------------------------------------------------
def run(args, client: Client) -> int:
    body = {} if args.input is None else {"input": json_argument("--input", args.input)}
    started = client.post(api_path("workflows", args.slug, "runs"), body)
    run_id = started["id"]
    if not (args.wait or args.follow):
        if args.json:
            output.print_json(started)
        else:
            print(f"started run {run_id} of {started['workflow']} version {started['version']}")
        return SUCCESS
    if args.follow:
        if args.json:
            output.print_json_line({"event": "run_started", **started})
        else:
            print(f"run {run_id} of {started['workflow']} version {started['version']}: following "
                  "(Ctrl-C stops following; the run goes on)", flush=True)
    ranks = _step_ranks(client, started["workflow"], started["version"]) if args.follow else None
    finished = _watch(client, run_id, args, ranks)
    return _outcome(finished, args)


def _step_ranks(client: Client, slug: str, version: int) -> dict | None:
    """The workflow's step order, so steps finished at one instant print in the order they ran."""
    from .client import ApiError

    try:
        return follow.graph_ranks(client.get(api_path("workflows", slug, "versions", version)).get("definition") or {})
    except ApiError:
        return None  # following works without it; lines at one instant then come alphabetically


def _watch(client: Client, run_id: str, args, ranks: dict | None = None) -> dict:
    def show(event: follow.StepEvent) -> None:
        if args.json:
            output.print_json_line(event.as_dict())
        else:
            # Skipped steps carry no time: they are shown when they are seen.
            when = output.local_time(event.at, with_date=False) or datetime.now().strftime("%H:%M:%S")
            print(f"{when}  {event.describe()}", flush=True)

    try:
        return follow.watch(client, run_id, show if args.follow else None, timeout=args.timeout, step_ranks=ranks)
    except KeyboardInterrupt:
        print(f"\nstopped following run {run_id}; it goes on (`sluice runs get {run_id}`)", file=sys.stderr)
        raise SystemExit(130) from None


def _outcome(run: dict, args) -> int:
    """Print how the run ended; exit 0 only if it succeeded."""
    status = run["status"]
    if args.json:
        if args.follow:
            output.print_json_line({"event": f"run_{status}", "run": run})
        else:
            output.print_json(run)
    else:
        took = f" in {output.seconds(run.get('duration_seconds'))}" if run.get("duration_seconds") is not None else ""
        reason = f": {output.one_line(run.get('error'), 300)}" if run.get("error") else ""
        print(f"run {run['id']} {status}{took}{reason}")
        if status == "succeeded" and run.get("output") is not None:
            print(f"output: {json.dumps(run['output'], ensure_ascii=False)}")
    if status == "succeeded":
        return SUCCESS
    # The outcome is already printed; the error only carries the exit code.
    raise RunFailed("", code=f"run_{status}")


# ---- runs -------------------------------------------------------------------------------------
def runs_list(args, client: Client) -> int:
    page = client.get("runs/", {"workflow": args.workflow, "status": args.status, "page_size": args.limit})
    results = page.get("results", [])
    if args.json:
        output.print_json(page)
        return SUCCESS
    if not results:
        print("no runs")
        return SUCCESS
    rows = [[run["id"], run["workflow"], run["version"], run["status"], output.local_time(run.get("created_at")),
             output.seconds(run.get("duration_seconds")), output.one_line(run.get("error"), 60)] for run in results]
    print(output.table(rows, ["ID", "WORKFLOW", "VERSION", "STATUS", "CREATED", "DURATION", "ERROR"]))
    if page.get("count", len(results)) > len(results):
        print(f"({len(results)} of {page['count']}; --limit N shows more)")
    return SUCCESS


def runs_get(args, client: Client) -> int:
    if args.wait or args.follow:
        return _watch_existing(args, client)
    run = client.get(api_path("runs", args.run_id))
    if args.json:
        output.print_json(run)
        return SUCCESS
    took = f" in {output.seconds(run.get('duration_seconds'))}" if run.get("duration_seconds") is not None else ""
    print(f"run {run['id']}: {run['workflow']} version {run['version']}, {run['status']}{took}")
    trigger = run.get("trigger") or {}
    print(f"  started by {run.get('started_by') or trigger.get('type') or 'unknown'} "
          f"at {output.local_time(run.get('started_at') or run.get('created_at'))} (trigger: {trigger.get('type', '?')})")
    if run.get("error"):
        print(f"  error:  {output.one_line(run['error'], 300)}")
    print(f"  input:  {json.dumps(run.get('input'), ensure_ascii=False)}")
    if run.get("output") is not None:
        print(f"  output: {json.dumps(run['output'], ensure_ascii=False)}")
    steps = run.get("steps") or []
    if steps:
        ranks = _step_ranks(client, run["workflow"], run["version"]) or {}
        steps = sorted(steps, key=lambda step: (output.parse_time(step.get("started_at")) or follow.LATEST,
                                                ranks.get(step.get("step_id"), len(ranks))))
        rows = []
        for step in steps:
            started, ended = output.parse_time(step.get("started_at")), output.parse_time(step.get("ended_at"))
            finished = step.get("status") in follow.STEP_ENDINGS
            took = output.seconds((ended - started).total_seconds()) if started and ended and finished else ""
            detail = step.get("error") or (f"port {step['port']}" if step.get("port") not in (None, "", "out") else "")
            rows.append([step["step_id"], step.get("type", ""), step["status"], len(step.get("attempts") or []),
                         took, output.one_line(detail, 60)])
        print()
        print(output.table(rows, ["STEP", "TYPE", "STATUS", "ATTEMPTS", "DURATION", "DETAIL"]))
    return SUCCESS


def _watch_existing(args, client: Client) -> int:
    """`runs get ID --wait|--follow`: like `run --wait|--follow`, for a run started elsewhere."""
    run = client.get(api_path("runs", args.run_id))
    ranks = _step_ranks(client, run["workflow"], run["version"]) if args.follow else None
    if args.follow and not args.json:
        print(f"run {run['id']} of {run['workflow']} version {run['version']}: following "
              "(Ctrl-C stops following; the run goes on)", flush=True)
    return _outcome(_watch(client, run["id"], args, ranks), args)


def _accepted(args, answer: dict, text: str) -> int:
    if args.json:
        output.print_json(answer)
    else:
        print(text)
    return SUCCESS


def runs_cancel(args, client: Client) -> int:
    answer = client.post(api_path("runs", args.run_id, "cancel"), {"reason": args.reason or ""})
    return _accepted(args, answer, f"cancel sent to run {args.run_id}")


def runs_retry(args, client: Client) -> int:
    if args.input is None:
        answer = client.post(api_path("runs", args.run_id, "retry"), {})
        return _accepted(args, answer, f"retry sent: run {args.run_id} resumes from its failed steps")
    answer = client.post(api_path("runs", args.run_id, "retry"), {"input": json_argument("--input", args.input)})
    return _accepted(args, answer, f"started run {answer['new_run']} with the new input (a retry of {args.run_id})")


def signal(args, client: Client) -> int:
    payload = json_argument("--payload", args.payload)
    answer = client.post(api_path("runs", args.run_id, "signal"), {"name": args.name, "payload": payload})
    return _accepted(args, answer, f"signal {args.name!r} sent to run {args.run_id}")
