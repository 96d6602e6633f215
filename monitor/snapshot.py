"""One consistent read of a run with its step rows (and its history) while the bridge writes.

The projector changes a run's row, its step rows and its history entries in one transaction,
and each change raises the run's last_seq. The web reads outside a transaction, so each query
sees its own moment: a run read as "pending" just before a batch and its steps read just after
it as "waiting" make a page (or `GET /api/runs/<id>/`) that never existed. A snapshot
transaction would fix that per database (on SQLite, whose transactions Sluice opens IMMEDIATE,
every page would take the write lock; PostgreSQL needs REPEATABLE READ); instead the rows are
read and the run's last_seq is checked again afterwards, as a seqlock: unchanged means no batch
touched the run in between.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet, prefetch_related_objects

from .models import HistoryEntry, Run, StepRun

# A run whose rows change faster than this many reads in a row (a foreach over thousands of
# children, say) is shown as the last read saw it; the next refresh or live event corrects it.
ATTEMPTS = 5


@dataclass
class RunSnapshot:
    run: Run
    steps: list[StepRun]
    history: list[HistoryEntry] | None  # read only when asked for


def read_run(run_id: str, runs: QuerySet | None = None, history: bool = False) -> RunSnapshot | None:
    """The run (from `runs`, default all runs) with its steps, and its history when asked; None
    when there is no such run."""
    runs = Run.objects.all() if runs is None else runs
    snapshot = None
    for _ in range(ATTEMPTS):
        run = runs.filter(id=run_id).first()
        if run is None:
            return None
        # Prefetched, so run.steps.all() (a serializer's, a template's) answers from this read.
        prefetch_related_objects([run], "steps")
        snapshot = RunSnapshot(run, list(run.steps.all()),
                               list(run.history.order_by("seq")) if history else None)
        if Run.objects.filter(id=run_id, last_seq=run.last_seq).exists():
            break
    return snapshot
