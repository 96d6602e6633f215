"""The supervisor with real child processes (small `python -c` scripts)."""

import io
import os
import re
import sys
import textwrap
import threading
import time

import pytest

from orchestrator.supervisor import ProcessSpec, Supervisor


class Capture(io.StringIO):
    """Thread-safe enough for line reads: the supervisor writes under its own lock."""

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def wait_for(predicate, timeout=15.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


@pytest.fixture
def run_supervisor():
    started = []

    def start(supervisor: Supervisor):
        stop = threading.Event()
        supervisor.start()
        thread = threading.Thread(target=supervisor.watch, args=(stop,), daemon=True)
        thread.start()
        started.append((supervisor, stop, thread))
        return stop, thread

    yield start
    for supervisor, stop, thread in started:
        stop.set()
        thread.join(5)
        supervisor.stop()


def test_output_lines_are_prefixed_with_padded_names(run_supervisor):
    out = Capture()
    supervisor = Supervisor([
        ProcessSpec("web", py("print('hello from web'); import time; time.sleep(30)")),
        ProcessSpec("celery", py("import sys; print('to stderr', file=sys.stderr); import time; time.sleep(30)")),
    ], out=out, colour=False)
    run_supervisor(supervisor)
    assert wait_for(lambda: "to stderr" in out.getvalue() and "hello from web" in out.getvalue())
    lines = out.lines()
    assert "web    | hello from web" in lines
    assert "celery | to stderr" in lines
    assert any(re.fullmatch(r"sluice \| started web \(pid \d+\)", line) for line in lines)


def test_colour_only_when_asked(run_supervisor):
    out = Capture()
    supervisor = Supervisor([ProcessSpec("web", py("print('x'); import time; time.sleep(30)"))], out=out, colour=True)
    run_supervisor(supervisor)
    assert wait_for(lambda: "\033[0m x" in out.getvalue())
    assert "\033[36mweb    |\033[0m x" in out.lines()


def test_crashing_child_is_restarted_with_doubling_backoff(run_supervisor, tmp_path):
    starts = tmp_path / "starts"
    code = f"""
        import time
        with open({str(starts)!r}, "a") as f:
            f.write(f"{{time.monotonic()}}\\n")
        raise SystemExit(3)
    """
    out = Capture()
    supervisor = Supervisor([ProcessSpec("flaky", py(code))], out=out, colour=False,
                            backoff_initial=0.4, backoff_max=1.6, stable_after=60)
    run_supervisor(supervisor)
    assert wait_for(lambda: starts.exists() and len(starts.read_text().split()) >= 5, timeout=30)
    times = [float(t) for t in starts.read_text().split()]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # Wanted delays 0.4, 0.8, 1.6, 1.6 (capped); each gap also includes interpreter start-up,
    # which varies on a busy machine, so delays are large enough to dominate it.
    for gap, delay in zip(gaps, [0.4, 0.8, 1.6, 1.6]):
        assert gap >= delay, (gaps, delay)
    assert gaps[2] > gaps[0] + 0.6, gaps  # it really grows
    text = out.getvalue()
    assert "flaky exited with code 3" in text
    assert "restarting flaky in 0.4s" in text
    assert "restarting flaky in 0.8s" in text
    assert "restarting flaky in 1.6s" in text
    assert "restarting flaky in 3.2s" not in text  # capped at backoff_max


def test_backoff_resets_after_the_child_stayed_up(run_supervisor, tmp_path):
    # The child lives 0.5s per start; with stable_after=0.3 every crash counts as "was stable".
    out = Capture()
    supervisor = Supervisor([ProcessSpec("steady", py("import time; time.sleep(0.5); raise SystemExit(1)"))],
                            out=out, colour=False, backoff_initial=0.1, backoff_max=5, stable_after=0.3)
    run_supervisor(supervisor)
    assert wait_for(lambda: out.getvalue().count("restarting steady") >= 3, timeout=20)
    delays = re.findall(r"restarting steady in ([\d.]+)s", out.getvalue())
    assert delays[:3] == ["0.1", "0.1", "0.1"]


def test_missing_executable_is_reported_and_retried(run_supervisor):
    out = Capture()
    supervisor = Supervisor([ProcessSpec("ghost", ["/nonexistent/sluice-binary"])], out=out, colour=False,
                            backoff_initial=0.1, backoff_max=0.2)
    run_supervisor(supervisor)
    assert wait_for(lambda: out.getvalue().count("could not start ghost") >= 2)


def test_shutdown_stops_children_in_reverse_order_and_kills_stragglers(tmp_path):
    log = tmp_path / "events"
    graceful = f"""
        import signal, sys, time
        name = sys.argv[1]
        def bye(*_):
            with open({str(log)!r}, "a") as f:
                f.write(f"{{name}} {{time.monotonic()}}\\n")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
    """
    stubborn = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
    """
    out = Capture()
    supervisor = Supervisor([
        ProcessSpec("first", py(graceful) + ["first"]),
        ProcessSpec("second", py(graceful) + ["second"]),
        ProcessSpec("stubborn", py(stubborn), stop_timeout=0.5),
        ProcessSpec("third", py(graceful) + ["third"]),
    ], out=out, colour=False)
    supervisor.start()
    assert wait_for(lambda: out.getvalue().count("| ready") == 4)
    pids = supervisor.running()
    assert set(pids) == {"first", "second", "stubborn", "third"}
    began = time.monotonic()
    supervisor.stop()
    took = time.monotonic() - began
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["third", "second", "first"]
    assert "stubborn did not stop in 0.5s; killing it" in out.getvalue()
    assert took < 5
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert supervisor.running() == {}


def test_children_are_not_restarted_while_stopping(tmp_path):
    out = Capture()
    supervisor = Supervisor([ProcessSpec("short", py("import time; time.sleep(30)"))], out=out, colour=False,
                            backoff_initial=0.05)
    supervisor.start()
    supervisor.stop()
    supervisor.check()
    time.sleep(0.2)
    supervisor.check()
    assert supervisor.running() == {}
    assert "restarting" not in out.getvalue()


def test_duplicate_names_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        Supervisor([ProcessSpec("a", ["true"]), ProcessSpec("a", ["true"])])


def test_children_die_with_a_killed_supervisor(tmp_path):
    """kill -9 of the supervising process must not leave its children running (Linux)."""
    pids = tmp_path / "pids"
    script = f"""
        import sys, time, threading
        sys.path.insert(0, {os.getcwd()!r})
        from orchestrator.supervisor import ProcessSpec, Supervisor
        child = [sys.executable, "-c", "import os, time; open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\\\n'); time.sleep(60)"]
        supervisor = Supervisor([ProcessSpec("a", child), ProcessSpec("b", child)], die_with_supervisor=True)
        supervisor.start()
        supervisor.watch(threading.Event())
    """
    import subprocess

    parent = subprocess.Popen(py(script), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2)
        children = [int(pid) for pid in pids.read_text().split()]
        parent.kill()
        parent.wait()

        def gone(pid):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # A zombie whose reaper is init counts as gone once it is reaped; check its state.
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    return stat.read().split()[2] == "Z"
            except FileNotFoundError:
                return True

        assert wait_for(lambda: all(gone(pid) for pid in children), timeout=10)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_line_filter_rewrites_output_before_it_is_shown(run_supervisor):
    out = Capture()
    supervisor = Supervisor([ProcessSpec("web", py("print('GET /x?token=abc123 200'); import time; time.sleep(30)"),
                                         line_filter=lambda line: line.replace("abc123", "***"))],
                            out=out, colour=False)
    run_supervisor(supervisor)
    assert wait_for(lambda: "GET /x" in out.getvalue())
    assert "web    | GET /x?token=*** 200" in out.lines()
    assert "abc123" not in out.getvalue()


def test_a_listening_socket_is_inherited_and_held_across_restarts(run_supervisor):
    """A child serves the socket the supervisor bound; while it restarts, the port stays bound
    and a client's connection waits for the next child instead of being refused."""
    import socket

    from orchestrator.supervisor import listen

    held = listen(0)
    port = held.getsockname()[1]
    # Each child answers one connection with its pid, then exits (and is restarted).
    code = f"""
        import os, socket
        with socket.socket(fileno={held.fileno()}) as server:
            conn, _ = server.accept()
            conn.sendall(str(os.getpid()).encode())
            conn.close()
    """
    out = Capture()
    supervisor = Supervisor([ProcessSpec("server", py(code), pass_fds=(held.fileno(),))], out=out, colour=False,
                            backoff_initial=0.2, backoff_max=0.2)
    try:
        run_supervisor(supervisor)
        pids = []
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=15) as client:
                pids.append(client.recv(64).decode())
        assert all(pid.isdigit() for pid in pids), pids
        assert len(set(pids)) == 3, pids  # three children, one port
        assert out.getvalue().count("server exited with code 0") >= 2
    finally:
        held.close()


def test_listen_refuses_a_port_in_use():
    import socket

    from orchestrator.supervisor import listen

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError):
            listen(busy.getsockname()[1])
