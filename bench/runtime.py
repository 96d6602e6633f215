"""Sluice runtime benchmark: a three-step workflow on the embedded broker with one runner.

Measures, from start request to the run-finished history event:
- throughput: N runs started as fast as possible, runs/s until the last one finished, with the
  bridge projecting into the database at the same time (as under `manage.py up`), and how far
  the monitor's run table lags behind the history topic meanwhile (sampled every half second);
- latency at half that rate and at a light 50 runs/s: p50/p99 per run, and at the light rate
  where each millisecond goes;
- every run replayed through the engine (`manage.py verify_history`): divergences;
- idle CPU of runner and bridge afterwards, and peak memory of runner, bridge and broker.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

from .harness import collector_paused, django_env, manage, peak_rss_mib, percentile, stop, tree_cpu_seconds, tree_peak_rss_mib, wait_for

WORKFLOW = {
    "slug": "bench-three", "name": "Benchmark: three steps", "trigger": {"type": "manual"},
    "steps": [
        {"id": "prepare", "type": "transform", "config": {"output": {"n": "{{ trigger.n + 1 }}"}}},
        {"id": "echo", "type": "python", "config": {"handler": "demo.echo", "input": "{{ steps.prepare.output }}"}},
        {"id": "finish", "type": "transform", "config": {"output": {"n": "{{ steps.echo.output.n * 2 }}"}}},
    ],
    "edges": [{"from": "prepare", "to": "echo"}, {"from": "echo", "to": "finish"}],
}


# Runs per second of the light-load latency test (the same for Sluice and the peer).
LIGHT_RATE = 50.0

# Single runs, each after this long with nothing to do (the same for Sluice and the peer).
IDLE_RUNS, IDLE_BEFORE_SECONDS = 5, 3.0

# Extra `manage.py runner` options, e.g. BENCH_RUNNER_ARGS="--worker-processes 1".
RUNNER_ARGS = os.environ.get("BENCH_RUNNER_ARGS", "").split()


class FinishWatcher:
    """Follows the history topic and notes when each run finished (receive time), and for the
    runs named in `traced` the times of every hop, for the latency breakdown."""

    def __init__(self, bootstrap: str, topic: str, runs_topic: str):
        from confluent_kafka import Consumer

        self.finished: dict[str, float] = {}
        self.received_wall: dict[str, float] = {}
        self.traced: set[str] = set()
        self.events: dict[str, list] = {}
        self.results: dict[str, object] = {}  # traced runs' StepResult, as the worker sent it
        self.runs_topic = runs_topic
        self.failed = 0
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                                  "auto.offset.reset": "latest", "isolation.level": "read_committed",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 5})
        # wf.runs too: the worker's own start and end times of each traced step are in its result.
        self.consumer.subscribe([topic, runs_topic])
        self.stop = threading.Event()
        # The measuring consumer must not take the machine from what it measures: on the
        # embedded broker an idle consumer refetches in a tight loop (measured: 37% of a core in
        # the broker plus 45% in this process, all benchmark long). It backs off as Sluice's own
        # loops do: it keeps fetching while records came in the last quarter second (the light
        # load's runs are timed at full resolution), and pauses after that.
        from orchestrator.runtime.loops import IdleBackoff

        self.backoff = IdleBackoff(self.consumer, self.stop)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        # Join the group and get a position before any run starts, so nothing is missed.
        wait_for(lambda: self.consumer.consume(1, 0.2) is not None and self.consumer.assignment(), 30, "history assignment")
        for tp in self.consumer.assignment():
            self.consumer.seek(tp.__class__(tp.topic, tp.partition, -1))  # OFFSET_END
        self.thread.start()
        return self

    def _run(self):
        from orchestrator.runtime import codec

        while not self.stop.is_set():
            # Wait for one record, then drain what is there: consume(n, timeout) would wait out
            # its whole timeout and add it to every latency measured.
            first = self.consumer.poll(self.backoff.timeout(0.05))
            if first is None:
                self.backoff.idle()
                continue
            self.backoff.busy()
            msgs = [first, *self.consumer.consume(2000, timeout=0)]
            now, wall = time.perf_counter(), time.time()
            for msg in msgs:
                if msg.error():
                    continue
                traced = self.traced and msg.key() and msg.key().decode() in self.traced
                if msg.topic() == self.runs_topic:
                    if traced and b'"ok":' in msg.value():  # a StepResult, not a start
                        self.results[msg.key().decode()] = codec.decode_run_command(msg.value())
                    continue
                if traced:
                    self.events.setdefault(msg.key().decode(), []).append(codec.decode_history(msg.value()))
                # Only run-level events are decoded (msgspec writes `kind` right after run_id and seq).
                if b'"kind":"run_' not in msg.value():
                    continue
                event = codec.decode_history(msg.value())
                if event.kind == "run_succeeded":
                    self.finished.setdefault(event.run_id, now)
                    self.received_wall.setdefault(event.run_id, wall)
                elif event.kind in ("run_failed", "run_cancelled"):
                    self.failed += 1
                    self.finished.setdefault(event.run_id, now)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.consumer.close()


def run(runs: int = 20000, latency_seconds: float = 10.0, idle_seconds: float = 10.0) -> dict:
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    from orchestrator.runtime.broker import EmbeddedBroker, free_port

    broker = EmbeddedBroker(work / "kafka", free_port()).start()
    env = django_env(
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, SLUICE_TOPIC_PREFIX="bench.", SLUICE_PARTITIONS=4,
        SLUICE_EMBEDDED_BROKER=1, SLUICE_DATA_DIR=work, SLUICE_INSTANCE_ID="bench-runner",
        # The bridge's database: SQLite in the work dir, or a fresh PostgreSQL named by DATABASE_URL
        # (`scripts/with-postgres .venv/bin/python -m bench runtime`).
        DATABASE_URL=os.environ.get("DATABASE_URL") or f"sqlite:///{work / 'bench.sqlite3'}", SLUICE_LOG_LEVEL="WARNING",
    )
    os.environ.update({k: env[k] for k in ("KAFKA_BOOTSTRAP_SERVERS", "SLUICE_TOPIC_PREFIX", "SLUICE_PARTITIONS",
                                           "SLUICE_EMBEDDED_BROKER", "SLUICE_DATA_DIR", "DATABASE_URL")})
    import django

    django.setup()
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    from orchestrator.messages import StartRun
    from orchestrator.runtime import codec, commands
    from orchestrator.runtime.kafka import producer_config
    from orchestrator.runtime.topics import Topics, ensure_topics

    topics = Topics("bench.")
    ensure_topics(AdminClient({"bootstrap.servers": broker.bootstrap_servers}), topics.layout(4))
    commands.publish_definition(WORKFLOW["slug"], 1, WORKFLOW, by="bench")
    manage(["migrate", "-v", "0"], env, work / "migrate.log").wait()
    runner = manage(["runner", "--instance-id", "bench-runner", *RUNNER_ARGS], env, work / "runner.log")
    watcher = FinishWatcher(broker.bootstrap_servers, topics.history, topics.runs).start()
    producer = Producer(producer_config(**{"linger.ms": 5, "batch.num.messages": 10000,
                                           "queue.buffering.max.messages": 1000000}))

    def start(run_id: str, n: int) -> None:
        command = StartRun(run_id=run_id, workflow=WORKFLOW["slug"], version=1, input={"n": n},
                           trigger={"type": "manual"}, started_by="bench", ts=time.time())
        producer.produce(topics.runs, key=run_id.encode(), value=codec.encode(command),
                         headers=codec.headers_for(command))

    result = {"runs": runs, "database": env["DATABASE_URL"].split(":", 1)[0]}
    bridge = manage(["bridge"], env, work / "bridge.log")
    try:
        # Warm up: the runner joins its groups and reads definitions.
        warm = [f"warm-{i}" for i in range(200)]
        for i, run_id in enumerate(warm):
            start(run_id, i)
        producer.flush()
        wait_for(lambda: all(r in watcher.finished for r in warm), 120, "warm-up runs")

        wait_for(lambda: _projected_runs() >= len(warm), 120, "the bridge to project the warm-up runs")

        # Throughput: everything at once, the bridge projecting meanwhile.
        ids = [f"t-{i}" for i in range(runs)]
        lag = LagSampler(watcher, len(warm)).start()
        pids = {"runner (and its worker processes)": runner.pid, "bridge": bridge.pid, "broker": broker.process.pid}
        server = _database_server_pid()
        if server is not None:
            pids["database server (PostgreSQL, all its processes)"] = server
        cpu_before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
        began = time.perf_counter()
        for i, run_id in enumerate(ids):
            start(run_id, i)
            if i % 5000 == 0:
                producer.poll(0)
        producer.flush()
        sent = time.perf_counter()
        wait_for(lambda: all(r in watcher.finished for r in ids[-100:]) and sum(r in watcher.finished for r in ids) == runs,
                 600, "throughput runs", interval=0.2)
        ended = max(watcher.finished[r] for r in ids)
        cpu_finished = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
        result["throughput"] = runs / (ended - began)
        result["send_seconds"] = sent - began
        result["failed"] = watcher.failed
        wait_for(lambda: _projected_runs() >= len(warm) + runs, 1800, "the bridge to project the burst", interval=0.5)
        projected = time.perf_counter()
        cpu_projected = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
        lag.stop()
        # Whose CPU a burst takes: until the last run finished, then until the bridge caught up.
        result["burst_cpu"] = {name: (cpu_finished[name] - cpu_before[name], cpu_projected[name] - cpu_before[name])
                               for name in pids}
        result["burst_seconds"] = (ended - began, projected - began)
        result["bridge_runs_per_second"] = runs / (projected - began)
        result["projection_lag"] = lag.samples

        # Latency at half the maximum rate, and at a light fixed rate (what one run feels like).
        sent_wall: dict[str, float] = {}

        def latency_at(rate: float, prefix: str) -> tuple[int, float, float]:
            count = int(rate * latency_seconds)
            sent_at: dict[str, float] = {}
            with collector_paused():
                _send_at(rate, count, prefix, sent_at)
            wait_for(lambda: all(r in watcher.finished for r in sent_at), 300, "latency runs", interval=0.2)
            latencies = [(watcher.finished[r] - t) * 1000 for r, t in sent_at.items()]
            return count, percentile(latencies, 50), percentile(latencies, 99)

        def _send_at(rate: float, count: int, prefix: str, sent_at: dict) -> None:
            began = time.perf_counter()
            for i in range(count):
                delay = began + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                run_id = f"{prefix}-{i}"
                sent_at[run_id], sent_wall[run_id] = time.perf_counter(), time.time()
                start(run_id, i)
                producer.flush()  # each start leaves at once, as an API call's does
            # The last runs of the phase finish after the last start: wait for them, still timed.
            wait_for(lambda: all(r in watcher.finished for r in list(sent_at)[-50:]), 60, "the phase's last runs",
                     interval=0.05)

        rate = result["throughput"] / 2
        count, p50, p99 = latency_at(rate, "l")
        # Light load means a light machine: the bridge projects the half-rate phase's runs
        # first (seconds of CPU it would otherwise take from the runs being timed).
        wait_for(lambda: _projected_runs() >= len(warm) + runs + count, 600, "the bridge to catch up", interval=0.5)
        watcher.traced = {f"light-{i}" for i in range(int(LIGHT_RATE * latency_seconds))}
        light, light_p50, light_p99 = latency_at(LIGHT_RATE, "light")
        count += light
        result.update(rate=rate, latency_runs=count, p50_ms=p50, p99_ms=p99, light_p50_ms=light_p50, light_p99_ms=light_p99)
        result["hops"] = hops(watcher, sent_wall)

        # One run after the stack sat idle (someone trying a workflow by hand): the idle loops
        # have paused their fetches (IdleBackoff) and resume on their next check.
        after_idle = []
        with collector_paused():
            for i in range(IDLE_RUNS):
                time.sleep(IDLE_BEFORE_SECONDS)
                run_id, sent = f"after-idle-{i}", time.perf_counter()
                start(run_id, i)
                producer.flush()
                wait_for(lambda: run_id in watcher.finished, 60, "a run after idle", interval=0.005)
                after_idle.append((watcher.finished[run_id] - sent) * 1000)
        count += IDLE_RUNS
        result["after_idle_ms"] = (percentile(after_idle, 50), max(after_idle))

        # Every run replayed through the engine, then runner and bridge sit idle.
        total = len(warm) + runs + count
        wait_for(lambda: _projected_runs() >= total, 1800, "the bridge to project every run", interval=1)
        from orchestrator.runtime.verify import verify

        checked = time.perf_counter()
        report = verify(topics)
        result["verified"] = {"runs": report.replayed, "divergences": len(report.divergences),
                              "seconds": time.perf_counter() - checked}
        time.sleep(15)  # let the last commits, broker snapshots and back-offs settle: idle means idle
        processes = {"runner": runner, **({"bridge": bridge} if bridge is not None else {})}
        before = {name: tree_cpu_seconds(p.pid) for name, p in processes.items()}
        time.sleep(idle_seconds)
        result["idle_cpu_percent"] = {name: (tree_cpu_seconds(p.pid) - before[name]) / idle_seconds * 100
                                      for name, p in processes.items()}
        result["peak_rss_mib"] = {name: tree_peak_rss_mib(p.pid) for name, p in processes.items()}
        result["peak_rss_mib"]["broker"] = peak_rss_mib(broker.process.pid)
    finally:
        watcher.close()
        stop(runner)
        if bridge is not None:
            stop(bridge)
        # Closed before the broker stops (this one, and the one that published the workflow): a
        # live producer would log a failed reconnect twice a second through the rest of the run.
        producer.close()
        commands.reset_producer()
        broker.stop()
    return result


class LagSampler:
    """How far the monitor's run table is behind the history topic, every half second: the
    runs finished on the topic but not yet succeeded in the database, and how long ago the
    newest run the database has caught up to finished on the topic (seconds)."""

    def __init__(self, watcher: FinishWatcher, before: int):
        self.watcher, self.before = watcher, before
        self.samples: list[tuple[float, int, float]] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.began = time.perf_counter()
        self.thread.start()
        return self

    def _run(self):
        while not self.stop_event.wait(0.5):
            now = time.perf_counter()
            finished = sorted(t for t in self.watcher.finished.values() if t >= self.began)
            projected = max(0, _projected_runs() - self.before)
            behind = max(0, len(finished) - projected)
            seconds = 0.0 if behind == 0 else now - finished[projected]
            self.samples.append((now - self.began, behind, seconds))

    def stop(self):
        self.stop_event.set()
        self.thread.join(5)


def hops(watcher: FinishWatcher, sent_wall: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Where the milliseconds of a light-load run go: (p50, p99) per hop, from the history's
    times (engine decisions), the worker's own times in its StepResult and the watcher's
    receive time. All clocks are this machine's. Each hop past the first includes one Kafka
    transaction commit and one fetch."""
    parts: dict[str, list[float]] = {"start -> engine decides": [],
                                     "engine decides -> worker starts the step (commit, fetch)": [],
                                     "worker runs the handler": [],
                                     "worker ends -> engine decides (commit, fetch)": [],
                                     "engine decides -> history read (commit, fetch)": []}
    for run_id, events in watcher.events.items():
        by_kind = {(e.kind, e.step_id): e for e in events}
        started, dispatched = by_kind.get(("run_started", "")), by_kind.get(("step_started", "echo"))
        echoed, finished = by_kind.get(("step_succeeded", "echo")), by_kind.get(("run_succeeded", ""))
        result = watcher.results.get(run_id)
        if not (started and dispatched and echoed and finished and result and run_id in sent_wall
                and run_id in watcher.received_wall):
            continue
        parts["start -> engine decides"].append(started.ts - sent_wall[run_id])
        parts["engine decides -> worker starts the step (commit, fetch)"].append(result.started_at - dispatched.ts)
        parts["worker runs the handler"].append(result.ended_at - result.started_at)
        parts["worker ends -> engine decides (commit, fetch)"].append(echoed.ts - result.ended_at)
        parts["engine decides -> history read (commit, fetch)"].append(watcher.received_wall[run_id] - finished.ts)
    return {name: (percentile([v * 1000 for v in values], 50), percentile([v * 1000 for v in values], 99))
            for name, values in parts.items()}


def _database_server_pid() -> int | None:
    """The PostgreSQL server's first process, when it runs on this machine and the benchmark may
    read its data directory (scripts/with-postgres as root): its CPU is part of the bridge's cost.
    None on SQLite or a server elsewhere. The benchmark's own short queries count in it too."""
    from django.db import DatabaseError, connection

    if connection.vendor != "postgresql":
        return None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW data_directory")
            directory = cursor.fetchone()[0]
        pid = int((Path(directory) / "postmaster.pid").read_text().split()[0])
        Path(f"/proc/{pid}/stat").stat()
        return pid
    except (DatabaseError, OSError, ValueError, IndexError):
        return None
    finally:
        connection.close()


def _projected_runs() -> int:
    from django.db import connection

    from monitor.models import Run

    try:
        return Run.objects.filter(status="succeeded").count()
    finally:
        connection.close()
