"""`python manage.py bridge`: run the history projector until SIGTERM or Ctrl-C."""

import signal

from django.core.management.base import BaseCommand

from monitor.projector import GROUP_ROLE, Projector


class Command(BaseCommand):
    help = "Project wf.history, wf.dlq and wf.heartbeats into the database (the monitor's run rows)."

    def add_arguments(self, parser):
        parser.add_argument("--group", default=None,
                            help=f"consumer group (default: SLUICE_TOPIC_PREFIX + {GROUP_ROLE!r}, e.g. wf.{GROUP_ROLE})")

    def handle(self, *args, group, **options):
        projector = Projector(group_id=group)

        def request_stop(signum, _frame):
            projector.stop()  # first: the write below fails if whoever read our output is gone
            try:
                self.stderr.write(f"bridge: {signal.Signals(signum).name} received, finishing the current batch")
            except OSError:
                pass

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        try:
            stats = projector.run_forever()
        finally:
            projector.close()
        self.stdout.write(f"bridge stopped: {stats.applied} events applied, {stats.skipped} duplicates skipped, "
                          f"{stats.undecodable} undecodable, {stats.dead_letters} dead letters")
