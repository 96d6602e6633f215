"""Keyset pagination of the run list: newest first on (created_at, id), "older" and "newer" links.

A page is asked for by the last row seen (`?before=<cursor>`, the older page) or the first row
seen (`?after=<cursor>`, the newer page), never by a page number: no COUNT(*) over the filtered
runs and no OFFSET, so page 1 and page 40,000 cost the same index range scan of PAGE_SIZE + 1
rows. Runs sharing one created_at are ordered by id, so every run is on exactly one page while
runs come and go. `?page=N` (links from before) still works, up to MAX_PAGE_NUMBER pages deep.

The condition is written `created_at <= t AND (created_at < t OR id < x)`, not as an OR alone:
its first half is an index range on both SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection
from django.db.models import Q
from django.http import QueryDict

# Page numbers are an OFFSET: fine near the top, not 40,000 pages down.
MAX_PAGE_NUMBER = 40
# A user granted a few workflows sees `workflow IN (...)`: SQLite sorts every run of those
# workflows for each page (580 ms for 120,000 runs under load), as it reads no merge of several
# (workflow, created_at, id) index ranges. Up to this many workflows, a page is then read per
# workflow (a range of PAGE_SIZE + 1 rows each) and the database orders the union of those.
# PostgreSQL's planner does better on its own (reads the created_at index backwards, or sorts
# the few rows of rare workflows): there the split measured 10-20 % slower, so it is SQLite's.
MAX_SPLIT = 50
# Above this many candidates (page numbers far down), their keys are merged in Python.
MERGE_KEYS_ABOVE = 5000


class BadCursor(ValueError):
    pass


def encode(run) -> str:
    raw = json.dumps([run.created_at.isoformat(), run.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        moment, run_id = json.loads(raw)
        moment = datetime.fromisoformat(moment)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise BadCursor("not a position in the run list (follow the Older and Newer links)") from exc
    if not isinstance(run_id, str) or moment.tzinfo is None:
        raise BadCursor("not a position in the run list (follow the Older and Newer links)")
    return moment, run_id


def older_than(moment: datetime, run_id: str) -> Q:
    return Q(created_at__lte=moment) & (Q(created_at__lt=moment) | Q(id__lt=run_id))


def newer_than(moment: datetime, run_id: str) -> Q:
    return Q(created_at__gte=moment) & (Q(created_at__gt=moment) | Q(id__gt=run_id))


@dataclass
class Page:
    object_list: list = field(default_factory=list)
    has_newer: bool = False
    has_older: bool = False
    newer_query: str = ""  # the query string of the newer page, filters kept
    older_query: str = ""
    first_query: str = ""  # the newest page, filters kept
    number: int | None = None  # when asked for by ?page=


def split_by_workflow(slugs: set[str] | None, workflow_filter: str = "") -> list[str] | None:
    """The workflows to read one at a time (see MAX_SPLIT), or None for one query."""
    if slugs is None or workflow_filter or not 1 < len(slugs) <= MAX_SPLIT:
        return None
    return sorted(slugs) if connection.vendor == "sqlite" else None


def read_slice(runs, ordering: tuple[str, ...], start: int, stop: int, split: list[str] | None) -> list:
    """runs.order_by(*ordering)[start:stop], read per workflow of `split` when given."""
    ordered = runs.order_by(*ordering)
    if not split or len(split) > MAX_SPLIT or stop * len(split) > 200_000:
        return list(ordered[start:stop])
    if stop * len(split) > MERGE_KEYS_ABOVE:
        # Deep page numbers (the API's ?page=): merge each workflow's keys here, from the
        # index alone. Python orders ids by code point, as SQLite and PostgreSQL's C collation
        # do; another collation may order differently only runs of two workflows created in the
        # same microsecond, at a page border (and page numbers shift as runs arrive anyway).
        keys = []
        for slug in split:
            keys += ordered.filter(workflow=slug).values_list("created_at", "id")[:stop]
        keys.sort(reverse=ordering[0].startswith("-"))
        ids = [run_id for _created, run_id in keys[start:stop]]
        return list(runs.model.objects.filter(id__in=ids).order_by(*ordering))
    candidates = []
    for slug in split:  # each workflow's first `stop` rows hold the union's first `stop`
        candidates += ordered.filter(workflow=slug).values_list("id", flat=True)[:stop]
    # The database orders the candidates, with its own collation of ids, as the cursors compare them.
    # They matched every filter already: by primary key alone, or the planner may read the
    # `workflow IN (...)` again, sorted.
    return list(runs.model.objects.filter(id__in=candidates).order_by(*ordering)[start:stop])


def paginate(runs, params: QueryDict, size: int, split: list[str] | None = None) -> Page:
    """The page of `runs` (a filtered queryset) the request's `before`, `after` or `page` names.

    `split`: the workflows `runs` is restricted to, when it is a few (see MAX_SPLIT). Raises
    BadCursor for a cursor that does not decode."""
    filters = params.copy()
    for name in ("before", "after", "page"):
        filters.pop(name, None)
    before, after = params.get("before", "").strip(), params.get("after", "").strip()
    newest_first, oldest_first = ("-created_at", "-id"), ("created_at", "id")
    page = Page(first_query=filters.urlencode())
    if after:
        moment, run_id = decode(after)
        rows = read_slice(runs.filter(newer_than(moment, run_id)), oldest_first, 0, size + 1, split)
        if len(rows) <= size:  # the newest runs: show a full first page
            rows = read_slice(runs, newest_first, 0, size + 1, split)
            page.has_older = len(rows) > size
            page.object_list = rows[:size]
        else:
            page.object_list = list(reversed(rows[:size]))
            page.has_newer = True
            page.has_older = True  # the cursor's run at least, unless it was deleted since
    elif before:
        moment, run_id = decode(before)
        rows = read_slice(runs.filter(older_than(moment, run_id)), newest_first, 0, size + 1, split)
        page.object_list = rows[:size]
        page.has_older = len(rows) > size
        page.has_newer = True
    else:
        number = params.get("page", "").strip()
        number = int(number) if number.isdigit() and int(number) >= 1 else 1
        number = min(number, MAX_PAGE_NUMBER)
        offset = (number - 1) * size
        rows = read_slice(runs, newest_first, offset, offset + size + 1, split)
        if not rows and number > 1:  # past the end: the newest page
            return paginate(runs, filters, size, split)
        page.object_list = rows[:size]
        page.has_older = len(rows) > size
        page.has_newer = number > 1
        page.number = number if number > 1 else None
    if page.object_list:
        if page.has_newer:
            page.newer_query = _with(filters, "after", encode(page.object_list[0]))
        if page.has_older:
            page.older_query = _with(filters, "before", encode(page.object_list[-1]))
    elif page.has_newer:  # an empty page past the oldest run (deleted since): back to the top
        page.newer_query = page.first_query
    return page


def _with(filters: QueryDict, name: str, value: str) -> str:
    query = filters.copy()
    query[name] = value
    return query.urlencode()
