"""Idle CPU of the whole `manage.py up` stack, at start and after bursts of use (not a test).

    python -m bench idle [--runs 1000] [--clients 20] [--cycles 1] [--window 30] [--settle 20]
                         [--hold-minutes 0 --every-minutes 10]

Starts `manage.py up` for real (embedded broker, web, runner, bridge, celery worker and beat)
on free ports with a data dir of its own, then measures, for every process `up` started and
the broker, the CPU it used over `--window` seconds of idleness (/proc/PID/stat utime+stime,
children included, e.g. celery's pool; `up` itself without its children):
- at start, `--settle` seconds after the stack said it is up;
- after each burst, once every run of the burst is finished in the monitor's database (the
  bridge has projected it) and the websocket clients have gone, plus `--settle` seconds;
- with `--hold-minutes`, every `--every-minutes` after the last burst (the long idle).

A burst: `--clients` run-page websockets and two dashboard feeds connected, `--runs` runs of
the `hello` example and `--runs`/4 of `flaky-with-retries` (a failing first attempt and a
retry each) started through the REST API by 8 concurrent clients while the sockets watch.

CPU seconds over a window are a property of the idle processes, not of the machine's load,
so the figures hold on a busy machine too (other work only delays the bursts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .harness import CLOCK_TICKS, ROOT, cpu_seconds, table, tree_cpu_seconds, wait_for

STARTED = re.compile(r"started (\S+) \(pid (\d+)\)")
PASSWORD = re.compile(r"first user created:\s+username admin\s+password (\S+)")
# The broker's thread that rewrites its whole state file (kafka.json) a few seconds after any change.
AUTOSAVE = "broker-autosave"
# Rows in the order `up` starts them; `up` itself last.
PROCESSES = ["broker", AUTOSAVE, "web", "runner", "bridge", "celery", "beat", "up"]
LABELS = {
    "broker": "broker (embedded, noida-db)", AUTOSAVE: "... of which rewriting its state file",
    "web": "web (daphne + live fan-out)",
    "runner": "runner (engine, worker, triggers)", "bridge": "bridge (history projector)",
    "celery": "celery worker (and its pool)", "beat": "celery beat", "up": "up (the supervisor itself)",
}


class Stack:
    """One `manage.py up` in a subprocess, its output collected line by line."""

    def __init__(self, data_dir: Path):
        from orchestrator.runtime.broker import free_port

        self.data_dir = data_dir
        self.web_port = free_port()
        self.base = f"http://127.0.0.1:{self.web_port}"
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("KAFKA_", "DATABASE_URL", "REDIS_URL", "SLUICE_", "DJANGO_", "CELERY_"))}
        env.update(SLUICE_DATA_DIR=str(data_dir), SLUICE_KAFKA_PORT=str(free_port()), PYTHONUNBUFFERED="1")
        self.env = env
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "up", "--web-port", str(self.web_port)], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with open(self.data_dir / "up.log", "a") as log:
            for raw in iter(self.process.stdout.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.lines.append(line)
                log.write(line + "\n")

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_up(self, timeout: float = 240) -> str:
        wait_for(lambda: "Sluice is up" in self.text or self.process.poll() is not None, timeout, "Sluice is up")
        if self.process.poll() is not None:
            raise RuntimeError(f"up exited with {self.process.returncode}:\n{self.text[-4000:]}")
        password = PASSWORD.search(self.text)
        if not password:
            raise RuntimeError("up printed no admin password (a data dir that was used before?)")
        return password.group(1)

    def pids(self) -> dict[str, int]:
        """Current pid per process (a restarted child's latest pid)."""
        pids = {name: int(pid) for name, pid in STARTED.findall(self.text)}
        pids["broker"] = int((self.data_dir / "kafka" / "broker.pid").read_text())
        pids["up"] = self.process.pid
        return pids

    def crashes(self) -> list[str]:
        return re.findall(r"^sluice\s*\| (\S+ exited with code .*)$", self.text, re.M)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)


def thread_cpu_seconds(pid: int, thread_name: str) -> float:
    """CPU time of a process's threads called `thread_name` (/proc/PID/task/TID/comm)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            if (task / "comm").read_text().strip() == thread_name:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        except FileNotFoundError:
            pass
    return total


def idle_cpu(stack: Stack, window: float) -> dict[str, float]:
    """% of one core per process over `window` seconds (children included, except for `up`),
    plus AUTOSAVE: the part of the broker's spent rewriting its state file."""
    pids = stack.pids()

    def reading(name: str) -> float:
        if name == AUTOSAVE:
            return thread_cpu_seconds(pids["broker"], "autosave")
        return cpu_seconds(pids[name]) if name == "up" else tree_cpu_seconds(pids[name])

    names = [*pids, AUTOSAVE]
    before = {name: reading(name) for name in names}
    time.sleep(window)
    if stack.pids() != pids:
        raise RuntimeError(f"a process restarted during the measurement: {stack.crashes()}")
    return {name: (reading(name) - before[name]) / window * 100 for name in names}


