"""Trigger control: `trigger pause|resume|status SLUG` over /api/workflows/<slug>/trigger/.

Pausing stops a workflow's trigger on every runner and keeps it stopped across restarts:
Kafka records wait in their topic (on resume the backlog drains at the trigger's
`max_runs_per_second`), schedule ticks and webhook calls start nothing. Runs started by hand
still start. `status` shows the backlog in records.
"""

from __future__ import annotations

from . import output
from .client import Client, api_path
from .errors import SUCCESS


def _when(state: dict) -> str:
    who = f" by {state['paused_by']}" if state.get("paused_by") else ""
    at = output.local_time(state.get("paused_at"))
    return f"{who}{' at ' + at if at else ''}"


def pause(args, client: Client) -> int:
    return _control(args, client, "pause")


def resume(args, client: Client) -> int:
    return _control(args, client, "resume")


def _control(args, client: Client, action: str) -> int:
    state = client.post(api_path("workflows", args.slug, "trigger", action), {})
    if args.json:
        output.print_json(state)
    elif state.get("paused"):
        print(f"the {state.get('type', '')} trigger of {args.slug} is paused{_when(state)}; "
              f"records wait in the topic, schedules and webhooks start nothing")
    else:
        print(f"the {state.get('type', '')} trigger of {args.slug} is running{_when(state)}")
    return SUCCESS


def status(args, client: Client) -> int:
    state = client.get(api_path("workflows", args.slug, "trigger"))
    if args.json:
        output.print_json(state)
        return SUCCESS
    kind = state.get("type", "")
    where = f" on {state['topic']}" if state.get("topic") else ""
    print(f"{args.slug}: {kind} trigger{where}, {'paused' + _when(state) if state.get('paused') else 'running'}"
          + ("" if state.get("live") else " (no live version)"))
    if state.get("topic"):
        if state.get("lag") is None:
            print(f"lag: unknown{': ' + state['error'] if state.get('error') else ''}")
        else:
            unread = state.get("unread_partitions") or 0
            note = f" ({unread} partition{'s' if unread != 1 else ''} not read yet)" if unread else ""
            print(f"lag: {state['lag']} record{'s' if state['lag'] != 1 else ''}{note}")
        if state.get("max_runs_per_second"):
            print(f"rate limit: {state['max_runs_per_second']:g} runs per second")
        if state.get("windowed"):
            print(f"late records: {state.get('late_records') or 0} (dropped by the windows since the runners started)")
    return SUCCESS
