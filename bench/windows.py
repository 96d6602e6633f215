"""Window benchmark: records per second through a tumbling count window, exactly-once, Sluice
beside Quix Streams on the same embedded broker and the same input topic.

N records (keys over U users, timestamps spread over three 10 s tumbling windows that ended
before the burst) are produced at full speed to one 4-partition topic while the system under
test follows it. Measured from the first record produced:
- counted: every record folded into its window and committed (the consumer group that does the
  counting has committed offsets up to the last record: Sluice's window loop on wf.windows.in,
  Quix's application on the input topic);
- emitted: every window's result read (read_committed) from the output topic.
Checked: the counts of the results add up to N, one result per (key, window), each equal to
what was produced.

The two close windows differently, so "emitted" means different things:
- Sluice closes a window on the wall clock, when it passes the window's end plus the grace
  period, whether or not later records come. The grace must cover the whole ingest (a record
  read after its window closed is late and dropped), so "emitted" includes waiting out the
  grace; the table shows how long after that close the last result was out.
- Quix Streams closes on event time: a record past a window's end plus grace closes it. The
  benchmark writes one such record to every partition right after the N records
  (closing_strategy="partition"), so its "emitted" is processing time only.

Sluice runs as one `manage.py runner --no-engine --workers 0` (its triggers and window loop;
the run each closed window starts is written to wf.runs but not executed). Quix Streams runs
in its own environment (bench/requirements-quix.txt; it pins a confluent-kafka older than
Sluice's), commit interval 1 s (the default is 5 s).

    python -m bench windows [--records 200000] [--users 1000] [--grace 60] [--no-quix | --no-sluice]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from .harness import ROOT, django_env, manage, stop, table, tree_cpu_seconds, tree_peak_rss_mib, wait_for

SIZE_S = 10
WINDOWS = 3
PARTITIONS = 4
QUIX_PYTHON = Path(os.environ.get("BENCH_QUIX_PYTHON", ROOT / ".venv-quix" / "bin" / "python"))
QUIX_SETUP = ("python3.11 -m venv .venv-quix && .venv-quix/bin/pip install -r bench/requirements-quix.txt "
              "(or point BENCH_QUIX_PYTHON at a Python that has quixstreams)")

# Kafka Streams' documented figures: NOT measured here, printed only when Quix cannot run. Kafka
# Streams runs on the JVM and needs a real Kafka cluster; no records/s figure for a windowed
# count with exactly-once was found in its documentation.
KAFKA_STREAMS_FIGURES = [
    ["Confluent blog, N. Narkhede, \"Exactly-once Semantics are Possible: Here's How Kafka Does it\" (2017)",
     ("transactional producer, 1 KB records, 100 ms transactions: throughput about 3 % below an "
      "at-least-once, in-order producer's (the cost of transactions, not a windowed aggregation)")],
]


def runqueue_seconds(pid: int) -> float:
    """Time the process tree's threads spent runnable but waiting for a CPU (/proc/.../schedstat)."""
    from .harness import process_tree

    total = 0
    for p in process_tree(pid):
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (FileNotFoundError, IndexError, ValueError):
                pass
    return total / 1e9


def generate(n: int, users: int, end_ms: int, seed: int = 7) -> list[tuple[bytes, bytes, int]]:
    """(key, value, timestamp ms): keys u0000.., timestamps in the WINDOWS windows before end_ms."""
    rng = random.Random(seed)
    span = WINDOWS * SIZE_S * 1000
    out = []
    for i in range(n):
        user = f"u{rng.randrange(users):04d}"
        out.append((user.encode(), json.dumps({"user": user, "n": i}).encode(), end_ms - span + rng.randrange(span)))
    return out


def expected_counts(records) -> Counter:
    size = SIZE_S * 1000
    return Counter((key.decode(), ts - ts % size) for key, _value, ts in records)