# ---- a burst of use ------------------------------------------------------------------------
def _sign_in(base: str, password: str):
    import httpx

    client = httpx.Client(base_url=base, timeout=30)
    client.get("/accounts/login/")
    response = client.post("/accounts/login/", data={
        "username": "admin", "password": password, "csrfmiddlewaretoken": client.cookies["csrftoken"],
    }, headers={"Referer": f"{base}/accounts/login/"})
    if response.status_code != 302:
        raise RuntimeError(f"sign-in failed: {response.status_code}")
    return client


def _api_token(env: dict) -> str:
    done = subprocess.run([sys.executable, "manage.py", "issue_token", "admin"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip()


def _finished_runs(api, slug: str) -> int:
    total = 0
    for status in ("succeeded", "failed", "cancelled"):
        page = api.get("/api/runs/", params={"workflow": slug, "status": status, "page_size": 1})
        page.raise_for_status()
        total += page.json()["count"]
    return total


async def _burst(base: str, token: str, cookie: str, runs: int, clients: int) -> dict:
    import httpx
    from websockets.asyncio.client import connect

    origin = base
    ws_base = base.replace("http://", "ws://")
    received = {"events": 0}
    sockets_ready: list[asyncio.Event] = []

    async def watch(path: str, ready: asyncio.Event) -> None:
        async with connect(f"{ws_base}{path}", additional_headers={"Cookie": cookie}, origin=origin,
                           open_timeout=60, max_queue=None) as socket:
            ready.set()
            async for raw in socket:
                received["events"] += len(_events(json.loads(raw)))

    def open_socket(path: str) -> asyncio.Task:
        ready = asyncio.Event()
        sockets_ready.append(ready)
        return asyncio.create_task(watch(path, ready))

    watchers = [open_socket("/ws/monitor/") for _ in range(2)]
    plan = [("hello", {"name": f"n{i}"}) for i in range(runs)]
    plan += [("flaky-with-retries", {"fail_times": 1}) for _ in range(runs // 4)]
    started: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=60, headers={"Authorization": f"Token {token}"}) as api:
        queue: asyncio.Queue = asyncio.Queue()
        for item in plan:
            queue.put_nowait(item)

        async def starter() -> None:
            while not queue.empty():
                slug, payload = queue.get_nowait()
                response = await api.post(f"/api/workflows/{slug}/runs/", json={"input": payload})
                if response.status_code != 202:
                    raise RuntimeError(f"start of {slug} refused: {response.status_code} {response.text[:300]}")
                run_id = response.json()["id"]
                started.append(run_id)
                if len(watchers) < clients + 2:
                    watchers.append(open_socket(f"/ws/runs/{run_id}/?since=0"))

        began = time.monotonic()
        await asyncio.gather(*(starter() for _ in range(8)))
        start_seconds = time.monotonic() - began
    await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in sockets_ready)), 120)
    return {"watchers": watchers, "received": received, "started": len(started), "start_seconds": start_seconds}


def burst(stack: Stack, password: str, token: str, runs: int, clients: int, counts: dict) -> dict:
    """Start a burst and wait until its runs are finished in the database; sockets closed after."""
    import httpx

    session = _sign_in(stack.base, password)
    cookie = f"sessionid={session.cookies['sessionid']}"
    api = httpx.Client(base_url=stack.base, timeout=30, headers={"Authorization": f"Token {token}"})

    async def run_it() -> dict:
        result = await _burst(stack.base, token, cookie, runs, clients)
        counts["hello"] += runs
        counts["flaky-with-retries"] += runs // 4
        began = time.monotonic()
        while True:
            done = {slug: await asyncio.to_thread(_finished_runs, api, slug) for slug in counts}
            if all(done[slug] >= counts[slug] for slug in counts):
                break
            if time.monotonic() - began > 1800:
                raise TimeoutError(f"runs not finished and projected after 30 min: {done} of {counts}")
            await asyncio.sleep(1)
        result["finish_seconds"] = time.monotonic() - began
        await asyncio.sleep(2)  # the last live events reach the sockets
        for task in result.pop("watchers"):
            task.cancel()
        result["events_delivered"] = result.pop("received")["events"]
        return result

    try:
        return asyncio.run(run_it())
    finally:
        api.close()
        session.close()


def _events(frame: dict) -> list[dict]:
    """The history events of one websocket frame: a run page's `history` frame carries one, the
    dashboard feed's `history_batch` frame those of one tick (monitor/live.py)."""
    if frame.get("type") == "history":
        return [frame.get("event") or {}]
    if frame.get("type") == "history_batch":
        return frame.get("events") or []
    return []


