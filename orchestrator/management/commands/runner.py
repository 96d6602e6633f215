"""`python manage.py runner`: the production entry point for executing workflows."""

import logging
import os
import signal

from django.core.management.base import BaseCommand, CommandError

from orchestrator.observability import health
from orchestrator.observability.server import METRICS_FD_HELP, MetricsServer, inherited_port
from orchestrator.runtime import heap, metrics
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
        parser.add_argument("--metrics-port", type=int, default=0,
                            help="Serve /metrics, /healthz and /readyz on this port (0: not at all). "
                                 "Worker processes use the ports that follow it.")
        parser.add_argument("--metrics-host", default="127.0.0.1",
                            help="Address of the metrics port (default 127.0.0.1; another address needs "
                                 "SLUICE_METRICS_TOKEN or SLUICE_METRICS_ALLOWED_NETWORKS).")
        parser.add_argument("--metrics-fd", type=int, default=None, help=METRICS_FD_HELP)

    def handle(self, *args, **options):
        logging.getLogger("orchestrator").setLevel(logging.INFO)
        queues = tuple(q.strip() for q in options["queues"].split(",") if q.strip())
        if not queues and options["workers"]:
            raise CommandError("--queues names no queue")
        fd = options["metrics_fd"]
        if fd is not None:
            options["metrics_port"] = inherited_port(fd)
        runner = Runner(RunnerOptions(
            instance_id=options["instance_id"], queues=queues, workers_per_queue=options["workers"],
            worker_concurrency=options["concurrency"], engine=not options["no_engine"],
            triggers=not options["no_triggers"], batch_size=options["batch_size"],
            worker_processes=options["worker_processes"], metrics_port=options["metrics_port"],
        ))
        server = self._metrics_server(runner, options["metrics_port"], options["metrics_host"], fd)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: runner.stop.set())
        heap.freeze_startup_objects()
        try:
            runner.run_forever()
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            if server is not None:
                server.stop()
            if runner.stragglers:
                # A loop stuck in a client call would keep the process alive for good (its threads
                # are not daemons), also after its supervisor died. Leaving now loses nothing:
                # uncommitted work is aborted by the broker and read again by the next runner.
                logging.getLogger("orchestrator.runtime.runner").error(
                    "loops still running 30 s after the stop: %s; exiting anyway", ", ".join(runner.stragglers))
                logging.shutdown()
                os._exit(1)

    @staticmethod
    def _metrics_server(runner: Runner, port: int, host: str, fd: int | None) -> MetricsServer | None:
        if not port:
            return None
        metrics.watch_runner(runner)
        try:
            return MetricsServer(port, lambda: {"loops": health.runner_loops(runner), "broker": health.broker()},
                                 host=host, fd=fd).start()
        except (OSError, ValueError) as exc:
            raise CommandError(f"--metrics-port {port}: {exc}") from exc
