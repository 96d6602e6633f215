"""Benchmark: what rendering costs the engine per step, budgets included.

    python -m bench.expressions [--seconds 0.5] [--repeats 7] [--baseline GIT-COMMIT]

The engine renders a step's config (and evaluates branch conditions and trigger filters) on
every step it starts, in its own thread, between Kafka transactions: the time per render is
time the engine loop is not processing records. This measures that time for the templates
the example and benchmark workflows use, on a warm cache (compiled once, rendered many
times), in CPU time of the measuring thread (so other load on the machine counts less), as
the median and minimum of several rounds.

`--baseline COMMIT` loads `orchestrator/expressions.py` as it was at COMMIT (a module without
the budgets, say) beside the current one and measures both, round by round in turn, so the
two columns share the machine's conditions. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

from .harness import ROOT, table

CONTEXT = {
    "trigger": {"name": "Ada", "n": 41, "total": 120, "id": "order-7",
                "items": [{"sku": f"S{i}", "qty": i, "price": 2.5 * i} for i in range(20)]},
    "record": None,
    "steps": {"prepare": {"output": {"n": 42}, "status": "succeeded", "port": "out"},
              "greet": {"output": {"greeting": "Hello, Ada!"}, "status": "succeeded", "port": "out"},
              "echo": {"output": {"n": 42, "message": "Hello, Ada!"}, "status": "succeeded", "port": "out"}},
    "run": {"id": "2b9f0c1e4d", "workflow": "bench", "version": 1, "started_at": 1.0},
}

CASES = [
    ("condition `trigger.total > 100`", "evaluate", "trigger.total > 100"),
    ("native `{{ steps.prepare.output }}`", "render", "{{ steps.prepare.output }}"),
    ("arithmetic `{{ trigger.n + 1 }}`", "render", {"n": "{{ trigger.n + 1 }}"}),
    ("string `Hello, {{ trigger.name | default('world') }}!`", "render",
     {"greeting": "Hello, {{ trigger.name | default('world') }}!", "at": "{{ run.id }}"}),
    ("http config (url, header with secret(), json body)", "render",
     {"method": "POST", "url": "https://pay.example/orders/{{ trigger.id }}",
      "headers": {"Authorization": "Bearer {{ secret('PAY_TOKEN') }}"},
      "json": {"id": "{{ trigger.id }}", "total": "{{ trigger.total }}"}}),
    ("loop over 20 items `{% for %}...{% endfor %}`", "render",
     "{% for item in trigger['items'] %}{{ item.sku }}:{{ item.qty * item.price }};{% endfor %}"),
    ("filters `{{ trigger['items'] | map(attribute='sku') | join(',') }}`", "render",
     "{{ trigger['items'] | map(attribute='sku') | join(',') }}"),
]


# The reproductions of the expression stalls and crashes: how long until each is refused.
BOMB_DATA = {"trigger": {"items": list(range(3163))}}
BOMBS = [
    ("10-million-step loop", "render",
     "{% for a in trigger['items'] %}{% for b in trigger['items'] %}{{ b }}{% endfor %}{% endfor %}"),
    ("`[1] | batch(3000000, 0)`", "evaluate", "[1] | batch(3000000, 0) | list | length"),
    ("5,000 parentheses", "evaluate", "(" * 5000 + "1" + ")" * 5000),
    ("5,000 `not`s", "evaluate", "not " * 5000 + "true"),
    ("2,000 nested `{% if %}`", "render", "{% if true %}" * 2000 + "x" + "{% endif %}" * 2000),
]


def time_to_refuse(module, kind: str, value) -> tuple[float, str]:
    """(CPU ms, outcome) of one evaluation of a bomb on a cold cache."""
    started = time.thread_time()
    try:
        if kind == "evaluate":
            module.evaluate(value, BOMB_DATA)
        else:
            module.render(value, BOMB_DATA)
        outcome = "finished"
    except BaseException as exc:  # the point is to see what escapes
        outcome = f"{type(exc).__name__}: {str(exc)[-60:]}"
    return (time.thread_time() - started) * 1000, outcome


def time_per_call(function, seconds: float) -> float:
    """CPU microseconds per call, calling in chunks until `seconds` of CPU time have passed."""
    calls, started = 0, time.thread_time()
    while True:
        for _ in range(200):
            function()
        calls += 200
        elapsed = time.thread_time() - started
        if elapsed >= seconds:
            return elapsed / calls * 1e6


def load_baseline(commit: str):
    """orchestrator/expressions.py as it was at `commit`, imported as a module of its own."""
    source = subprocess.run(["git", "show", f"{commit}:orchestrator/expressions.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(prefix="sluice-bench-"), "baseline_expressions.py")
    with open(path, "w") as file:
        file.write(source)
    spec = importlib.util.spec_from_file_location("baseline_expressions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def caller(module, kind: str, value):
    if kind == "evaluate":
        return lambda: module.evaluate(value, CONTEXT)
    return lambda: module.render(value, CONTEXT)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.expressions")
    parser.add_argument("--seconds", type=float, default=0.5, help="CPU seconds of one timed round per case")
    parser.add_argument("--repeats", type=int, default=7, help="rounds per case")
    parser.add_argument("--baseline", help="a git commit whose expressions.py to measure beside the current one")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    from orchestrator import expressions

    modules = {"current": expressions}
    if args.baseline:
        modules = {f"at {args.baseline}": load_baseline(args.baseline), **modules}
    rows = []
    for label, kind, value in CASES:
        calls = {name: caller(module, kind, value) for name, module in modules.items()}
        for call in calls.values():
            call()  # compile once, as the engine's cache would have
        rounds: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.repeats):
            for name, call in calls.items():
                rounds[name].append(time_per_call(call, args.seconds))
        row = [label]
        for name in calls:
            row += [statistics.median(rounds[name]), min(rounds[name])]
        if len(calls) == 2:
            baseline, current = (min(values) for values in rounds.values())
            row += [current - baseline, f"{(current / baseline - 1) * 100:+.0f} %"]
        rows.append(row)
    headers = ["template"]
    for name in modules:
        headers += [f"{name}: median (us)", f"{name}: min (us)"]
    if len(modules) == 2:
        headers += ["added (us, min)", "added (%, min)"]
    print(table("Rendering on a warm cache, CPU time of one thread (microseconds per render)", headers, rows))
    print()
    rows = []
    for label, kind, value in BOMBS:
        for name, module in modules.items():
            milliseconds, outcome = time_to_refuse(module, kind, value)
            rows.append([label, name, milliseconds, outcome])
    print(table("Over budget: CPU time until the evaluation ends, and how it ends", ["case", "code", "CPU (ms)", "outcome"],
                rows))


if __name__ == "__main__":
    main()
