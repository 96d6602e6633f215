"""`manage.py up`: run all of Sluice on one machine with one command (what `make up` calls).

Order of events: embedded broker (unless KAFKA_BOOTSTRAP_SERVERS names a cluster) -> topics ->
migrate -> examples and the first admin user -> supervised children (web, runner(s), bridge,
celery worker, celery beat) -> banner once the web answers. Ctrl-C or SIGTERM stops the
children in reverse order and then the broker with SIGTERM, so it snapshots its data and the
next `up` resumes in-flight runs.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.management import get_commands
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from orchestrator import bootstrap
from orchestrator.runtime import commands
from orchestrator.runtime.broker import EmbeddedBroker
from orchestrator.supervisor import ProcessSpec, Supervisor, listen

BROKER_PID_FILE = "broker.pid"
# daphne's access log prints whole URIs; a webhook token sent as ?token= must not show.
TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"']+", re.IGNORECASE)


def mask_query_tokens(line: str) -> str:
    return TOKEN_IN_QUERY.sub(r"\1[redacted]", line)


class Command(BaseCommand):
    help = "Run Sluice: embedded broker, web, runner, history bridge, celery worker and beat, supervised."

    def add_arguments(self, parser):
        parser.add_argument("--web-port", type=int, default=int(os.environ.get("SLUICE_WEB_PORT", "8000")),
                            help="port of the web process (default: SLUICE_WEB_PORT or 8000)")
        parser.add_argument("--runners", type=int, default=1, help="number of runner processes (default 1)")
        parser.add_argument("--no-celery", action="store_true",
                            help="do not start the celery worker and beat (no schedules, no celery_task steps)")
        parser.add_argument("--no-examples", action="store_true", help="do not load the example workflows")
        parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("SLUICE_METRICS_PORT", "9464")),
                            help="first metrics port: the bridge gets the first free one from here, the runners "
                                 "the next ones (default: SLUICE_METRICS_PORT or 9464; 0: no metrics ports)")

    def handle(self, *args, web_port: int, runners: int, no_celery: bool, no_examples: bool, metrics_port: int,
               **options):
        if runners < 1:
            raise CommandError("--runners must be at least 1")
        # Bound here and inherited by the web process (and kept across its restarts): a port
        # checked now and bound by the child later could be taken in between.
        try:
            web_socket = listen(web_port)
        except OSError as exc:
            raise CommandError(f"port {web_port} is already in use ({exc.strerror}); pass --web-port or set "
                               f"SLUICE_WEB_PORT") from exc
        metrics_sockets = self._metrics_sockets(metrics_port, runners)

        stop = threading.Event()

        def request_stop(signum, _frame):
            if not stop.is_set():
                self.stdout.write(f"\nreceived {signal.Signals(signum).name}; stopping Sluice")
            stop.set()

        def interrupt_start_up(signum, _frame):
            raise KeyboardInterrupt

        # Until the children run, Ctrl-C or SIGTERM must still stop the broker (it runs in its
        # own session and would outlive us): both become KeyboardInterrupt, handled below.
        signal.signal(signal.SIGTERM, interrupt_start_up)
        signal.signal(signal.SIGHUP, interrupt_start_up)
        broker = None
        supervisor = None
        try:
            if settings.SLUICE_EMBEDDED_BROKER:
                broker = self._start_broker()
            else:
                self.stdout.write(f"using the Kafka cluster at {settings.KAFKA_BOOTSTRAP_SERVERS}")
            created = bootstrap.create_topics()
            self.stdout.write(f"topics ready ({len(created)} created)")
            bootstrap.migrate()
            self.stdout.write("database ready")
            if not no_examples:  # idempotent: unchanged examples and people's edits are left alone
                try:
                    bootstrap.load_examples(self.stdout)
                except Exception as exc:  # examples are a convenience: never a reason not to start
                    self.stderr.write(f"could not load the example workflows ({exc}); starting without them")
            password = bootstrap.ensure_admin()
            if not no_celery:
                bootstrap.ensure_retention_schedule()
            # The children open their own connections; ours would only hold SQLite locks and
            # a Kafka producer that complains when the broker goes away at the end.
            connections.close_all()
            commands.reset_producer()

            # Spawned and watched from this (main) thread, so the parent-death signal is safe to use.
            supervisor = Supervisor(self._specs(web_socket, runners, no_celery, metrics_sockets),
                                    die_with_supervisor=True)
            signal.signal(signal.SIGINT, request_stop)
            signal.signal(signal.SIGTERM, request_stop)
            signal.signal(signal.SIGHUP, request_stop)  # the terminal went away
            # `kill -USR1 <pid of up>`: the state of every child, now.
            signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(
                target=self._say_states, args=(supervisor,), daemon=True, name="states").start())
            supervisor.start()
            threading.Thread(target=self._banner, args=(supervisor, web_port, password, stop),
                             daemon=True, name="banner").start()
            threading.Thread(target=supervisor.watch_states, args=(stop,), daemon=True, name="readiness").start()
            supervisor.watch(stop)
        except KeyboardInterrupt:
            self.stdout.write("\ninterrupted during start-up; stopping")
        finally:
            # A second Ctrl-C must not abort the orderly stop half way.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
            if supervisor is not None:
                supervisor.stop()
            if broker is not None:
                self.stdout.write("stopping the embedded broker (it saves its data)")
                broker.stop()
                (broker.data_dir / BROKER_PID_FILE).unlink(missing_ok=True)
            for sock in (web_socket, *metrics_sockets):
                sock.close()
            self.stdout.write("Sluice stopped")

    # ---- pieces ------------------------------------------------------------------------------
    def _start_broker(self) -> EmbeddedBroker:
        data_dir = settings.DATA_DIR / "kafka"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_stale_broker(data_dir)
        # The broker's own chatter goes to a file; the terminal is for Sluice's processes.
        log_file = open(settings.DATA_DIR / "kafka.log", "ab")
        broker = EmbeddedBroker(data_dir, settings.KAFKA_PORT, log_file=log_file)
        self.stdout.write(f"starting the embedded broker on {broker.bootstrap_servers} (data in {data_dir})")
        try:
            broker.start()
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
        (data_dir / BROKER_PID_FILE).write_text(str(broker.process.pid))
        return broker

    def _stop_stale_broker(self, data_dir: Path) -> None:
        """Stop the broker of a previous `up` that was killed before it could stop it.

        The broker runs in its own session (so a terminal Ctrl-C reaches us first), which also
        means it outlives a `kill -9` of `up`. Only a process that is this data dir's broker
        binary is touched: the pid file alone could name an unrelated process by now.
        """
        pid_file = data_dir / BROKER_PID_FILE
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ValueError):
            pid_file.unlink(missing_ok=True)
            return
        if not (cmdline and cmdline[0].endswith(b"noida-db") and str(data_dir).encode() in cmdline):
            pid_file.unlink(missing_ok=True)
            return
        self.stdout.write(f"stopping the broker a previous `up` left running (pid {pid}); it saves its data")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)

    @staticmethod
    def _metrics_sockets(first: int, runners: int) -> list[socket.socket]:
        """Listening sockets on free ports from `first` on: the bridge's, then one per runner ([]
        when `first` is 0). Ports in use (another Sluice on this machine, say) are skipped, never
        fought over; the children inherit the sockets, so nothing takes a port in between."""
        sockets, port = [], first
        while first and len(sockets) < runners + 1 and port < 65536:
            try:
                sockets.append(listen(port))
            except OSError:
                pass
            port += 1
        return sockets

    def _say_states(self, supervisor: Supervisor) -> None:
        for line in supervisor.table(supervisor.states(probe=True)):
            supervisor.say(line)

    def _specs(self, web_socket: socket.socket, runners: int, no_celery: bool,
               metrics_sockets: list[socket.socket] | None = None) -> list[ProcessSpec]:
        python = sys.executable
        manage = str(settings.BASE_DIR / "manage.py")
        cwd = str(settings.BASE_DIR)
        # Children must agree with us on where everything is, whatever their own defaults.
        env = {
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "orchestrator.settings"),
            "SLUICE_DATA_DIR": str(settings.DATA_DIR),
            "SLUICE_KAFKA_PORT": str(settings.KAFKA_PORT),
            "SLUICE_EMBEDDED_BROKER": "1" if settings.SLUICE_EMBEDDED_BROKER else "0",
        }
        installed = get_commands()
        held = list(metrics_sockets or [])
        bridge_socket = held.pop(0) if held else None
        web_port = web_socket.getsockname()[1]

        def metrics(sock: socket.socket | None) -> dict:
            """The child's --metrics-fd argument, the descriptor it inherits and its readiness URL."""
            if sock is None:
                return {"arguments": [], "pass_fds": (), "ready_url": None}
            return {"arguments": [f"--metrics-fd={sock.fileno()}"], "pass_fds": (sock.fileno(),),
                    "ready_url": f"http://127.0.0.1:{sock.getsockname()[1]}/readyz"}

        specs = [
            ProcessSpec("web", [python, "-m", "daphne", "--fd", str(web_socket.fileno()),
                                "orchestrator.asgi_static:application"], env=env, cwd=cwd,
                        line_filter=mask_query_tokens, ready_url=f"http://127.0.0.1:{web_port}/readyz",
                        pass_fds=(web_socket.fileno(),)),
        ]
        if "runner" in installed:
            for index in range(1, runners + 1):
                name = "runner" if runners == 1 else f"runner-{index}"
                served = metrics(held[index - 1] if index <= len(held) else None)
                # A stable instance id per slot: static group membership survives restarts.
                specs.append(ProcessSpec(name, [python, manage, "runner", *served["arguments"]], cwd=cwd,
                                         ready_url=served["ready_url"], pass_fds=served["pass_fds"],
                                         env={**env, "SLUICE_INSTANCE_ID": f"local-runner-{index}"}))
        else:
            self.stderr.write("the runner command is not installed: workflows will not run")
        if "bridge" in installed:
            served = metrics(bridge_socket)
            specs.append(ProcessSpec("bridge", [python, manage, "bridge", *served["arguments"]], env=env, cwd=cwd,
                                     ready_url=served["ready_url"], pass_fds=served["pass_fds"]))
        else:
            self.stderr.write("the bridge command is not installed: the monitor will not update")
        if not no_celery:
            # One worker carries a few schedule ticks a minute (over kombu's filesystem transport
            # on the embedded default, see settings): it needs no broadcast chatter between
            # workers (gossip, mingle, event heartbeats), and kombu's Kafka transport, used on a
            # cluster, supports none of it and wants one consumer per partition.
            specs.append(ProcessSpec("celery", [python, "-m", "celery", "-A", "orchestrator", "worker",
                                                "--without-gossip", "--without-mingle", "--without-heartbeat",
                                                "-Q", "sluice,celery", "--concurrency", "1", "-l", "INFO"],
                                     env=env, cwd=cwd))
            specs.append(ProcessSpec("beat", [python, "-m", "celery", "-A", "orchestrator", "beat", "-l", "INFO",
                                              "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"],
                                     env=env, cwd=cwd))
        return specs

    def _banner(self, supervisor: Supervisor, web_port: int, password: str | None, stop: threading.Event):
        base = f"http://127.0.0.1:{web_port}"
        if not bootstrap.wait_for_http(f"{base}/accounts/login/", timeout=180, stop=stop):
            if not stop.is_set():
                supervisor.say(f"the web process did not answer on {base} within 180s; see the web lines above")
            if password is None or stop.is_set():
                return
        kafka = (f"{settings.KAFKA_BOOTSTRAP_SERVERS} (embedded, data in {settings.DATA_DIR / 'kafka'})"
                 if settings.SLUICE_EMBEDDED_BROKER else settings.KAFKA_BOOTSTRAP_SERVERS)
        lines = [
            "Sluice is up",
            "",
            f"  designer   {base}/",
            f"  monitor    {base}/monitor/",
            f"  admin      {base}/admin/",
            f"  API docs   {base}/api/docs/",
            f"  kafka      {kafka}",
        ]
        if password:
            lines += [
                "",
                f"  first user created:  username {bootstrap.ADMIN_USERNAME}  password {password}",
                "  shown this once only: sign in and change it (admin > users)",
            ]
        metrics = [f"  {spec.name:<10} {spec.ready_url.rsplit('/', 1)[0]}/metrics" for spec in
                   (child.spec for child in supervisor.children) if spec.ready_url and spec.name != "web"]
        if metrics:
            lines += ["", "  metrics (also /healthz, /readyz):", *metrics]
        lines += ["", *supervisor.table(supervisor.states(probe=True)),
                  "", f"Ctrl-C stops everything; `kill -USR1 {os.getpid()}` shows each process's state;",
                  "`make up` again resumes where it stopped."]
        for line in bootstrap.box(lines).splitlines():
            supervisor.say(line)
