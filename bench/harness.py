"""Shared plumbing for the benchmarks: processes, /proc readings, percentiles, tables."""

from __future__ import annotations

import contextlib
import gc

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User + system CPU time of a process so far; with `reaped`, also that of the children it
    has waited for (children still running are not counted either way)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15 if reaped else 13]) / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (a runner with --worker-processes has children)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                queue.extend(int(child) for child in (task / "children").read_text().split())
            except FileNotFoundError:
                pass
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its descendants so far, including descendants that have exited.

    A process that exits between the listing and the reading (PostgreSQL's short-lived
    backends, say) is skipped: its time reaches its parent's reaped-children count, counted here
    as each process's own plus that of its children it has reaped.
    """
    total = 0.0
    for process in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # exited meanwhile
            total += cpu_seconds(process, reaped=True)
    return total


def tree_peak_rss_mib(pid: int) -> float:
    """Sum of the peaks of the process and its descendants (an upper bound of the tree's peak)."""
    total = 0.0
    for process in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # exited meanwhile
            total += peak_rss_mib(process)
    return total


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def table(title: str, headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [title, ""]
    lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def django_env(**extra) -> dict:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def manage(args: list[str], env: dict, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def collector_paused():
    """No cycle collection in this (the measuring) process while latencies are timed: by the end
    of the runtime benchmark it holds every run's finish time, and a full collection then
    paused the watcher for 100-180 ms, which showed as the runs' latency. As timeit does."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
