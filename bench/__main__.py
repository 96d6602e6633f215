"""`python -m bench` (or `make bench`): every Sluice benchmark, printed as tables.

    python -m bench                 # all of them
    python -m bench runtime         # Sluice runtime vs a Celery chain on Redis (the bridge on SQLite;
                                    #   on PostgreSQL: scripts/with-postgres .venv/bin/python -m bench runtime)
    python -m bench designer        # the editor with a 300-step workflow in chromium
    python -m bench websocket       # live monitor fan-out to 200 websocket clients
    python -m bench expressions     # CPU time per render, budgets included
    python -m bench idle [options]  # idle CPU of every process of `manage.py up`, before and after bursts
    python -m bench windows [options]  # a tumbling count window, exactly-once: Sluice vs Quix Streams
    python -m bench monitor         # monitor pages and /api/runs/ with 1,000,000 runs (PostgreSQL too:
                                    #   scripts/with-postgres .venv/bin/python -m bench monitor)

Numbers are measurements on the machine at hand, never assertions: nothing here fails
because something was slow.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from .harness import ROOT, table


def runtime_vs_celery(runs: int, celery_runs: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    from . import celery_peer, runtime

    sluice = runtime.run(runs=runs)
    peer = celery_peer.run(runs=celery_runs)
    print(table(
        "Three steps (transform, python demo.echo, transform), one runner, embedded broker; "
        "peer: Celery chain on Redis, prefork concurrency 2",
        ["", "Sluice", "Celery chain (Redis)", "Sluice / Celery"],
        [
            ["runs started at once", sluice["runs"], peer["runs"], ""],
            ["throughput (runs/s)", sluice["throughput"], peer["throughput"], sluice["throughput"] / peer["throughput"]],
            ["latency test rate (runs/s, half of max)", sluice["rate"], peer["rate"], ""],
            ["p50 latency (ms)", sluice["p50_ms"], peer["p50_ms"], ""],
            ["p99 latency (ms)", sluice["p99_ms"], peer["p99_ms"], ""],
            ["p50 latency at 50 runs/s (ms)", sluice["light_p50_ms"], peer["light_p50_ms"], ""],
            ["p99 latency at 50 runs/s (ms)", sluice["light_p99_ms"], peer["light_p99_ms"], ""],
            ["one run after 3 s idle, median of 5 (ms)", sluice["after_idle_ms"][0], peer["after_idle_ms"][0], ""],
            ["one run after 3 s idle, worst of 5 (ms)", sluice["after_idle_ms"][1], peer["after_idle_ms"][1], ""],
            ["failed runs", sluice["failed"], 0, ""],
            [f"bridge projection during the burst (runs/s into {sluice['database']})", sluice["bridge_runs_per_second"], "", ""],
            ["monitor table behind the history topic, worst (s)", max((s for _t, _n, s in sluice["projection_lag"]), default=0.0), "", ""],
            ["runs replayed by verify_history / divergences", f"{sluice['verified']['runs']:,} / {sluice['verified']['divergences']}", "", ""],
        ],
    ))
    print()
    lag = sluice["projection_lag"]
    step = max(1, len(lag) // 20)
    print(table("Monitor projection lag during the burst (sampled every 0.5 s)",
                ["t (s)", "runs finished, not yet in the run table", "behind the history topic (s)"],
                [[t, n, seconds] for t, n, seconds in lag[::step]]))
    print()
    finished, projected = sluice["burst_seconds"]
    print(table(f"CPU during the {sluice['runs']:,}-run burst: until the last run finished ({finished:.1f} s), "
                f"and until the bridge had projected it ({projected:.1f} s)",
                ["process", "CPU until finished (s)", "CPU until projected (s)", "CPU per run (us)"],
                [[name, until_finished, until_projected, until_projected / sluice["runs"] * 1e6]
                 for name, (until_finished, until_projected) in sluice["burst_cpu"].items()]))
    print()
    print(table("Where a run's milliseconds go at 50 runs/s (Sluice, from the history's and the worker's own times)",
                ["hop", "p50 (ms)", "p99 (ms)"], [[name, p50, p99] for name, (p50, p99) in sluice["hops"].items()]))
    print()
    idle = sluice["idle_cpu_percent"]
    memory = sluice["peak_rss_mib"]
    print(table("Sluice processes", ["process", "idle CPU (% of one core, 10 s)", "peak memory (MiB)"], [
        ["runner (and its worker processes)", idle.get("runner", float("nan")), memory.get("runner", float("nan"))],
        ["bridge (history projector)", idle.get("bridge", float("nan")), memory.get("bridge", float("nan"))],
        ["broker (embedded)", float("nan"), memory.get("broker", float("nan"))],
        ["Celery worker (peer)", float("nan"), peer["peak_rss_mib"]["worker"]],
        ["Redis (peer)", float("nan"), peer["peak_rss_mib"]["redis"]],
    ]))
    print()


def run_module(name: str) -> None:
    subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT, check=False)


def main() -> None:
    if sys.argv[1:2] == ["idle"]:  # its own options: `python -m bench idle --help`
        from . import idle

        sys.argv = [f"{sys.argv[0]} idle", *sys.argv[2:]]
        idle.main()
        return
    if sys.argv[1:2] == ["windows"] and len(sys.argv) > 2:  # with options: `python -m bench windows --help`
        from . import windows

        sys.argv = [f"{sys.argv[0]} windows", *sys.argv[2:]]
        windows.main()
        return
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("which", nargs="*", choices=["runtime", "floor", "designer", "websocket", "expressions", "idle",
                                                    "windows", "monitor"],
                        default=[])
    parser.add_argument("--runs", type=int, default=20000, help="Sluice runs for the throughput test")
    parser.add_argument("--celery-runs", type=int, default=5000, help="Celery chains for the throughput test")
    parser.add_argument("--runner-args", default="", help="extra `manage.py runner` options, e.g. '--worker-processes 1'")
    args = parser.parse_args()
    which = args.which or ["runtime", "floor", "designer", "websocket", "expressions", "idle", "windows", "monitor"]
    if args.runner_args:
        os.environ["BENCH_RUNNER_ARGS"] = args.runner_args
    if "runtime" in which:
        runtime_vs_celery(args.runs, args.celery_runs)
    if "floor" in which:
        run_module("kafka_floor")
    if "designer" in which:
        run_module("designer_render")
    if "websocket" in which:
        run_module("websocket_fanout")
    if "expressions" in which:
        run_module("expressions")
    if "idle" in which:
        run_module("idle")
    if "windows" in which:
        run_module("windows")
    if "monitor" in which:
        run_module("monitor_pages")


if __name__ == "__main__":
    main()
