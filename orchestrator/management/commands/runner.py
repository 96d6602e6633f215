"""`python manage.py runner`: the production entry point for executing workflows."""

import logging
import signal

from django.core.management.base import BaseCommand, CommandError

from orchestrator.runtime.runner import Runner, RunnerOptions


class Command(BaseCommand):
    help = "Run workflows: the engine loop, step workers and Kafka triggers of one runner process."

    def add_arguments(self, parser):
        parser.add_argument("--instance-id", default="",
                            help="Stable name of this runner (static group membership); "
                                 "default SLUICE_INSTANCE_ID or the host name. Unique per runner.")
        parser.add_argument("--queues", default="default", help="Comma-separated task queues to work on.")
        parser.add_argument("--workers", type=int, default=1, help="Worker loops per queue (0: none).")
        parser.add_argument("--concurrency", type=int, default=8, help="Handler threads per worker loop.")
        parser.add_argument("--batch-size", type=int, default=500, help="Engine records per transaction.")
        parser.add_argument("--worker-processes", type=int, default=0,
                            help="Run the worker loops in this many child processes (0: threads in this one).")
        parser.add_argument("--no-engine", action="store_true", help="Do not run the engine loop.")
        parser.add_argument("--no-triggers", action="store_true", help="Do not run Kafka triggers.")

    def handle(self, *args, **options):
        logging.getLogger("orchestrator").setLevel(logging.INFO)
        queues = tuple(q.strip() for q in options["queues"].split(",") if q.strip())
        if not queues and options["workers"]:
            raise CommandError("--queues names no queue")
        runner = Runner(RunnerOptions(
            instance_id=options["instance_id"], queues=queues, workers_per_queue=options["workers"],
            worker_concurrency=options["concurrency"], engine=not options["no_engine"],
            triggers=not options["no_triggers"], batch_size=options["batch_size"],
            worker_processes=options["worker_processes"],
        ))
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: runner.stop.set())
        try:
            runner.run_forever()
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