class OutputWatcher:
    """Reads an output topic from the start (read_committed), noting when each record arrived."""

    def __init__(self, bootstrap: str, topic: str):
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                                  "isolation.level": "read_committed", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 50})
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        self.records: list[tuple[float, bytes | None, bytes]] = []
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.halt.is_set():
            msgs = self.consumer.consume(1000, timeout=0.05)
            now = time.perf_counter()
            self.records.extend((now, m.key(), m.value()) for m in msgs if m.error() is None)

    def close(self):
        self.halt.set()
        self.thread.join(5)
        self.consumer.close()


class Offsets:
    """Committed offsets of a consumer group, and the topic's high watermarks."""

    def __init__(self, bootstrap: str, group: str, topic: str):
        from confluent_kafka import Consumer, TopicPartition

        self.partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})

    def committed(self) -> list[int]:
        return [max(0, tp.offset) for tp in self.consumer.committed(self.partitions, timeout=10)]

    def high(self) -> list[int]:
        return [self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in self.partitions]

    def close(self):
        self.consumer.close()


def produce(bootstrap: str, topic: str, records) -> tuple[float, float]:
    """Everything at full speed, partitioned by key; (perf_counter of the first, of the flush)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10000,
                         "queue.buffering.max.messages": 1000000, "partitioner": "murmur2_random"})
    began = time.perf_counter()
    for i, (key, value, ts) in enumerate(records):
        producer.produce(topic, key=key, value=value, timestamp=ts)
        if i % 5000 == 0:
            producer.poll(0)
    producer.flush(60)
    return began, time.perf_counter()


def results(watcher: OutputWatcher, decode) -> tuple[Counter, int]:
    """(key, window start) -> count from the output records, and how many results repeated a window."""
    got, duplicates = Counter(), 0
    for _t, key, value in watcher.records:
        window, count = decode(key, value)
        duplicates += window in got
        got[window] += count
    return got, duplicates


def summary(name: str, n: int, began: float, counted: float, emitted: float, expected: Counter, got: Counter,
            duplicates: int, **extra) -> dict:
    return {"system": name, "records": n, "counted_s": counted - began, "emitted_s": emitted - began,
            "counted_rate": n / (counted - began), "emitted_rate": n / (emitted - began),
            "windows_expected": len(expected), "windows_emitted": len(got), "sum_of_counts": sum(got.values()),
            "duplicates": duplicates, "correct": got == expected and duplicates == 0, **extra}


# ---- Sluice ------------------------------------------------------------------------------------

def run_sluice(broker, work: Path, topic: str, n: int, users: int, grace_s: int) -> dict:
    from orchestrator.runtime.topics import Topics

    topics = Topics("bench.")
    emit = "bench-window-counts-sluice"
    workflow = {"slug": "bench-windows", "name": "Benchmark: tumbling count", "edges": [],
                "trigger": {"type": "kafka", "topic": topic, "window": {
                    "type": "tumbling", "size_seconds": SIZE_S, "grace_seconds": grace_s,
                    "aggregates": {"count": {"op": "count"}}, "emit_topic": emit}},
                "steps": [{"id": "keep", "type": "transform", "config": {"output": "{{ trigger }}"}}]}
    from orchestrator.runtime import commands

    commands.publish_definition(workflow["slug"], 1, workflow, by="bench")
    env = django_env(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, SLUICE_TOPIC_PREFIX="bench.",
                     SLUICE_PARTITIONS=PARTITIONS, SLUICE_EMBEDDED_BROKER=1, SLUICE_DATA_DIR=work,
                     DATABASE_URL=f"sqlite:///{work / 'bench.sqlite3'}", SLUICE_LOG_LEVEL="INFO")
    log_path = work / "runner.log"
    runner = manage(["runner", "--instance-id", "bench-windows", "--no-engine", "--workers", "0"], env, log_path)
    watcher = OutputWatcher(broker.bootstrap_servers, emit)
    offsets = Offsets(broker.bootstrap_servers, topics.group("windows"), topics.windows_in)
    trigger = Offsets(broker.bootstrap_servers, topics.group(f"trigger.{workflow['slug']}.{topic}"), topic)
    try:
        wait_for(lambda: b"following" in log_path.read_bytes() and b"windows: assigned" in log_path.read_bytes(),
                 90, "the runner to follow the topic")
        time.sleep(2)
        end_ms = int(time.time()) // SIZE_S * SIZE_S * 1000
        records = generate(n, users, end_ms)
        base = trigger.high()
        cpu_before, broker_before = tree_cpu_seconds(runner.pid), tree_cpu_seconds(broker.process.pid)
        waited_before = runqueue_seconds(runner.pid)
        began, sent = produce(broker.bootstrap_servers, topic, records)
        close_at = end_ms + grace_s * 1000  # wall clock (ms) when the last window closes

        def counted():
            # The trigger commits its input offsets in the transaction that writes the records
            # to wf.windows.in, each transaction ended by a commit marker: done when the trigger
            # has read everything and the window loop has committed up to the last marker of
            # every partition of wf.windows.in that has records.
            if sum(trigger.committed()) < sum(base) + len(records):
                return False
            high = offsets.high()
            return all(c >= h - 1 for c, h in zip(offsets.committed(), high) if h)

        wait_for(counted, 600, "the window loop to count every record", interval=0.05)
        counted_at = time.perf_counter()
        cpu_counted, broker_counted = tree_cpu_seconds(runner.pid), tree_cpu_seconds(broker.process.pid)
        waited = runqueue_seconds(runner.pid) - waited_before
        if time.time() * 1000 > close_at - (SIZE_S * (WINDOWS - 1)) * 1000:
            print(f"warning: counting ended after the first window closed (grace {grace_s} s too short); "
                  "records were late")
        expected = expected_counts(records)
        # Every result, or (records were late, their windows never come) 30 s past the close.
        wait_for(lambda: len(watcher.records) >= len(expected) or time.time() > close_at / 1000 + 30,
                 close_at / 1000 - time.time() + 60, "every window result", interval=0.05)
        time.sleep(1)  # anything more (a duplicate) would show up now
        emitted_at = max(t for t, _k, _v in watcher.records)
        emitted_wall = time.time() - (time.perf_counter() - emitted_at)
        got, duplicates = results(watcher, lambda k, v: ((k.decode(), _ms(json.loads(v)["window_start"])),
                                                         json.loads(v)["count"]))
        return summary("Sluice", len(records), began, counted_at, emitted_at, expected, got, duplicates,
                       send_s=sent - began, after_close_s=emitted_wall - close_at / 1000,
                       cpu_s=cpu_counted - cpu_before, broker_cpu_s=broker_counted - broker_before, runqueue_s=waited,
                       peak_rss_mib=tree_peak_rss_mib(runner.pid))
    finally:
        watcher.close()
        offsets.close()
        trigger.close()
        stop(runner)


def _ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


# ---- Quix Streams ------------------------------------------------------------------------------

def quix_available() -> str | None:
    """Why the Quix peer cannot run, or None."""
    if not QUIX_PYTHON.exists():
        return f"no Quix environment at {QUIX_PYTHON}: {QUIX_SETUP}"
    check = subprocess.run([str(QUIX_PYTHON), "-c", "import quixstreams; print(quixstreams.__version__)"],
                           capture_output=True, text=True, check=False)
    if check.returncode:
        return f"quixstreams is not installed for {QUIX_PYTHON}: {QUIX_SETUP}"
    return None


def quix_version() -> str:
    return subprocess.run([str(QUIX_PYTHON), "-c", "import quixstreams; print(quixstreams.__version__)"],
                          capture_output=True, text=True, check=False).stdout.strip()


def run_quix(broker, work: Path, topic: str, n: int, users: int, grace_s: int, commit_interval: float) -> dict:
    from confluent_kafka import Producer

    emit, group = "bench-window-counts-quix", f"bench-quix-{uuid.uuid4().hex[:6]}"
    log_path = work / "quix.log"
    app = subprocess.Popen([str(QUIX_PYTHON), str(ROOT / "bench" / "quix_peer_app.py"), "--broker", broker.bootstrap_servers,
                            "--topic", topic, "--output", emit, "--group", group, "--state-dir", str(work / "quix-state"),
                            "--size-ms", str(SIZE_S * 1000), "--grace-ms", str(grace_s * 1000),
                            "--commit-interval", str(commit_interval), "--partitions", str(PARTITIONS)],
                           cwd=ROOT, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    watcher = offsets = None
    try:
        offsets = Offsets(broker.bootstrap_servers, group, topic)
        closer = Producer({"bootstrap.servers": broker.bootstrap_servers})

        def ready():
            # It reads from the end (auto_offset_reset="latest"): a warm-up record on every
            # partition until it has committed past one on each (an hour back, in a window of its own).
            if app.poll() is not None:
                raise RuntimeError(f"Quix exited with {app.returncode}")
            high = offsets.high()
            if all(c and c >= h for c, h in zip(offsets.committed(), high)):
                return True
            for p in range(PARTITIONS):
                closer.produce(topic, key=b"__warm__", value=b"{}", partition=p, timestamp=int(time.time() * 1000) - 3_600_000)
            closer.flush(10)
            time.sleep(1.5)
            return False

        wait_for(ready, 120, "Quix to join its group and commit", interval=0.5)
        watcher = OutputWatcher(broker.bootstrap_servers, emit)
        end_ms = int(time.time()) // SIZE_S * SIZE_S * 1000
        records = generate(n, users, end_ms)
        base = offsets.high()
        cpu_before, broker_before = tree_cpu_seconds(app.pid), tree_cpu_seconds(broker.process.pid)
        waited_before = runqueue_seconds(app.pid)
        began, sent = produce(broker.bootstrap_servers, topic, records)
        # One record per partition past the last window's end + grace: event time closes them.
        for p in range(PARTITIONS):
            closer.produce(topic, key=b"__close__", value=b"{}", partition=p, timestamp=end_ms + (grace_s + SIZE_S) * 1000)
        closer.flush(30)
        total = len(records) + PARTITIONS

        def counted():
            if app.poll() is not None:
                raise RuntimeError(f"Quix exited with {app.returncode}: " + _tail(log_path))
            return sum(c - b for c, b in zip(offsets.committed(), base)) >= total

        wait_for(counted, 600, "Quix to count every record", interval=0.05)
        counted_at = time.perf_counter()
        cpu_counted, broker_counted = tree_cpu_seconds(app.pid), tree_cpu_seconds(broker.process.pid)
        waited = runqueue_seconds(app.pid) - waited_before
        expected = expected_counts(records)
        wait_for(lambda: len(watcher.records) >= len(expected), 120, "every Quix window result", interval=0.05)
        time.sleep(1)
        # Only the users' windows: the warm-up records' window (an hour back) is emitted too, as
        # soon as the burst's first records pass its end + grace.
        watcher.records = [r for r in watcher.records if not (r[1] or b"").startswith(b"__")]
        emitted_at = max(t for t, _k, _v in watcher.records)
        got, duplicates = results(watcher, lambda k, v: ((k.decode(), json.loads(v)["start"]), json.loads(v)["value"]))
        return summary(f"Quix Streams {quix_version()}", len(records), began, counted_at, emitted_at, expected, got,
                       duplicates, send_s=sent - began, after_close_s=float("nan"), cpu_s=cpu_counted - cpu_before,
                       broker_cpu_s=broker_counted - broker_before, runqueue_s=waited,
                       peak_rss_mib=tree_peak_rss_mib(app.pid))
    except (TimeoutError, RuntimeError) as exc:
        return {"system": "Quix Streams", "error": f"{exc}; log: {_tail(log_path)}"}
    finally:
        if watcher is not None:
            watcher.close()
        if offsets is not None:
            offsets.close()
        stop(app)


def _tail(path: Path, lines: int = 8) -> str:
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


# ---- the run -----------------------------------------------------------------------------------

def run(n: int, users: int, grace_s: int, quix: bool, commit_interval: float, sluice: bool = True) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-windows-"))
    from orchestrator.runtime.broker import EmbeddedBroker, free_port

    broker = EmbeddedBroker(work / "kafka", free_port()).start()
    os.environ.update(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, SLUICE_TOPIC_PREFIX="bench.",
                      SLUICE_PARTITIONS=str(PARTITIONS), SLUICE_EMBEDDED_BROKER="1", SLUICE_DATA_DIR=str(work),
                      DATABASE_URL=f"sqlite:///{work / 'bench.sqlite3'}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    import django

    django.setup()
    from confluent_kafka.admin import AdminClient, NewTopic

    from orchestrator.runtime.topics import Topics, ensure_topics

    topic = "bench-clicks"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    ensure_topics(admin, Topics("bench.").layout(PARTITIONS))
    for name in (topic, "bench-window-counts-sluice", "bench-window-counts-quix"):
        admin.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(30)
    out = []
    try:
        # Each system gets the same kind of burst on the same topic, in windows that ended just
        # before it (a fresh set each, so the second never sees the first's windows as open).
        if sluice:
            out.append(run_sluice(broker, work, topic, n, users, grace_s))
        if quix:
            why = quix_available()
            if why:
                out.append({"system": "Quix Streams", "error": why})
            else:
                out.append(run_quix(broker, work, topic, n, users, grace_s, commit_interval))
    finally:
        broker.stop()
    return out


def report(rows: list[dict], grace_s: int, commit_interval: float) -> None:
    measured = [r for r in rows if "error" not in r]
    print(table(
        f"Tumbling count window ({SIZE_S} s, grace {grace_s} s), exactly-once, {PARTITIONS} partitions, "
        f"embedded broker; load average at the end: {_load()}",
        ["", *[r["system"] for r in measured]],
        [
            ["records (keys)", *[f"{r['records']:,}" for r in measured]],
            ["records/s, first record -> every record counted (committed)", *[r["counted_rate"] for r in measured]],
            ["seconds to count them", *[r["counted_s"] for r in measured]],
            ["records/s, first record -> last window result read", *[r["emitted_rate"] for r in measured]],
            ["seconds to the last result", *[r["emitted_s"] for r in measured]],
            ["last result after the wall-clock close (end + grace, s)", *[r["after_close_s"] for r in measured]],
            ["producer: seconds to send them all", *[r["send_s"] for r in measured]],
            ["CPU seconds of the processor while counting", *[r["cpu_s"] for r in measured]],
            ["seconds its threads waited for a CPU while counting (run queue)", *[r["runqueue_s"] for r in measured]],
            ["CPU seconds of the broker while counting", *[r["broker_cpu_s"] for r in measured]],
            ["CPU per record, processor + broker (us; the machine's load changes it least)",
             *[(r["cpu_s"] + r["broker_cpu_s"]) / r["records"] * 1e6 for r in measured]],
            ["peak memory of the processor (MiB)", *[r["peak_rss_mib"] for r in measured]],
            ["window results / expected", *[f"{r['windows_emitted']:,} / {r['windows_expected']:,}" for r in measured]],
            ["sum of counts / records", *[f"{r['sum_of_counts']:,} / {r['records']:,}" for r in measured]],
            ["duplicate results", *[r["duplicates"] for r in measured]],
            ["every count right", *["yes" if r["correct"] else "NO" for r in measured]],
        ],
    ))
    for r in rows:
        if "error" in r:
            print()
            print(f"{r['system']} did not run: {r['error']}")
            print()
            print(table("Kafka exactly-once, documented figure (NOT measured here)", ["source", "figure"],
                        KAFKA_STREAMS_FIGURES))
    print()


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.windows")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--grace", type=int, default=60, help="grace period (s); Sluice's must cover the ingest")
    parser.add_argument("--commit-interval", type=float, default=1.0, help="Quix Streams' commit interval (s)")
    parser.add_argument("--no-quix", action="store_true", help="Sluice only")
    parser.add_argument("--no-sluice", action="store_true", help="Quix Streams only")
    args = parser.parse_args()
    print(f"load average before: {_load()}")
    rows = run(args.records, args.users, args.grace, not args.no_quix, args.commit_interval, not args.no_sluice)
    report(rows, args.grace, args.commit_interval)


if __name__ == "__main__":
    main()
