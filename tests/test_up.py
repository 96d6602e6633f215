"""`manage.py up` end to end: a real subprocess with its own data dir and free ports.

First start: broker, topics, migrations, examples, an `admin` user with a printed password,
web + runner + bridge + celery + beat. A run of the approval example is left waiting; SIGINT
stops everything; the broker's snapshot exists. Second start on the same data: no new user,
the same password signs in, a SIGKILLed runner is restarted, the waiting run finishes once
approved (nothing in flight was lost), and a cron schedule fires through celery beat and the
celery worker into a run.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from orchestrator.runtime.broker import free_port

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = re.compile(r"first user created:\s+username admin\s+password (\S+)")
STARTED = re.compile(r"started (\S+) \(pid (\d+)\)")


class Up:
    """One `manage.py up` process with its output collected line by line."""

    def __init__(self, env: dict, web_port: int):
        self.web_port = web_port
        self.base = f"http://127.0.0.1:{web_port}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "up", "--web-port", str(web_port)], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in iter(self.process.stdout.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, needle: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if self.process.poll() is not None:
                raise AssertionError(f"up exited with {self.process.returncode} before {needle!r}:\n{self.text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} within {timeout}s:\n{self.text}")
            time.sleep(0.2)

    def child_pids(self) -> list[int]:
        return [int(pid) for _name, pid in STARTED.findall(self.text)]

    def interrupt(self, timeout: float) -> float:
        began = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout)
        self.reader.join(5)
        return time.monotonic() - began

    def kill_leftovers(self):
        """Only on a failed test: never leave our processes behind (the children have own sessions)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for pid in self.child_pids():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def up_env(tmp_path):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("KAFKA_", "DATABASE_URL", "REDIS_URL", "SLUICE_", "DJANGO_"))}
    env.update({"SLUICE_DATA_DIR": str(tmp_path / "data"), "SLUICE_KAFKA_PORT": str(free_port()),
                "SLUICE_METRICS_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"})
    return env


@pytest.fixture
def start_up(up_env):
    started: list[Up] = []

    def start() -> Up:
        up = Up(up_env, free_port())
        started.append(up)
        return up

    yield start
    for up in started:
        up.kill_leftovers()


def sign_in(base: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=10)
    client.get("/accounts/login/")
    response = client.post("/accounts/login/", data={
        "username": "admin", "password": password, "csrfmiddlewaretoken": client.cookies["csrftoken"],
    }, headers={"Referer": f"{base}/accounts/login/"})
    assert response.status_code == 302, response.text[:500]
    assert "sessionid" in client.cookies
    return client


