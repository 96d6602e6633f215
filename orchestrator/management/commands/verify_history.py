"""`python manage.py verify_history`: replay recorded runs through the engine and compare."""

import json

from django.conf import settings
from django.core.management.base import BaseCommand

from orchestrator.runtime.topics import Topics
from orchestrator.runtime.verify import verify


class Command(BaseCommand):
    help = ("Re-feed each run's recorded inputs from wf.runs to the engine's decide() and compare the "
            "result with wf.history and wf.state; reports every divergence (exit status 1 if any).")

    def add_arguments(self, parser):
        parser.add_argument("run_ids", nargs="*", help="Runs to check (default: every run on wf.history).")
        parser.add_argument("--workflow", help="Only runs of this workflow.")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the report as JSON.")

    def handle(self, *args, run_ids, workflow, as_json: bool, **options):
        report = verify(Topics(settings.SLUICE_TOPIC_PREFIX), set(run_ids) or None, workflow)
        if as_json:
            self.stdout.write(_as_json(report))
        else:
            self.stdout.write(f"runs on wf.history: {report.runs}; replayed: {report.replayed}; "
                              f"skipped (recorded before causes existed): {report.skipped}; "
                              f"divergences: {len(report.divergences)}")
            for problem in report.divergences[:50]:
                where = f" at seq {problem.seq}" if problem.seq is not None else ""
                self.stdout.write(f"  {problem.run_id}{where}: {problem.reason}")
        if report.divergences:
            raise SystemExit(1)


def _as_json(report) -> str:
    return json.dumps({
        "runs": report.runs, "replayed": report.replayed, "skipped": report.skipped,
        "divergences": [{"run_id": d.run_id, "seq": d.seq, "reason": d.reason, "recorded": d.recorded,
                         "replayed": d.replayed} for d in report.divergences],
    }, indent=2, default=str)
