"""Benchmark: live history fan-out to websocket clients (not a test; prints a table).

    .venv/bin/python bench/websocket_fanout.py [--clients 200] [--rate 500] [--seconds 20] [--feeds 2]

Sets up everything for real: the embedded broker, a fresh SQLite database (migrated, one user,
one Run row per watched run), and daphne serving Sluice's ASGI application in its own process,
which runs the per-process history consumer. Then `--clients` websocket clients each watch one
run (`/ws/runs/<id>/`, the run page's socket) and `--feeds` clients watch every run
(`/ws/monitor/`, the dashboard's socket), while this process produces history events at
`--rate` per second, round-robin over the watched runs, each stamped with its send time.

Delivery latency = receive time - send time (same host clock). Lost = events a client should
have received (every event of its run; every event for a feed) but did not, after a drain.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200, help="run-page sockets, one run each")
    parser.add_argument("--feeds", type=int, default=2, help="dashboard sockets watching every run")
    parser.add_argument("--rate", type=int, default=500, help="history events per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--drain", type=float, default=5.0, help="seconds to wait for stragglers")
    args = parser.parse_args()

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
        cookie, run_ids = _prepare_database(args.clients)

        port = free_port()
        daphne = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                   "orchestrator.asgi:application"], cwd=ROOT, env=dict(os.environ),
                                  stdout=subprocess.DEVNULL, stderr=open(data_dir / "daphne.log", "wb"))
        _wait_for_port(port)
        try:
            result = asyncio.run(_run(args, port, cookie, run_ids, topics.history))
        except Exception:
            print((data_dir / "daphne.log").read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
    finally:
        if daphne is not None:
            daphne.terminate()
            daphne.wait(15)
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    _print_table(args, result)


def _prepare_database(clients: int):
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.utils import timezone

    from monitor.models import Run

    user = get_user_model().objects.create_superuser("bench", "bench@example.com", uuid.uuid4().hex)
    client = Client()
    client.force_login(user)
    run_ids = [uuid.uuid4().hex for _ in range(max(clients, 1))]
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


async def _run(args, port, cookie, run_ids, history_topic):
    from confluent_kafka import Producer
    from websockets.asyncio.client import connect

    from orchestrator import messages
    from orchestrator.runtime import codec
    from orchestrator.runtime.kafka import producer_config

    headers = {"Cookie": cookie}
    origin = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    received: dict[str, set] = {}
    duplicates = 0

    async def client(name: str, path: str, ready: asyncio.Event, all_ready):
        nonlocal duplicates
        seen = received.setdefault(name, set())
        async with connect(f"ws://127.0.0.1:{port}{path}", additional_headers=headers, origin=origin,
                           open_timeout=60, max_queue=None) as socket:
            ready.set()
            async for raw in socket:
                now = time.time()
                message = json.loads(raw)
                if message.get("type") != "history":
                    continue
                event = message["event"]
                key = (event["run_id"], event["seq"])
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
                if all_ready.is_set():
                    latencies.append((now - event["data"]["sent"]) * 1000)

    all_ready = asyncio.Event()
    tasks, readies = [], []
    specs = [(f"run{i}", f"/ws/runs/{run_ids[i]}/?since=0") for i in range(args.clients)]
    specs += [(f"feed{i}", "/ws/monitor/") for i in range(args.feeds)]
    for index, (name, path) in enumerate(specs):
        ready = asyncio.Event()
        readies.append(ready)
        tasks.append(asyncio.create_task(client(name, path, ready, all_ready)))
        if index % 20 == 19:
            await asyncio.sleep(0.05)  # do not stampede the accept queue
    await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in readies)), 120)
    await asyncio.sleep(3)  # the fan-out has assigned its partitions and settled
    all_ready.set()

    producer = Producer(producer_config(**{"linger.ms": 2}))
    total = int(args.rate * args.seconds)
    seq_per_run = {run_id: 0 for run_id in run_ids[:max(args.clients, 1)]}
    watched = list(seq_per_run)
    tick = 0.01
    per_tick = args.rate * tick
    started = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - started) / tick * per_tick) + 1)
        while sent < due:
            run_id = watched[sent % len(watched)]
            seq_per_run[run_id] += 1
            event = messages.HistoryEvent(run_id=run_id, seq=seq_per_run[run_id], kind="step_started",
                                          ts=time.time(), workflow="bench", version=1, step_id="s",
                                          step_type="transform", attempt=1, data={"sent": time.time()})
            producer.produce(history_topic, key=run_id.encode(), value=codec.encode(event),
                             headers=codec.headers_for(event))
            sent += 1
        producer.poll(0)
        await asyncio.sleep(tick)
    producer.flush(30)
    elapsed = time.monotonic() - started
    await asyncio.sleep(args.drain)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    expected = 0
    got = 0
    for name, seen in received.items():
        if name.startswith("run"):
            run_id = run_ids[int(name[3:])]
            expected += seq_per_run[run_id]
            got += sum(1 for key in seen if key[0] == run_id)
        else:
            expected += sent
            got += len(seen)
    return {"sent": sent, "elapsed": elapsed, "expected": expected, "received": got, "lost": expected - got,
            "duplicates": duplicates, "latencies": latencies}


def _print_table(args, result) -> None:
    lat = result["latencies"]
    rows = [
        ("websocket clients (run pages + feeds)", f"{args.clients} + {args.feeds}"),
        ("history events produced", f"{result['sent']} in {result['elapsed']:.1f} s "
                                     f"({result['sent'] / result['elapsed']:.0f}/s, target {args.rate}/s)"),
        ("deliveries expected", result["expected"]),
        ("deliveries received", result["received"]),
        ("events lost", result["lost"]),
        ("duplicates dropped by clients", result["duplicates"]),
        ("latency p50 (ms)", f"{percentile(lat, 0.50):.1f}"),
        ("latency p90 (ms)", f"{percentile(lat, 0.90):.1f}"),
        ("latency p99 (ms)", f"{percentile(lat, 0.99):.1f}"),
        ("latency max (ms)", f"{max(lat) if lat else float('nan'):.1f}"),
        ("latency mean (ms)", f"{statistics.fmean(lat) if lat else float('nan'):.1f}"),
        ("load average at the end (1/5 min, 2 cores)", "{:.1f} / {:.1f}".format(*os.getloadavg()[:2])),
    ]
    width = max(len(name) for name, _ in rows)
    print("\nSluice websocket fan-out: history topic -> daphne (1 process) -> websockets")
    print("-" * (width + 40))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print("-" * (width + 40))


if __name__ == "__main__":
    main()
