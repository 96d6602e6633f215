"""`python manage.py bridge`: run the history projector (and the failure alert sender) until
SIGTERM or Ctrl-C."""

import signal
import threading
import time

from django.core.management.base import BaseCommand, CommandError

from monitor import metrics
from monitor.alerts import AlertSender
from monitor.projector import GROUP_ROLE, Projector
from orchestrator.observability import health
from orchestrator.observability.server import METRICS_FD_HELP, MetricsServer, inherited_port
from orchestrator.runtime import heap

# The projector polls at least every few seconds, even idle (its back-off checks every 250 ms); a loop that
# has not polled for this long is stuck (a database lock, a hung call).
STALLED_AFTER_SECONDS = 60.0


class Command(BaseCommand):
    help = "Project wf.history, wf.dlq and wf.heartbeats into the database (the monitor's run rows)."

    def add_arguments(self, parser):
        parser.add_argument("--group", default=None,
                            help=f"consumer group (default: SLUICE_TOPIC_PREFIX + {GROUP_ROLE!r}, e.g. wf.{GROUP_ROLE})")
        parser.add_argument("--metrics-port", type=int, default=0,
                            help="Serve /metrics, /healthz and /readyz on this port (0: not at all).")
        parser.add_argument("--metrics-host", default="127.0.0.1",
                            help="Address of the metrics port (default 127.0.0.1; another address needs "
                                 "SLUICE_METRICS_TOKEN or SLUICE_METRICS_ALLOWED_NETWORKS).")
        parser.add_argument("--metrics-fd", type=int, default=None, help=METRICS_FD_HELP)
        parser.add_argument("--no-alerts", action="store_true",
                            help="Do not send failure notifications from this bridge (another one does).")

    def handle(self, *args, group, metrics_port, metrics_host, metrics_fd, no_alerts, **options):
        if metrics_fd is not None:
            metrics_port = inherited_port(metrics_fd)
        projector = Projector(group_id=group)
        server = self._metrics_server(projector, metrics_port, metrics_host, metrics_fd)
        stopping = threading.Event()
        sender = None if no_alerts else AlertSender(stopping).start()

        def request_stop(signum, _frame):
            projector.stop()  # first: the write below fails if whoever read our output is gone
            stopping.set()
            try:
                self.stderr.write(f"bridge: {signal.Signals(signum).name} received, finishing the current batch")
            except OSError:
                pass

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        heap.freeze_startup_objects()
        try:
            stats = projector.run_forever()
        finally:
            stopping.set()
            if sender is not None:
                sender.join()
            projector.close()
            if server is not None:
                server.stop()
        self.stdout.write(f"bridge stopped: {stats.applied} events applied, {stats.skipped} duplicates skipped, "
                          f"{stats.undecodable} undecodable, {stats.dead_letters} dead letters")

    @staticmethod
    def _metrics_server(projector: Projector, port: int, host: str, fd: int | None) -> MetricsServer | None:
        if not port:
            return None
        metrics.install_bridge(projector)

        def readiness() -> dict[str, str]:
            stalled = time.monotonic() - projector.last_poll > STALLED_AFTER_SECONDS
            return {"projector": "stalled" if stalled else "ok", "database": health.database(close=True),
                    "broker": health.broker()}

        try:
            return MetricsServer(port, readiness, host=host, fd=fd).start()
        except (OSError, ValueError) as exc:
            raise CommandError(f"--metrics-port {port}: {exc}") from exc