def manage(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def api_token(env: dict) -> str:
    done = subprocess.run([sys.executable, "manage.py", "issue_token", "admin"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def wait_for_run(client: httpx.Client, run_id: str, predicate, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    run = None
    while time.monotonic() < deadline:
        response = client.get(f"/api/runs/{run_id}/")
        if response.status_code == 200:
            run = response.json()
            if predicate(run):
                return run
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} never reached the wanted state; last seen: {run}")


def test_up_runs_everything_and_a_second_up_resumes(start_up, up_env):
    data_dir = Path(up_env["SLUICE_DATA_DIR"])

    # ---- first start --------------------------------------------------------------------
    up = start_up()
    up.wait_for("Sluice is up", timeout=180)
    password = PASSWORD.search(up.text)
    assert password, up.text
    password = password.group(1)
    assert len(password) >= 20
    assert up.text.count(password) == 1  # printed once, in the box
    for name in ("web", "runner", "bridge", "celery", "beat"):
        assert re.search(rf"started {name} \(pid \d+\)", up.text), f"{name} was not started:\n{up.text}"
    # Never written to a file: not the data dir, not the broker log.
    for path in data_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert password.encode() not in path.read_bytes(), f"the admin password leaked into {path}"

    client = sign_in(up.base, password)
    assert client.get("/admin/").status_code == 200
    assert sign_in_fails(up.base, "wrong-password")
    # A webhook token sent in the query string never shows in the web's access log lines.
    httpx.post(f"{up.base}/hooks/nothing-here/?token=tok-shown-nowhere-123", json={})
    up.wait_for("/hooks/nothing-here/?token=[redacted]", timeout=20)
    assert "tok-shown-nowhere-123" not in up.text

    api = httpx.Client(base_url=up.base, timeout=10, headers={"Authorization": f"Token {api_token(up_env)}"})
    listed = api.get("/api/workflows/")
    assert listed.status_code == 200, listed.text
    slugs = {w["slug"] for w in listed.json()["results"]}
    assert "expense-approval" in slugs, slugs  # the examples were loaded and published
    started = api.post("/api/workflows/expense-approval/runs/", json={"input": {"employee": "ada", "amount": 42}})
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    waiting = wait_for_run(api, run_id, lambda run: any(
        step["step_id"] == "approve" and step["status"] == "waiting" for step in run["steps"]))
    assert waiting["status"] == "running"
    # Each child's lines carry its padded name.
    for name in ("web", "runner", "bridge", "celery", "beat"):
        assert re.search(rf"^{name}\s*\| ", up.text, re.M), f"no prefixed {name} lines:\n{up.text}"

    # Each child's state: readiness changes are announced, and SIGUSR1 asks for all of them.
    for name in ("web", "runner", "bridge"):
        up.wait_for(f"{name} is ready", timeout=60)
    up.process.send_signal(signal.SIGUSR1)
    up.wait_for("sluice | process  state", timeout=30)  # outside the banner's box this time
    up.wait_for("sluice | beat ", timeout=10)
    for name, state in (("web", "ready"), ("runner", "ready"), ("bridge", "ready"), ("celery", "running"),
                        ("beat", "running")):
        assert re.search(rf"^sluice\s*\| {name}\s+{state}\s+\d+\s+0\s+\d+s$", up.text, re.M), up.text
    metrics_port = int(up_env["SLUICE_METRICS_PORT"])
    assert "sluice_runner_loops_running" in httpx.get(f"http://127.0.0.1:{metrics_port + 1}/metrics").text

    crashed = re.findall(r"(\S+) exited with code", up.text)
    assert crashed == [], f"children crashed while up: {crashed}\n{up.text}"
    # Celery on the embedded default: a transport that idles (a folder in the data dir), not
    # kombu's Kafka transport, which spins against a broker that ignores the long-poll.
    assert re.search(r"^celery\s*\| .*Connected to filesystem://", up.text, re.M), up.text
    assert (data_dir / "celery" / "messages").is_dir()

    took = up.interrupt(timeout=90)
    assert up.process.returncode == 0, up.text
    assert took < 60, f"stopping took {took:.1f}s"
    stop_order = re.findall(r"stopping (\S+) \(pid", up.text)
    assert stop_order == ["beat", "celery", "bridge", "runner", "web"]
    assert "Sluice stopped" in up.text
    assert (data_dir / "kafka" / "kafka.json").exists()
    for pid in up.child_pids():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    # ---- second start on the same data ----------------------------------------------------
    again = start_up()
    again.wait_for("Sluice is up", timeout=180)
    assert "first user created" not in again.text
    assert "created (version" not in again.text  # loading the examples again changes nothing
    client = sign_in(again.base, password)
    assert client.get("/admin/").status_code == 200
    api = httpx.Client(base_url=again.base, timeout=10, headers={"Authorization": f"Token {api_token(up_env)}"})

    # A schedule: celery beat (DatabaseScheduler) -> celery worker over Kafka -> wf.runs -> runner.
    every_minute = {"slug": "every-minute", "name": "Every minute",
                    "trigger": {"type": "schedule", "cron": "* * * * *", "input": {"source": "beat"}},
                    "steps": [{"id": "tick", "type": "transform", "config": {"output": "{{ trigger }}"}}],
                    "edges": []}
    assert api.post("/api/workflows/", json=every_minute).status_code == 201
    assert api.post("/api/workflows/every-minute/publish/").status_code == 200
    # Idempotent: harmless once publishing calls sync_schedule itself.
    manage(up_env, "shell", "-c", "from designer.models import Workflow; from triggers.schedules import "
           "sync_schedule; w = Workflow.objects.get(slug='every-minute'); sync_schedule(w.slug, w.live_version.definition)")

    # A runner killed with SIGKILL is reported and restarted; the run it owned is not lost.
    runner_pid = int(re.findall(r"started runner \(pid (\d+)\)", again.text)[-1])
    os.kill(runner_pid, signal.SIGKILL)
    again.wait_for("runner exited with code -9", timeout=30)
    again.wait_for("restarting runner in 1s", timeout=5)
    deadline = time.monotonic() + 30
    while len(re.findall(r"started runner \(pid \d+\)", again.text)) < 2:
        assert time.monotonic() < deadline, again.text
        time.sleep(0.2)
    signalled = api.post(f"/api/runs/{run_id}/signal/", json={"name": "approve", "payload": {"approved": True}})
    assert signalled.status_code == 202, signalled.text
    done = wait_for_run(api, run_id, lambda run: run["status"] in {"succeeded", "failed", "cancelled"}, timeout=90)
    assert done["status"] == "succeeded", done
    assert {s["step_id"]: s["status"] for s in done["steps"]}["pay"] == "succeeded"
    deadline = time.monotonic() + 100  # the next minute boundary, plus start-up of the pieces
    scheduled = []
    while not scheduled:
        assert time.monotonic() < deadline, f"no scheduled run:\n{again.text[-5000:]}"
        time.sleep(1)
        listed = api.get("/api/runs/", params={"workflow": "every-minute", "status": "succeeded"}).json()
        scheduled = listed["results"]
    assert scheduled[0]["trigger"]["type"] == "schedule" and scheduled[0]["started_by"] == "schedule"
    assert "Sending due task sluice:every-minute" in again.text

    # SIGTERM (what systemd or docker send) stops as cleanly as Ctrl-C.
    began = time.monotonic()
    again.process.send_signal(signal.SIGTERM)
    again.process.wait(90)
    assert time.monotonic() - began < 60
    assert again.process.returncode == 0, again.text
    assert "received SIGTERM" in again.text and "Sluice stopped" in again.text


def sign_in_fails(base: str, password: str) -> bool:
    client = httpx.Client(base_url=base, timeout=10)
    client.get("/accounts/login/")
    response = client.post("/accounts/login/", data={
        "username": "admin", "password": password, "csrfmiddlewaretoken": client.cookies["csrftoken"],
    }, headers={"Referer": f"{base}/accounts/login/"})
    return response.status_code == 200 and "sessionid" not in client.cookies


def test_up_refuses_a_busy_web_port(up_env):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "manage.py", "up", "--web-port", str(port)], cwd=ROOT, env=up_env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"port {port} is already in use" in done.stderr
    assert not (Path(up_env["SLUICE_DATA_DIR"]) / "kafka").exists()  # nothing was started


def test_query_tokens_are_masked():
    from orchestrator.management.commands.up import mask_query_tokens

    line = '127.0.0.1:1 - - [x] "POST /hooks/a/?x=1&token=s3cr3t&y=2" 202 10'
    assert mask_query_tokens(line) == '127.0.0.1:1 - - [x] "POST /hooks/a/?x=1&token=[redacted]&y=2" 202 10'
    assert mask_query_tokens("POST /hooks/a/?TOKEN=abc") == "POST /hooks/a/?TOKEN=[redacted]"
    assert mask_query_tokens("POST /hooks/a/?tokens=1") == "POST /hooks/a/?tokens=1"


def test_process_specs_follow_the_flags(settings):
    from orchestrator.management.commands.up import Command
    from orchestrator.supervisor import listen

    command = Command()
    web = listen(0)
    held = [listen(0) for _ in range(3)]
    try:
        web_port = web.getsockname()[1]
        specs = command._specs(web, runners=2, no_celery=True)
        names = [spec.name for spec in specs]
        assert names == ["web", "runner-1", "runner-2", "bridge"]
        # The web process serves the socket `up` bound (and holds across its restarts).
        assert specs[0].argv[-3:] == ["--fd", str(web.fileno()), "orchestrator.asgi_static:application"]
        assert specs[0].pass_fds == (web.fileno(),)
        assert [spec.env["SLUICE_INSTANCE_ID"] for spec in specs[1:3]] == ["local-runner-1", "local-runner-2"]
        assert all(spec.env["SLUICE_DATA_DIR"] == str(settings.DATA_DIR) for spec in specs)
        with_celery = [spec.name for spec in command._specs(web, runners=1, no_celery=False)]
        assert with_celery == ["web", "runner", "bridge", "celery", "beat"]
        # Metrics sockets: the bridge's first, then one per runner; each is also the child's readiness probe.
        specs = command._specs(web, runners=2, no_celery=True, metrics_sockets=held)
        fds = [sock.fileno() for sock in held]
        ports = [sock.getsockname()[1] for sock in held]
        assert [spec.argv[-1] for spec in specs[1:]] == [f"--metrics-fd={fds[1]}", f"--metrics-fd={fds[2]}",
                                                          f"--metrics-fd={fds[0]}"]
        assert [spec.pass_fds for spec in specs[1:]] == [(fds[1],), (fds[2],), (fds[0],)]
        assert [spec.ready_url for spec in specs] == [f"http://127.0.0.1:{port}/readyz"
                                                      for port in (web_port, ports[1], ports[2], ports[0])]
    finally:
        for sock in (web, *held):
            sock.close()


def test_metrics_sockets_skip_busy_ports():
    import socket

    from orchestrator.management.commands.up import Command

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        held = Command._metrics_sockets(port, runners=2)
        try:
            ports = [sock.getsockname()[1] for sock in held]
            assert port not in ports and len(ports) == 3
            assert ports == sorted(ports) and ports[0] > port
        finally:
            for sock in held:
                sock.close()
    assert Command._metrics_sockets(0, runners=2) == []


def test_up_uses_a_given_cluster_instead_of_starting_a_broker(kafka_broker, start_up, up_env):
    # Pointed at a cluster is production: a secret key of its own is required (none is generated).
    up_env.update({"KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
                   "SLUICE_TOPIC_PREFIX": f"up{free_port()}.", "DJANGO_SECRET_KEY": "up-test-" + "k3y" * 20})
    up = start_up()
    up.wait_for("Sluice is up", timeout=180)
    assert f"using the Kafka cluster at {kafka_broker.bootstrap_servers}" in up.text
    assert "starting the embedded broker" not in up.text
    assert not (Path(up_env["SLUICE_DATA_DIR"]) / "kafka").exists()
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers}).list_topics(timeout=10).topics
    assert f"{up_env['SLUICE_TOPIC_PREFIX']}runs" in topics
    up.interrupt(timeout=90)
    assert up.process.returncode == 0, up.text
    assert "stopping the embedded broker" not in up.text
    # The cluster is not ours to stop.
    assert AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers}).list_topics(timeout=10).topics


def test_up_recovers_after_it_was_killed(start_up, up_env):
    """kill -9 of `up`: its children follow it; the broker (own session) is stopped by the next `up`."""
    up = start_up()
    up.wait_for("Sluice is up", timeout=180)
    children = up.child_pids()
    broker_pid = int((Path(up_env["SLUICE_DATA_DIR"]) / "kafka" / "broker.pid").read_text())
    up.process.kill()
    up.process.wait()

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().split()[2] != "Z"
        except FileNotFoundError:
            return False

    names = {int(pid): name for name, pid in STARTED.findall(up.text)}
    began = time.monotonic()
    while any(alive(pid) for pid in children):
        assert time.monotonic() < began + 60, [names[pid] for pid in children if alive(pid)]
        time.sleep(0.2)
    assert alive(broker_pid)

    again = start_up()
    again.wait_for("Sluice is up", timeout=180)
    assert f"stopping the broker a previous `up` left running (pid {broker_pid})" in again.text
    assert not alive(broker_pid)
    again.interrupt(timeout=90)
    assert again.process.returncode == 0, again.text
    assert not (Path(up_env["SLUICE_DATA_DIR"]) / "kafka" / "broker.pid").exists()