async def _first_run_latency(base: str, token: str, cookie: str) -> float:
    """ms from a start request to its run_succeeded on a dashboard socket: every back-off on the
    way (runner loops, web fan-out) has to wake up for it."""
    import httpx
    from websockets.asyncio.client import connect

    async with connect(f"{base.replace('http://', 'ws://')}/ws/monitor/", additional_headers={"Cookie": cookie},
                       origin=base, open_timeout=60, max_queue=None) as socket:
        async with httpx.AsyncClient(base_url=base, timeout=60, headers={"Authorization": f"Token {token}"}) as api:
            began = time.perf_counter()
            response = await api.post("/api/workflows/hello/runs/", json={"input": {"name": "wake"}})
            response.raise_for_status()
            run_id = response.json()["id"]
        async with asyncio.timeout(60):
            async for raw in socket:
                for event in _events(json.loads(raw)):
                    if event.get("run_id") == run_id and event.get("kind") == "run_succeeded":
                        return (time.perf_counter() - began) * 1000
    raise RuntimeError("the dashboard socket closed before the run finished")


def first_run_latency(stack: Stack, password: str, token: str) -> float:
    session = _sign_in(stack.base, password)
    try:
        return asyncio.run(_first_run_latency(stack.base, token, f"sessionid={session.cookies['sessionid']}"))
    finally:
        session.close()


# ---- the command ---------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench idle", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs of `hello` per burst (plus a quarter as many flaky ones)")
    parser.add_argument("--clients", type=int, default=20, help="run-page websockets per burst (plus 2 dashboard feeds)")
    parser.add_argument("--cycles", type=int, default=1, help="bursts, each followed by an idle measurement")
    parser.add_argument("--window", type=float, default=30.0, help="seconds of each idle measurement")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds to wait before measuring")
    parser.add_argument("--hold-minutes", type=float, default=0.0, help="keep measuring this long after the last burst")
    parser.add_argument("--every-minutes", type=float, default=10.0)
    parser.add_argument("--keep", action="store_true", help="keep the data dir (its up.log) afterwards")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="sluice-bench-idle-"))
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    stack = Stack(data_dir)
    columns: list[tuple[str, dict]] = []
    notes: list[str] = []
    try:
        password = stack.wait_up()
        token = _api_token(stack.env)
        counts = {"hello": 0, "flaky-with-retries": 0}

        def measure(title: str) -> None:
            columns.append((title, idle_cpu(stack, args.window)))
            snapshots.append(sum(f.stat().st_size for f in (data_dir / "kafka").glob("*.json")) / 2**20)
            # After the window: the first run after an idle spell, and counted like a burst's.
            latencies.append(first_run_latency(stack, password, token))
            counts["hello"] += 1

        latencies: list[float] = []
        snapshots: list[float] = []  # MiB of the broker's state file at each measurement
        time.sleep(args.settle)
        measure("at start")
        for cycle in range(1, args.cycles + 1):
            result = burst(stack, password, token, args.runs, args.clients, counts)
            notes.append(f"burst {cycle}: {result['started']} runs started through the API in "
                         f"{result['start_seconds']:.1f} s, all finished and projected "
                         f"{result['finish_seconds']:.1f} s later; {args.clients} run sockets + 2 feeds got "
                         f"{result['events_delivered']:,} live events")
            time.sleep(args.settle)
            measure(f"after burst {cycle}" if args.cycles > 1 else "after a burst")
        held = 0.0
        while held + args.every_minutes <= args.hold_minutes + 1e-9:
            time.sleep(max(0.0, args.every_minutes * 60 - args.window))
            held += args.every_minutes
            measure(f"{held:g} min later")
        crashes = stack.crashes()
    finally:
        stack.stop()
        if args.keep:
            print(f"data dir kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)

    rows = [[LABELS[name], *(values.get(name, float("nan")) for _title, values in columns)] for name in PROCESSES]
    rows.append(["whole stack", *(sum(value for name, value in values.items() if name != AUTOSAVE)
                                  for _title, values in columns)])
    print(table(f"Idle CPU of `manage.py up`, % of one core over {args.window:g} s "
                f"(measured {args.settle:g} s after start or after the burst was projected)",
                ["process", *(title for title, _values in columns)], rows))
    print("- the first run after each idle spell, start request to run_succeeded on a dashboard socket: "
          + ", ".join(f"{title} {ms:,.0f} ms" for (title, _values), ms in zip(columns, latencies)))
    for note in notes:
        print(f"- {note}")
    print("- the broker's state file (kafka.json, rewritten whole a few seconds after any change): "
          + ", ".join(f"{title} {mib:,.1f} MiB" for (title, _values), mib in zip(columns, snapshots)))
    print(f"- child processes that crashed: {', '.join(crashes) or 'none'}")
    print(f"- load average at the end (1/5 min, {os.cpu_count()} cores): "
          "{:.1f} / {:.1f}".format(*os.getloadavg()[:2]))


if __name__ == "__main__":
    main()
