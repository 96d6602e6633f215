"""Benchmark: live history fan-out to websocket clients in other processes (not a test; prints a table).

    .venv/bin/python bench/websocket_fanout.py [--clients 200] [--feeds 2] [--rate 500] [--seconds 20]
    .venv/bin/python bench/websocket_fanout.py --clients 0 --feeds 2000 --check-every 20

Sets up everything for real: the embedded broker, a fresh SQLite database (migrated, one user,
one Run row per run), and daphne serving Sluice's ASGI application in its own process, which
runs the per-process history consumer. The websocket clients run in `--client-procs` other
processes (this file with `--worker`, the `websockets` asyncio client): `--clients` of them each
watch one run (`/ws/runs/<id>/`, the run page's socket), `--feeds` watch every run
(`/ws/monitor/`, the dashboard's and run list's socket). This process only produces history
events, at `--rate` per second round-robin over `--runs` runs, each stamped with its send time.

Delivery latency = receive time - send time (same host clock), per event (an event in a feed
batch counts from its own send time); the first `--warmup` seconds of events are left out
of the percentiles and reported on their own: while the clients connected the fan-out sat idle
with its partitions paused (IdleBackoff, embedded broker only), and the first events after
such a spell wait for the resume (up to about a second). Lost = events a client should have
received (every event of its run; every event for a feed) but did not, after a drain. Run sockets and every
`--check-every`-th feed socket are checked event by event (order per run, duplicates, latency);
the other feed sockets only count the events in each frame, so that 2,000 feeds do not need
more client CPU than the machine has.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUCKETS_PER_MS = 10  # latency histogram resolution: 0.1 ms
MAX_BUCKET = 60_000 * BUCKETS_PER_MS


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(histogram: dict[int, int], fraction: float) -> float:
    total = sum(histogram.values())
    if not total:
        return float("nan")
    rank, seen = fraction * total, 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen > rank:
            return bucket / BUCKETS_PER_MS
    return max(histogram) / BUCKETS_PER_MS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200, help="run-page sockets, one run each")
    parser.add_argument("--feeds", type=int, default=2, help="dashboard sockets watching every run")
    parser.add_argument("--runs", type=int, default=0, help="runs the events go to (default: --clients, at least 200)")
    parser.add_argument("--rate", type=int, default=500, help="history events per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--drain", type=float, default=5.0, help="seconds to wait for stragglers")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of events first, delivered and counted but not in the percentiles: "
                             "the fan-out sat idle (partitions paused) while the clients connected")
    parser.add_argument("--client-procs", type=int, default=2, help="processes the websocket clients run in")
    parser.add_argument("--check-every", type=int, default=1,
                        help="check every Nth feed socket event by event (the others count events)")
    parser.add_argument("--profile", metavar="PATH", help="py-spy daphne while producing; raw samples to PATH")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(_worker())
        return
    args.runs = args.runs or max(args.clients, 200)
    fd_limit = raise_fd_limit()  # inherited by daphne and the client processes

    data_dir = Path(tempfile.mkdtemp(prefix="sluice-bench-ws-"))
    os.environ.update({
        "SLUICE_DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{data_dir / 'bench.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
        "SLUICE_LOG_LEVEL": "WARNING",
    })
    from orchestrator.runtime.broker import EmbeddedBroker, free_port

    broker = EmbeddedBroker(data_dir / "kafka", free_port()).start()
    os.environ.update({"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "SLUICE_EMBEDDED_BROKER": "1",
                       "SLUICE_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:6]}.", "SLUICE_PARTITIONS": "4"})
    daphne = None
    workers: list[subprocess.Popen] = []
    try:
        import django

        django.setup()
        from confluent_kafka.admin import AdminClient
        from django.conf import settings
        from django.core.management import call_command

        from orchestrator.runtime.topics import Topics, ensure_topics

        topics = Topics(settings.SLUICE_TOPIC_PREFIX)
        ensure_topics(AdminClient({"bootstrap.servers": broker.bootstrap_servers}), topics.layout(4))
        call_command("migrate", verbosity=0)
        cookie, run_ids = _prepare_database(args.runs)

        port = free_port()
        daphne = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                   "orchestrator.asgi:application"], cwd=ROOT, env=dict(os.environ),
                                  stdout=subprocess.DEVNULL, stderr=open(data_dir / "daphne.log", "wb"))
        _wait_for_port(port)
        specs = [(f"run{i}", f"/ws/runs/{run_ids[i]}/?since=0", run_ids[i], True) for i in range(args.clients)]
        specs += [(f"feed{i}", "/ws/monitor/", None, i % args.check_every == 0) for i in range(args.feeds)]
        try:
            workers = _start_workers(args, port, cookie, specs)
            result = _run(args, workers, daphne.pid, run_ids, topics.history)
            if any(result[kind]["closed"] for kind in ("run", "feed")):
                print("daphne's log (sockets were closed):\n"
                      + (data_dir / "daphne.log").read_text(errors="replace")[-3000:], file=sys.stderr)
        except Exception:
            print((data_dir / "daphne.log").read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        if daphne is not None:
            daphne.terminate()
            daphne.wait(15)
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    _print_table(args, result, fd_limit)


def _prepare_database(runs: int):
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.utils import timezone

    from monitor.models import Run

    user = get_user_model().objects.create_superuser("bench", "bench@example.com", uuid.uuid4().hex)
    client = Client()
    client.force_login(user)
    run_ids = [uuid.uuid4().hex for _ in range(runs)]
    Run.objects.bulk_create([Run(id=run_id, workflow="bench", version=1, status="running",
                                 created_at=timezone.now()) for run_id in run_ids])
    return f"sessionid={client.cookies['sessionid'].value}", run_ids


def _wait_for_port(port: int, timeout: float = 30) -> None:
    from orchestrator.runtime.broker import port_open

    deadline = time.monotonic() + timeout
    while not port_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError("daphne did not start")
        time.sleep(0.1)


def _start_workers(args, port, cookie, specs) -> list[subprocess.Popen]:
    procs = max(1, min(args.client_procs, len(specs)))
    workers = []
    for index in range(procs):
        worker = subprocess.Popen([sys.executable, __file__, "--worker"], cwd=ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        worker.stdin.write(json.dumps({"port": port, "cookie": cookie, "specs": specs[index::procs]}) + "\n")
        worker.stdin.flush()
        workers.append(worker)
    for worker in workers:  # each says READY once all its sockets are open
        line = worker.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"client process failed: {line!r}")
    return workers


def _run(args, workers, daphne_pid, run_ids, history_topic):
    from confluent_kafka import Producer

    from orchestrator import messages
    from orchestrator.runtime import codec
    from orchestrator.runtime.kafka import producer_config

    time.sleep(3)  # the fan-out has assigned its partitions and settled
    for worker in workers:
        worker.stdin.write("GO\n")
        worker.stdin.flush()
    producer = Producer(producer_config(**{"linger.ms": 2}))
    warmup = int(args.rate * args.warmup)
    total = warmup + int(args.rate * args.seconds)
    seq_per_run = dict.fromkeys(run_ids, 0)
    tick = 0.01
    per_tick = args.rate * tick
    profiler = None
    if args.profile:
        profiler = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(daphne_pid),
                                     "-d", str(int(args.seconds)), "-r", "200", "-f", "raw", "--nonblocking",
                                     "-o", args.profile], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daphne_cpu = cpu_seconds(daphne_pid)
    load_start = os.getloadavg()[0]
    started = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - started) / tick * per_tick) + 1)
        while sent < due:
            run_id = run_ids[sent % len(run_ids)]
            seq_per_run[run_id] += 1
            event = messages.HistoryEvent(run_id=run_id, seq=seq_per_run[run_id], kind="step_started",
                                          ts=time.time(), workflow="bench", version=1, step_id="s",
                                          step_type="transform", attempt=1,
                                          data={"sent": time.time(), "warmup": sent < warmup})
            producer.produce(history_topic, key=run_id.encode(), value=codec.encode(event),
                             headers=codec.headers_for(event))
            sent += 1
        producer.poll(0)
        time.sleep(tick)
    producer.flush(30)
    elapsed = time.monotonic() - started
    daphne_cpu = cpu_seconds(daphne_pid) - daphne_cpu
    load_end = os.getloadavg()[:2]
    time.sleep(args.drain)
    if profiler is not None:
        profiler.wait(60)
    results = []
    for worker in workers:
        worker.stdin.write("STOP\n")
        worker.stdin.flush()
    for worker in workers:
        results.append(json.loads(worker.stdout.readline()))
        worker.wait(30)

    summary = {"sent": sent, "elapsed": elapsed, "daphne_cpu": daphne_cpu,
               "client_cpu": [round(r["cpu"], 1) for r in results], "load_start": load_start,
               "load_end": load_end}
    for kind in ("run", "feed"):
        sockets = [s for r in results for s in r["sockets"] if s["kind"] == kind]
        expected = sum(seq_per_run[s["run_id"]] if kind == "run" else sent for s in sockets)
        received = sum(s["received"] for s in sockets)
        histogram: dict[int, int] = {}
        for s in sockets:
            for bucket, count in s["latency"].items():
                histogram[int(bucket)] = histogram.get(int(bucket), 0) + count
        summary[kind] = {
            "sockets": len(sockets), "checked": sum(1 for s in sockets if s["checked"]),
            "expected": expected, "received": received, "lost": expected - received,
            "duplicates": sum(s["duplicates"] for s in sockets),
            "out_of_order": sum(s["out_of_order"] for s in sockets),
            "closed": sum(1 for s in sockets if s["closed"] is not None),
            "close_codes": sorted({s["closed"] for s in sockets if s["closed"] is not None}),
            "frames": sum(s["frames"] for s in sockets),
            "latency": histogram, "max_ms": max((s["max_ms"] for s in sockets), default=float("nan")),
            "warmup_max_ms": max((s["warmup_max_ms"] for s in sockets if s["checked"]), default=float("nan")),
        }
    return summary


async def _worker() -> None:
    """A client process: opens its sockets, READY, counts from GO until STOP, prints its result as JSON."""
    from websockets.asyncio.client import connect

    raise_fd_limit()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = json.loads(await reader.readline())
    port = config["port"]
    headers = {"Cookie": config["cookie"]}
    origin = f"http://127.0.0.1:{port}"
    sockets = []

    async def client(name, path, run_id, checked, ready):
        state = {"name": name, "kind": "run" if run_id else "feed", "run_id": run_id, "checked": checked,
                 "received": 0, "duplicates": 0, "out_of_order": 0, "frames": 0, "closed": None,
                 "latency": {}, "max_ms": 0.0, "warmup_max_ms": 0.0}
        sockets.append(state)
        last: dict[str, int] = {}
        latency = state["latency"]

        def note(event, now):
            key = event["run_id"]
            seq, previous = event["seq"], last.get(key, 0)
            if seq <= previous:
                state["duplicates"] += 1
                return
            if seq != previous + 1:
                state["out_of_order"] += 1
            last[key] = seq
            state["received"] += 1
            ms = (now - event["data"]["sent"]) * 1000
            if event["data"]["warmup"]:
                state["warmup_max_ms"] = max(state["warmup_max_ms"], ms)
                return
            bucket = min(int(ms * BUCKETS_PER_MS), MAX_BUCKET)
            latency[bucket] = latency.get(bucket, 0) + 1
            if ms > state["max_ms"]:
                state["max_ms"] = ms

        try:
            # A few handshakes at a time: each costs daphne two queries on its one database thread,
            # and daphne drops a handshake its application has not accepted within 5 s.
            async with handshakes:
                socket = await connect(f"ws://127.0.0.1:{port}{path}", additional_headers=headers, origin=origin,
                                       open_timeout=120, max_queue=None, max_size=None, compression=None)
            async with socket:
                ready.set()
                async for raw in socket:
                    now = time.time()
                    if not checked:  # count only: the frame's events, without parsing them
                        state["frames"] += 1
                        state["received"] += raw.count('"seq":')
                        continue
                    message = json.loads(raw)
                    kind = message.get("type")
                    if kind == "history":
                        state["frames"] += 1
                        note(message["event"], now)
                    elif kind == "history_batch":
                        state["frames"] += 1
                        for event in message["events"]:
                            note(event, now)
                state["closed"] = socket.close_code
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state["closed"] = f"{type(exc).__name__}: {exc}"[:80]
            ready.set()

    handshakes = asyncio.Semaphore(10)
    tasks, readies = [], []
    for name, path, run_id, checked in config["specs"]:
        ready = asyncio.Event()
        readies.append(ready)
        tasks.append(asyncio.create_task(client(name, path, run_id, checked, ready)))
    await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in readies)), 300)
    print("READY", flush=True)
    started_cpu = None
    while (line := (await reader.readline()).strip()) != b"STOP":
        if line == b"GO":
            started_cpu = time.process_time()
    cpu = time.process_time() - (started_cpu or 0.0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"sockets": sockets, "cpu": cpu}), flush=True)


def _print_table(args, result, fd_limit) -> None:
    rows = [
        ("websocket clients (run pages + feeds)", f"{args.clients} + {args.feeds} in {args.client_procs} "
                                                  f"client processes (fd limit {fd_limit})"),
        ("history events produced (warm-up included)", f"{result['sent']} in {result['elapsed']:.1f} s "
                                     f"({result['sent'] / result['elapsed']:.0f}/s, target {args.rate}/s) "
                                     f"over {args.runs} runs"),
        ("daphne CPU while producing", f"{result['daphne_cpu']:.1f} s ({result['daphne_cpu'] / result['elapsed']:.0%} "
                                       f"of a core)"),
        ("client processes' CPU, GO to STOP (production + drain)",
         " + ".join(f"{cpu} s" for cpu in result["client_cpu"]) + f" in {result['elapsed'] + args.drain:.0f} s"),
    ]
    for kind, label in (("run", "run sockets"), ("feed", "feed sockets")):
        r = result[kind]
        if not r["sockets"]:
            continue
        lat = r["latency"]
        rows += [
            (f"{label}: checked event by event", f"{r['checked']} of {r['sockets']}"),
            (f"{label}: deliveries expected / received", f"{r['expected']} / {r['received']} in {r['frames']} frames"),
            (f"{label}: lost", r["lost"]),
            (f"{label}: duplicates / out of order", f"{r['duplicates']} / {r['out_of_order']}"),
            (f"{label}: closed by the server", f"{r['closed']} {r['close_codes'] or ''}"),
            (f"{label}: latency p50 / p90 / p99 / max (ms)",
             f"{percentile(lat, 0.50):.1f} / {percentile(lat, 0.90):.1f} / {percentile(lat, 0.99):.1f} / "
             f"{r['max_ms']:.1f}"),
            (f"{label}: warm-up events (first after idle), max latency", f"{r['warmup_max_ms']:.1f} ms"),
        ]
    rows.append(("load average (1 min) at start / end, 5 min at end (2 cores)",
                 f"{result['load_start']:.1f} / {result['load_end'][0]:.1f}, {result['load_end'][1]:.1f}"))
    width = max(len(name) for name, _ in rows)
    print("\nSluice websocket fan-out: history topic -> daphne (1 process) -> websockets in other processes")
    print("-" * (width + 50))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print("-" * (width + 50))


if __name__ == "__main__":
    main()
