"""The supervisor's view of its children: running, restarting, and ready or not by their probe."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator.supervisor import ProcessSpec, Supervisor
from tests.test_supervisor import Capture, py, wait_for


class Readiness:
    """A /readyz stand-in whose answer the test sets."""

    def __init__(self):
        self.status, self.checks = 503, {"loops": "ok", "broker": "unreachable"}
        readiness = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = json.dumps({"status": "x", "checks": readiness.checks}).encode()
                self.send_response(readiness.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/readyz"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def readiness():
    server = Readiness()
    yield server
    server.close()


def test_states_say_running_ready_and_restarting(readiness, tmp_path):
    out = Capture()
    supervisor = Supervisor([
        ProcessSpec("runner", py("import time; time.sleep(60)"), ready_url=readiness.url),
        ProcessSpec("celery", py("import time; time.sleep(60)")),
        ProcessSpec("crashy", py("raise SystemExit(3)")),
    ], out=out, colour=False, backoff_initial=30)
    stop = threading.Event()
    supervisor.start()
    watcher = threading.Thread(target=supervisor.watch, args=(stop,), daemon=True)
    states = threading.Thread(target=supervisor.watch_states, args=(stop, 0.1), daemon=True)
    watcher.start()
    states.start()
    try:
        assert wait_for(lambda: "runner is not ready: broker unreachable" in out.getvalue())
        readiness.status, readiness.checks = 200, {"loops": "ok", "broker": "ok"}
        assert wait_for(lambda: "runner is ready" in out.getvalue())
        assert wait_for(lambda: "restarting crashy" in out.getvalue())
        now = {item.name: item for item in supervisor.states(probe=True)}
        assert now["runner"].state == "ready" and now["runner"].pid
        assert now["celery"].state == "running" and now["celery"].detail == ""
        assert now["crashy"].state == "restarting" and now["crashy"].detail.startswith("in ")
        assert now["crashy"].restarts == 1 and now["crashy"].pid is None
        table = supervisor.table(list(now.values()))
        assert table[0].split() == ["process", "state", "pid", "restarts", "uptime"]
        assert table[3].split()[:3] == ["crashy", "restarting:", "in"]
        # A change is said once, not on every probe.
        assert out.getvalue().count("runner is ready") == 1
    finally:
        stop.set()
        watcher.join(5)
        states.join(5)
        supervisor.stop()
    assert {item.state for item in supervisor.states()} == {"stopped"}


def test_a_child_whose_probe_does_not_answer_is_starting(tmp_path):
    supervisor = Supervisor([ProcessSpec("bridge", py("import time; time.sleep(60)"),
                                         ready_url="http://127.0.0.1:9/readyz")], out=Capture(), colour=False)
    supervisor.start()
    try:
        (state,) = supervisor.states(probe=True)
        assert state.state == "starting"
    finally:
        supervisor.stop()
