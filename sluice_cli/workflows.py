"""Workflows as code: `validate`, `apply`, `diff` and `export`.

`apply` compares each file with the workflow's newest version on the server and saves only
what differs, so applying the same files twice changes nothing (no new version) and a CI job
can apply on every push. Saves name the version they start from (`base_version`): if someone
saved in the designer in between, the server refuses (409) instead of overwriting their work.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any

from . import documents, output, validation
from .client import ApiError, Client, api_path
from .errors import CliError, SUCCESS, REFUSED, UsageError

CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"


def _load(targets: list[str]) -> list[documents.Document]:
    loaded = documents.load_all(targets)
    seen: dict[str, documents.Document] = {}
    for document in loaded:
        if document.slug and document.slug in seen:
            raise UsageError(f"{document.label} and {seen[document.slug].label} both define the workflow "
                             f"'{document.slug}': keep one")
        seen.setdefault(document.slug, document)
    return loaded


def _validated(targets: list[str]) -> list[documents.Document]:
    """The documents, or a refusal listing every error of every file before anything is sent."""
    loaded = _load(targets)
    found = [(document, validation.problems(document)) for document in loaded]
    failing = [(document, problems) for document, problems in found if validation.errors(problems)]
    if failing:
        listed = [problem for _document, problems in failing for problem in validation.errors(problems)]
        count = len(listed)
        raise CliError(f"{len(failing)} workflow{'s' if len(failing) != 1 else ''} "
                       f"{'have' if len(failing) != 1 else 'has'} {count} error{'s' if count != 1 else ''}; "
                       "nothing was sent", listed, "invalid_definition")
    return loaded


# ---- validate ---------------------------------------------------------------------------------
def validate(args) -> int:
    results = []
    for target in args.files:
        for path in documents.find_files(target):
            try:
                loaded = documents.load_file(path)
            except documents.DocumentError as exc:
                results.append({"file": exc.file, "document": None, "slug": None, "valid": False, "problems": [
                    {"file": exc.file, "line": exc.line, "path": "", "step_id": None,
                     "code": "unreadable", "message": exc.reason, "severity": "error"}]})
                continue
            for document in loaded:
                problems = validation.problems(document)
                results.append({"file": document.file, "document": document.number, "slug": document.slug or None,
                                "valid": not validation.errors(problems), "problems": problems})
    valid = all(result["valid"] for result in results)
    if args.json:
        output.print_json({"valid": valid, "files": results})
    else:
        for result in results:
            for problem in result["problems"]:
                print(validation.format_problem(problem))
        for result in results:
            name = result["file"] + (f" ({result['slug']})" if result.get("slug") else "")
            errors = sum(problem["severity"] == "error" for problem in result["problems"])
            warnings = len(result["problems"]) - errors
            verdict = "valid" if result["valid"] else f"{errors} error{'s' if errors != 1 else ''}"
            extra = f", {warnings} warning{'s' if warnings != 1 else ''}" if warnings else ""
            print(f"{name}: {verdict}{extra}")
    return SUCCESS if valid else REFUSED


# ---- apply ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    document: documents.Document
    action: str = ""
    version: int | None = None
    previous: int | None = None
    published: bool = False
    live_version: int | None = None
    warnings: list[dict] = field(default_factory=list)
    error: CliError | None = None

    def as_dict(self) -> dict:
        result = {"file": self.document.file, "document": self.document.number, "slug": self.document.slug,
                  "action": self.action or None, "version": self.version, "previous_version": self.previous,
                  "published": self.published, "live_version": self.live_version, "warnings": self.warnings}
        if self.error is not None:
            result["error"] = self.error.as_dict()
        return result

    def describe(self) -> str:
        slug = self.document.slug
        if self.action == UPDATED:
            text = f"updated    {slug}: version {self.version} (was {self.previous})"
        else:
            text = f"{self.action:<10} {slug}: version {self.version}"
        if self.published:
            return text + ", published (live)"
        return text + (" (live)" if self.live_version == self.version else
                       f" (draft; live: {self.live_version})" if self.live_version else " (draft)")


def _remote(client: Client, slug: str) -> dict | None:
    try:
        return client.get(api_path("workflows", slug))
    except ApiError as exc:
        if exc.status == 404 and exc.code != "no_endpoint":
            return None
        raise


def _save_message(args, document: documents.Document) -> str:
    return args.message or f"Applied from {os.path.basename(document.file)} with sluice"


def _apply_one(client: Client, args, document: documents.Document) -> Outcome:
    outcome = Outcome(document)
    slug = document.slug
    remote = _remote(client, slug)
    if remote is None:
        saved = client.post("workflows/", {**document.data, "message": _save_message(args, document)})
        outcome.action, outcome.version = CREATED, saved["version"]
        outcome.warnings = [validation.located(document, warning) for warning in saved.get("warnings", [])]
    elif remote.get("definition") == document.data:
        outcome.action, outcome.version = UNCHANGED, remote["latest_version"]
    else:
        body = {**document.data, "message": _save_message(args, document), "base_version": remote["latest_version"]}
        saved = client.put(api_path("workflows", slug), body)
        outcome.action, outcome.version, outcome.previous = UPDATED, saved["version"], remote["latest_version"]
        outcome.warnings = [validation.located(document, warning) for warning in saved.get("warnings", [])]
    outcome.live_version = remote.get("live_version") if remote else None
    if args.publish and outcome.live_version != outcome.version:
        client.post(api_path("workflows", slug, "publish"), {"version": outcome.version})
        outcome.published, outcome.live_version = True, outcome.version
    return outcome


def apply(args, client: Client) -> int:
    loaded = _validated(args.file)
    outcomes = []
    for document in loaded:
        try:
            outcome = _apply_one(client, args, document)
        except ApiError as exc:
            if exc.code in ("unauthenticated", "no_endpoint"):
                raise  # every other file would fail the same way
            exc.problems = [validation.located(document, problem) for problem in exc.problems]
            outcome = Outcome(document, error=exc)
        outcomes.append(outcome)
        if not args.json:
            _print_outcome(outcome)
    failed = [outcome for outcome in outcomes if outcome.error is not None]
    if args.json:
        output.print_json({"results": [outcome.as_dict() for outcome in outcomes], "ok": not failed})
    return REFUSED if failed else SUCCESS


def _print_outcome(outcome: Outcome) -> None:
    if outcome.error is not None:
        output.error(f"{outcome.document.label} ({outcome.document.slug}): {outcome.error.message}")
        for problem in outcome.error.problems:
            print(f"  {validation.format_problem(problem)}", flush=True)
        return
    print(outcome.describe(), flush=True)
    for warning in outcome.warnings:
        print(f"  {validation.format_problem(warning)}", flush=True)


# ---- diff -------------------------------------------------------------------------------------
def _in_order_of(remote: Any, local: Any) -> Any:
    """`remote` with its object keys in `local`'s order (the rest after), so only real changes show.

    The server may store keys in another order (PostgreSQL's jsonb sorts them).
    """
    if isinstance(remote, dict) and isinstance(local, dict):
        keys = [key for key in local if key in remote] + [key for key in remote if key not in local]
        return {key: _in_order_of(remote[key], local.get(key)) for key in keys}
    if isinstance(remote, list) and isinstance(local, list):
        return [_in_order_of(item, local[index] if index < len(local) else None) for index, item in enumerate(remote)]
    return remote


def _summary(changes: dict) -> list[str]:
    lines = []
    if changes["workflow_fields"]:
        lines.append("fields changed: " + ", ".join(changes["workflow_fields"]))
    if changes["trigger_fields"]:
        lines.append("trigger changed: " + ", ".join(changes["trigger_fields"]))
    if changes["steps_added"]:
        lines.append("steps added: " + ", ".join(changes["steps_added"]))
    if changes["steps_removed"]:
        lines.append("steps removed: " + ", ".join(changes["steps_removed"]))
    for change in changes["steps_changed"]:
        lines.append(f"step {change['id']} changed: " + ", ".join(change["fields"]))
    if changes["edges_added"]:
        lines.append("edges added: " + ", ".join(changes["edges_added"]))
    if changes["edges_removed"]:
        lines.append("edges removed: " + ", ".join(changes["edges_removed"]))
    if changes["layout_changed"]:
        lines.append("layout changed (positions on the canvas only)")
    return lines


def diff(args, client: Client) -> int:
    from designer.diff import diff_definitions  # pure: compares two definitions, no Django

    loaded = _load(args.file)
    results = []
    for document in loaded:
        if not document.slug:
            raise CliError(f"{document.label} has no slug: the server cannot tell which workflow it is")
        remote = _remote(client, document.slug)
        local_text = documents.dump(document.data, document.yaml)
        if remote is None:
            action, version, changes = CREATED, None, None
            remote_text = ""
        else:
            version = remote["latest_version"]
            definition = _in_order_of(remote.get("definition") or {}, document.data)
            action = UNCHANGED if remote.get("definition") == document.data else UPDATED
            changes = diff_definitions(definition, document.data).as_dict() if action == UPDATED else None
            remote_text = documents.dump(definition, document.yaml)
        server_name = f"server: {document.slug}" + (f" version {version}" if version else " (does not exist)")
        text = "".join(difflib.unified_diff(remote_text.splitlines(keepends=True), local_text.splitlines(keepends=True),
                                            fromfile=server_name, tofile=f"file: {document.label}"))
        results.append({"file": document.file, "document": document.number, "slug": document.slug,
                        "action": action, "server_version": version, "changes": changes,
                        "diff": text if action != UNCHANGED else ""})
    if args.json:
        output.print_json({"results": results, "changed": any(r["action"] != UNCHANGED for r in results)})
        return SUCCESS
    for result in results:
        if result["action"] == UNCHANGED:
            print(f"unchanged  {result['slug']}: same as version {result['server_version']}")
            continue
        if result["action"] == CREATED:
            print(f"create     {result['slug']}: new workflow ({result['file']})")
        else:
            print(f"update     {result['slug']}: version {result['server_version']} -> {result['server_version'] + 1}")
            for line in _summary(result["changes"]):
                print(f"  {line}")
        print(result["diff"], end="" if result["diff"].endswith("\n") else "\n")
    return SUCCESS


# ---- export -----------------------------------------------------------------------------------
def export(args, client: Client) -> int:
    if args.version is not None:
        answer = client.get(api_path("workflows", args.slug, "versions", args.version))
        version = answer["version"]
    else:
        answer = client.get(api_path("workflows", args.slug))
        version = answer.get("latest_version")
    definition = answer.get("definition")
    if definition is None:
        raise CliError(f"workflow '{args.slug}' has no saved version")
    if args.json:
        output.print_json({"slug": args.slug, "version": version, "status": answer.get("status"),
                           "definition": definition})
    else:
        print(documents.dump(definition, args.yaml), end="")
    return SUCCESS
