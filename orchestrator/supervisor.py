"""A small process supervisor: start named children, prefix their output, restart crashes, stop in order.

Why hand-written: honcho (the maintained Procfile runner) stops the whole set as soon as one
child exits and has neither restart-with-backoff nor an ordered shutdown; supervisord and
circus are daemons with their own config files and control sockets, far more than one command
needs. This module is ~200 lines of subprocess + threads and knows nothing about Sluice.

Behaviour:
- every child runs in its own session (process group), so a terminal Ctrl-C reaches only the
  supervising process, which then stops the children itself in reverse start order;
- output lines are prefixed with the padded child name ("web    | ..."), coloured on a tty;
- a child that exits while the supervisor is running is reported and restarted after a
  backoff that doubles per crash (initial .. maximum) and resets once a child stayed up long
  enough;
- stop: SIGTERM to each child, wait up to its stop timeout, then SIGKILL its whole process group;
- state: each child is running, restarting or stopped; a child with a `ready_url` (an HTTP
  readiness endpoint answering 200 when ready, 503 with `{"checks": {...}}` when not) is also
  probed, and watch_states() reports every change ("runner is ready", "runner is not ready:
  broker unreachable");
- sockets: listen() binds a port in the supervisor, and a child that names the socket's
  descriptor in `pass_fds` inherits it (as systemd's socket activation does). A port chosen
  by one process and bound later by another can be taken in between, e.g. as the local end of
  some client's connection; a held socket cannot, and it stays bound across restarts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, TextIO

COLOURS = ["36", "33", "35", "32", "34", "31", "96", "93", "95", "92"]


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None  # added to the supervisor's environment
    cwd: str | None = None
    stop_timeout: float = 10.0
    # Applied to each output line before it is shown, e.g. to mask secrets in access logs.
    line_filter: Callable[[str], str] | None = None
    # An HTTP endpoint that answers 200 once the child is ready to work (e.g. /readyz).
    ready_url: str | None = None
    # Descriptors the child inherits (listening sockets bound by the supervisor, see listen()).
    pass_fds: tuple[int, ...] = ()


def listen(port: int, host: str = "127.0.0.1", backlog: int = 128) -> socket.socket:
    """A TCP socket listening on host:port, to hand to a child; OSError when the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class Child:
    spec: ProcessSpec
    colour: str
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_backoff: float = 0.0
    restart_at: float | None = None  # when a crashed child is due to start again
    readers: list[threading.Thread] = field(default_factory=list)
    readiness: str = ""  # the last probe's answer: "ready", "not ready: ...", "" (not probed)


@dataclass(frozen=True)
class ChildState:
    name: str
    state: str  # starting, ready, not ready, running, restarting, stopped
    pid: int | None
    restarts: int
    uptime: float
    detail: str = ""

    def describe(self) -> str:
        return f"{self.state}: {self.detail}" if self.detail else self.state


