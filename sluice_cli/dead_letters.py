"""Dead letters: `dlq list|get|replay|discard` over /api/dead-letters/.

A dead letter is a record a runner gave up on (undecodable, unknown workflow version, a
handler that keeps crashing ...). Replaying produces it again where it came from, optionally
with an edited value; discarding marks it handled.
"""

from __future__ import annotations

from pathlib import Path

from . import output
from .client import Client, api_path
from .errors import SUCCESS, UsageError


def _results(page) -> list[dict]:
    if isinstance(page, dict):
        return page.get("results") or []
    return page if isinstance(page, list) else []


def dlq_list(args, client: Client) -> int:
    page = client.get("dead-letters/", {"workflow": args.workflow, "stage": args.stage, "page_size": args.limit})
    if args.json:
        output.print_json(page)
        return SUCCESS
    letters = _results(page)
    if not letters:
        print("no dead letters")
        return SUCCESS
    rows = []
    for letter in letters:
        source = letter.get("source_topic") or ""
        if source and letter.get("source_offset") is not None:
            source += f"[{letter.get('source_partition')}]@{letter['source_offset']}"
        rows.append([letter.get("id"), output.local_time(letter.get("failed_at")), letter.get("stage", ""),
                     letter.get("status", ""), source, output.one_line(letter.get("error"), 70)])
    print(output.table(rows, ["ID", "FAILED", "STAGE", "STATUS", "SOURCE", "ERROR"]))
    return SUCCESS


def dlq_get(args, client: Client) -> int:
    letter = client.get(api_path("dead-letters", args.letter_id))
    if args.json:
        output.print_json(letter)
        return SUCCESS
    for key in ("id", "status", "stage", "failed_at", "source_topic", "source_partition", "source_offset", "key",
                "error", "value"):
        if letter.get(key) not in (None, ""):
            value = output.local_time(letter[key]) if key == "failed_at" else letter[key]
            print(f"{key + ':':<18}{value}")
    return SUCCESS


def _value(text: str | None) -> str | None:
    """The edited record value as text: given inline, or @FILE read as it is."""
    if text is None or not text.startswith("@"):
        return text
    try:
        return Path(text[1:]).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--value: cannot read {text[1:]}: {exc.strerror}") from None


def dlq_replay(args, client: Client) -> int:
    value = _value(args.value)
    answer = client.post(api_path("dead-letters", args.letter_id, "replay"), {} if value is None else {"value": value})
    if args.json:
        output.print_json(answer)
    else:
        print(f"dead letter {args.letter_id} replayed" + (" with the edited value" if value is not None else ""))
    return SUCCESS


def dlq_discard(args, client: Client) -> int:
    answer = client.post(api_path("dead-letters", args.letter_id, "discard"), {})
    if args.json:
        output.print_json(answer)
    else:
        print(f"dead letter {args.letter_id} discarded")
    return SUCCESS
