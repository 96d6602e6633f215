"""The `sluice` command line: arguments, configuration, and the exit code of every command.

Every command takes --json (machine-readable output on stdout; errors as a JSON object on
stderr). Exit codes: 0 success, 1 a failed run or a refused request, 2 a usage error.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from . import __version__, config, output
from .errors import SUCCESS, USAGE, CliError, UsageError

RUN_STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be 1 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _add_watch_options(parser: argparse.ArgumentParser) -> None:
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--wait", action="store_true", help="wait for the run to end; exit 1 unless it succeeded")
    how.add_argument("--follow", action="store_true",
                     help="print each step as it starts and ends; exit 1 unless the run succeeded")
    parser.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                        help="with --wait or --follow: give up waiting after this long (exit 1)")


def build_parser() -> argparse.ArgumentParser:
    json_help = "machine-readable output (JSON on stdout)"
    # --json is accepted before and after the command; a sub-command's default must not undo
    # `sluice --json runs list`, hence SUPPRESS (argparse then leaves the attribute alone).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=json_help)

    parser = argparse.ArgumentParser(
        prog="sluice",
        description="Command-line client of a Sluice server: workflows as code, runs and dead letters.",
        epilog="Server and token: SLUICE_URL and SLUICE_TOKEN, or `sluice login`. "
               "Exit codes: 0 success, 1 failed run or refused request, 2 usage error.")
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(group, name: str, handler, help: str, server: bool = True, **kwargs):
        sub = group.add_parser(name, parents=[common], help=help, description=help, **kwargs)
        sub.set_defaults(handler=handler, needs_server=server)
        return sub

    from . import dead_letters, runs, triggers, workflows

    login = command(commands, "login", _login, "check a token against a server and store both for later commands",
                    server=False)
    login.add_argument("--url", help="the server's address, e.g. http://127.0.0.1:8000 (default: SLUICE_URL, "
                                     "else asked)")
    login.add_argument("--with-token", action="store_true",
                       help="read the token from stdin instead of asking (for scripts: `sluice login "
                            "--url URL --with-token < token.txt`)")
    command(commands, "logout", _logout, "forget the stored server and token", server=False)

    validate = command(commands, "validate", workflows.validate,
                       "check workflow files offline with the server's validator", server=False)
    validate.add_argument("files", nargs="+", metavar="FILE", help="JSON or YAML files, or directories of them")

    apply = command(commands, "apply", workflows.apply,
                    "create or update every workflow in a file or directory (unchanged ones are left alone)")
    apply.add_argument("-f", "--file", action="append", required=True, metavar="PATH",
                       help="a JSON or YAML file, or a directory of them (repeatable)")
    apply.add_argument("--publish", action="store_true", help="also make each applied version live")
    apply.add_argument("-m", "--message", help="save message stored with each new version")

    diff = command(commands, "diff", workflows.diff, "show what `apply` would change on the server")
    diff.add_argument("-f", "--file", action="append", required=True, metavar="PATH",
                      help="a JSON or YAML file, or a directory of them (repeatable)")

    export = command(commands, "export", workflows.export, "print a workflow's stored definition")
    export.add_argument("slug")
    export.add_argument("--version", type=_positive, metavar="N", help="this version (default: the newest)")
    export.add_argument("--yaml", action="store_true", help="as YAML (default: JSON)")

    run = command(commands, "run", runs.run, "start a run of a workflow's live version")
    run.add_argument("slug")
    run.add_argument("--input", metavar="JSON", help="the run's input: JSON, @FILE (JSON or YAML) or @- (stdin)")
    _add_watch_options(run)

    runs_group = commands.add_parser("runs", parents=[common], help="list, inspect, cancel and retry runs",
                                     description="list, inspect, cancel and retry runs")
    runs_commands = runs_group.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)
    listing = command(runs_commands, "list", runs.runs_list, "runs you may watch, newest first")
    listing.add_argument("--workflow", metavar="SLUG")
    listing.add_argument("--status", choices=RUN_STATUSES)
    listing.add_argument("--limit", type=_positive, default=20, metavar="N", help="at most N runs (default 20)")
    get = command(runs_commands, "get", runs.runs_get, "a run with its steps")
    get.add_argument("run_id", metavar="ID")
    _add_watch_options(get)
    cancel = command(runs_commands, "cancel", runs.runs_cancel, "cancel a run that has not finished")
    cancel.add_argument("run_id", metavar="ID")
    cancel.add_argument("--reason", help="why (kept in the audit log and the run's error)")
    retry = command(runs_commands, "retry", runs.runs_retry,
                    "resume a failed or cancelled run from its failed steps, or with --input start it again")
    retry.add_argument("run_id", metavar="ID")
    retry.add_argument("--input", metavar="JSON",
                       help="start a new run of the same version with this input instead (JSON, @FILE or @-)")

    signal = command(commands, "signal", runs.signal, "send a named signal to a run (e.g. an approval decision)")
    signal.add_argument("run_id", metavar="ID")
    signal.add_argument("name", help="the signal's name (an approval step's signal, by default its step id)")
    signal.add_argument("--payload", metavar="JSON",
                        help='the signal\'s payload, e.g. \'{"approved": true}\' (JSON, @FILE or @-)')

    trigger = commands.add_parser("trigger", parents=[common], help="pause, resume and inspect a workflow's trigger",
                                  description="pause, resume and inspect a workflow's trigger")
    trigger_commands = trigger.add_subparsers(dest="trigger_command", metavar="COMMAND", required=True)
    for name, handler, text in (
            ("pause", triggers.pause, "pause a workflow's trigger on every runner (records wait in the topic; "
                                      "schedules and webhooks start nothing)"),
            ("resume", triggers.resume, "resume a paused trigger (the backlog drains at its max_runs_per_second)"),
            ("status", triggers.status, "whether the trigger is paused, and its backlog in records")):
        command(trigger_commands, name, handler, text).add_argument("slug", metavar="SLUG")

    dlq = commands.add_parser("dlq", parents=[common], help="dead letters: records the runners gave up on",
                              description="dead letters: records the runners gave up on")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", metavar="COMMAND", required=True)
    letters = command(dlq_commands, "list", dead_letters.dlq_list, "dead letters, newest first")
    letters.add_argument("--workflow", metavar="SLUG")
    letters.add_argument("--stage", help="where the record failed (engine, worker, trigger, ...)")
    letters.add_argument("--limit", type=_positive, default=20, metavar="N", help="at most N (default 20)")
    letter = command(dlq_commands, "get", dead_letters.dlq_get, "one dead letter with its value and error")
    letter.add_argument("letter_id", metavar="ID")
    replay = command(dlq_commands, "replay", dead_letters.dlq_replay, "produce a dead letter again where it came from")
    replay.add_argument("letter_id", metavar="ID")
    replay.add_argument("--value", metavar="TEXT", help="replay this value instead of the original (text, or @FILE)")
    discard = command(dlq_commands, "discard", dead_letters.dlq_discard, "mark a dead letter as handled")
    discard.add_argument("letter_id", metavar="ID")
    return parser


# ---- login ------------------------------------------------------------------------------------
def _login(args) -> int:
    from .client import ApiError, Client

    url = args.url or os.environ.get(config.URL_VARIABLE) or ""
    if not url:
        if not sys.stdin.isatty():
            raise UsageError("no server given: pass --url http://HOST:PORT")
        url = input("Sluice server URL (e.g. http://127.0.0.1:8000): ")
    url = config.normalise_url(url)
    if args.with_token:
        token = sys.stdin.readline().strip()
    elif sys.stdin.isatty():
        token = getpass.getpass("API token (`manage.py issue_token USER` prints yours): ").strip()
    else:
        raise UsageError("no terminal to ask for the token on: send it on stdin with --with-token")
    if not token:
        raise UsageError("the token is empty")
    with Client(config.Server(url, token)) as client:
        try:
            client.get("runs/", {"page_size": 1})
        except ApiError as exc:
            if exc.status == 401:
                raise CliError(f"the server at {url} did not accept the token; nothing was stored",
                               code="unauthenticated") from None
            raise
    path = config.write(url, token)
    if args.json:
        output.print_json({"url": url, "config": str(path)})
    else:
        print(f"logged in to {url}; the token is stored in {path} (readable by you alone)")
    return SUCCESS


def _logout(args) -> int:
    path = config.remove()
    if args.json:
        output.print_json({"removed": str(path) if path else None})
    else:
        print(f"removed {path}" if path else f"not logged in (no {config.config_path()})")
    return SUCCESS


# ---- running a command ------------------------------------------------------------------------
def report(error: CliError, as_json: bool) -> None:
    if not error.message:
        return  # the command printed its outcome already (a run that failed)
    if as_json:
        import json

        print(json.dumps(error.as_dict(), ensure_ascii=False), file=sys.stderr, flush=True)
        return
    output.error(error.message)
    for problem in error.problems:
        if problem.get("file"):
            from .validation import format_problem

            print(f"  {format_problem(problem)}", file=sys.stderr)
        else:
            print(f"  {output.describe_problem(problem)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # a usage error exits here with 2
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return USAGE
    if getattr(args, "json", False) and getattr(args, "yaml", False):
        parser.error("--json and --yaml cannot be combined: --json prints the version and its definition as JSON")
    try:
        if not args.needs_server:
            return args.handler(args)
        from .client import Client

        with Client(config.server()) as client:
            return args.handler(args, client)
    except CliError as exc:
        report(exc, args.json)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `sluice runs list | head`
        sys.stderr.close()
        return SUCCESS


if __name__ == "__main__":
    raise SystemExit(main())