class Supervisor:
    def __init__(
        self,
        specs: list[ProcessSpec],
        out: TextIO | None = None,
        colour: bool | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        stable_after: float = 60.0,
        poll_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        die_with_supervisor: bool = False,
    ):
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"process names must be unique: {names}")
        self.out = out or sys.stdout
        self.colour = self.out.isatty() if colour is None else colour
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.poll_interval = poll_interval
        self.clock = clock
        # Linux only: children get SIGTERM if the supervisor itself is killed (kill -9, OOM), so
        # they do not linger holding ports. The kernel ties this to the *thread* that started
        # them, so only use it when start()/watch() run on a thread that lives as long as they do.
        self._preexec = _parent_death_signal() if die_with_supervisor else None
        self.width = max([len(name) for name in names] + [len("sluice")])
        self.children = [
            Child(spec, COLOURS[i % len(COLOURS)], next_backoff=backoff_initial) for i, spec in enumerate(specs)
        ]
        self._write_lock = threading.Lock()
        self._stopping = threading.Event()

    # ---- output ----------------------------------------------------------------------------
    def _prefix(self, name: str, colour: str) -> str:
        label = f"{name:<{self.width}} |"
        return f"\033[{colour}m{label}\033[0m" if self.colour else label

    def say(self, message: str, name: str = "sluice", colour: str = "1") -> None:
        """Write one line under `name`'s prefix (the supervisor's own lines use "sluice")."""
        with self._write_lock:
            self.out.write(f"{self._prefix(name, colour)} {message}\n")
            self.out.flush()

    def _pump(self, child: Child, stream) -> None:
        # One reader thread per child stream: lines come out whole and never interleave mid-line.
        line_filter = child.spec.line_filter
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.say(line_filter(line) if line_filter else line, child.spec.name, child.colour)
        stream.close()

    # ---- lifecycle ---------------------------------------------------------------------------
    def _spawn(self, child: Child) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(child.spec.env or {})}
        try:
            child.process = subprocess.Popen(
                child.spec.argv, cwd=child.spec.cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=self._preexec, pass_fds=child.spec.pass_fds,
            )
        except OSError as exc:
            # A missing executable is a crash like any other: report it and back off.
            self.say(f"could not start {child.spec.name}: {exc}")
            child.process = None
            self._schedule_restart(child, ran_for=0.0)
            return
        child.started_at = self.clock()
        child.restart_at = None
        reader = threading.Thread(target=self._pump, args=(child, child.process.stdout), daemon=True,
                                  name=f"supervisor-{child.spec.name}")
        reader.start()
        child.readers = [reader]
        self.say(f"started {child.spec.name} (pid {child.process.pid})")

    def _schedule_restart(self, child: Child, ran_for: float) -> None:
        if ran_for >= self.stable_after:
            child.next_backoff = self.backoff_initial  # it had recovered: start the ladder again
        delay = child.next_backoff
        child.next_backoff = min(delay * 2, self.backoff_max)
        child.restart_at = self.clock() + delay
        child.restarts += 1
        self.say(f"restarting {child.spec.name} in {delay:g}s")

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    def check(self) -> None:
        """One supervision pass: report exits, schedule and perform restarts."""
        now = self.clock()
        for child in self.children:
            if self._stopping.is_set():
                return
            process = child.process
            if process is not None and process.poll() is not None:
                for reader in child.readers:
                    reader.join(timeout=1)  # flush its last lines before the exit report
                ran_for = now - child.started_at
                self.say(f"{child.spec.name} exited with code {process.returncode} after {ran_for:.1f}s")
                child.process = None
                self._schedule_restart(child, ran_for)
            elif process is None and child.restart_at is not None and now >= child.restart_at:
                self._spawn(child)

    def watch(self, stop: threading.Event) -> None:
        """Supervise until `stop` is set (by a signal handler or a test)."""
        while not stop.wait(self.poll_interval):
            self.check()

    # ---- state -------------------------------------------------------------------------------
    def probe(self, child: Child, timeout: float = 3.0) -> str:
        """Ask a child's ready_url: "ready", or "not ready" with the failing checks."""
        try:
            with urllib.request.urlopen(child.spec.ready_url, timeout=timeout) as response:
                return "ready" if response.status == 200 else f"not ready: HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            try:
                checks = json.loads(exc.read() or b"{}").get("checks") or {}
            except ValueError:
                checks = {}
            failing = ", ".join(f"{name} {value}" for name, value in checks.items() if value != "ok")
            return f"not ready: {failing or f'HTTP {exc.code}'}"
        except (OSError, ValueError) as exc:
            return f"not answering: {getattr(exc, 'reason', exc)}"

    def states(self, probe: bool = False) -> list[ChildState]:
        """Each child's state now; `probe` asks the ready URLs first (blocking, up to seconds)."""
        now = self.clock()
        result = []
        for child in self.children:
            process = child.process
            alive = process is not None and process.poll() is None
            if probe and alive and child.spec.ready_url:
                child.readiness = self.probe(child)
            if alive:
                if not child.spec.ready_url:
                    state, detail = "running", ""
                elif child.readiness == "ready":
                    state, detail = "ready", ""
                elif child.readiness.startswith("not ready"):
                    state, detail = "not ready", child.readiness.partition(": ")[2]
                else:
                    state, detail = "starting", ""
            elif child.restart_at is not None:
                state, detail = "restarting", f"in {max(0.0, child.restart_at - now):.0f}s"
            else:
                state, detail = "stopped", ""
            result.append(ChildState(child.spec.name, state, process.pid if alive else None, child.restarts,
                                     now - child.started_at if alive else 0.0, detail))
        return result

    def table(self, states: list[ChildState] | None = None) -> list[str]:
        states = states if states is not None else self.states()
        lines = [f"{'process':<{self.width}}  {'state':<28} {'pid':>7}  {'restarts':>8}  uptime"]
        for item in states:
            uptime = f"{item.uptime:.0f}s" if item.pid else "-"
            lines.append(f"{item.name:<{self.width}}  {item.describe():<28} {item.pid or '-':>7}  "
                         f"{item.restarts:>8}  {uptime}")
        return lines

    def watch_states(self, stop: threading.Event, interval: float = 5.0) -> None:
        """Probe every `interval` seconds and say each change of a child's state (until stop)."""
        seen: dict[str, str] = {}
        while not stop.wait(interval):
            if self._stopping.is_set():
                return
            for item in self.states(probe=True):
                described = item.describe()
                # "starting" and "restarting in Ns" are not news: the supervisor's own lines say so.
                if seen.get(item.name) != described and item.state in ("ready", "not ready"):
                    self.say(f"{item.name} is {described}")
                seen[item.name] = described

    def running(self) -> dict[str, int]:
        return {c.spec.name: c.process.pid for c in self.children if c.process and c.process.poll() is None}

    def stop(self) -> None:
        """Stop every child in reverse start order: SIGTERM, wait, then SIGKILL."""
        self._stopping.set()
        for child in reversed(self.children):
            process = child.process
            child.restart_at = None
            if process is None:
                continue
            began = self.clock()
            if process.poll() is None:
                self.say(f"stopping {child.spec.name} (pid {process.pid})")
                # SIGTERM to the leader only: it stops its own helpers in order (celery's pool,
                # for one, would log errors if they were signalled behind its back).
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(child.spec.stop_timeout)
                except subprocess.TimeoutExpired:
                    self.say(f"{child.spec.name} did not stop in {child.spec.stop_timeout:g}s; killing it")
                    self._signal_group(process, signal.SIGKILL)
                    process.wait()
            # Anything the child left behind in its group (celery's pool, for instance) goes too.
            self._signal_group(process, signal.SIGKILL)
            for reader in child.readers:
                reader.join(timeout=2)
            self.say(f"{child.spec.name} stopped (code {process.returncode}) in {self.clock() - began:.1f}s")
            child.process = None

    @staticmethod
    def _signal_group(process: subprocess.Popen, signum: int) -> None:
        try:
            os.killpg(process.pid, signum)  # start_new_session made pid the group id
        except ProcessLookupError:
            pass


def _parent_death_signal():
    """A preexec function asking the kernel to SIGTERM the child when its parent dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded here, in the parent: nothing to import after fork
    prctl = libc.prctl
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died between fork and prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec
