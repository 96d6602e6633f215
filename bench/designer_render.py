"""Benchmark: the editor with a 300-step workflow and a small example in headless chromium.

    python -m bench.designer_render [--steps 300] [--example examples/hello.json] [--repeats 3]
    python -m bench.designer_render --baseline DIR [--rounds 20]

With --baseline (a checkout of another Sluice version, e.g. `git worktree add /tmp/base <commit>`),
both versions are served side by side and their editor pages loaded alternately in one chromium,
so both see the same machine load: the table gives each one's median time to ready and to
interactive, and the median of the paired differences.

Sets up a throw-away database, saves a generated workflow of N steps without a layout (so
the editor must auto-lay it out with dagre on open) and the example (three steps, laid out),
serves Sluice, and measures each in Debian's chromium at 1280x720:
  - time to interactive: navigation start -> laid out, fitted and the first render pass done
    (X6's first 'render:done'; big workflows render virtually, i.e. only the steps in view,
    so the number of steps drawn by then is printed too);
  - the time to draw all N steps once virtual rendering is switched off;
  - auto-layout: one press of the Layout button on the open workflow;
  - drag: frame intervals (requestAnimationFrame timestamps in the page) while a node is
    dragged across the canvas with the mouse, every step drawn (the harder case).
Prints a table. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("SLUICE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
PASSWORD = "bench-password-only-here"


def generated_definition(steps: int) -> dict:
    """Blocks of five: transform -> branch -> (true: http, false: delay) -> join transform."""
    nodes, edges = [], []
    previous = None
    i = 0
    while len(nodes) < steps:
        block = [
            {"id": f"prepare_{i}", "type": "transform", "config": {"output": {"n": "{{ trigger.n }}", "block": i}}},
            {"id": f"decide_{i}", "type": "branch", "config": {"condition": "trigger.n > 1"}},
            {"id": f"call_{i}", "type": "http", "config": {"method": "POST", "url": "https://example.com/{{ trigger.id }}"}},
            {"id": f"wait_{i}", "type": "delay", "config": {"seconds": 1}},
            {"id": f"join_{i}", "type": "transform", "config": {"output": {"done": i}}},
        ][: steps - len(nodes)]
        ids = [step["id"] for step in block]
        nodes += block
        links = [(0, 1, None), (1, 2, "true"), (1, 3, "false"), (2, 4, None), (3, 4, None)]
        for a, b, port in links:
            if b < len(ids):
                edge = {"from": ids[a], "to": ids[b]}
                if port:
                    edge["port"] = port
                edges.append(edge)
        if previous is not None:
            edges.append({"from": previous, "to": ids[0]})
        previous = ids[-1]
        i += 1
    return {"slug": "bench-300", "name": f"Benchmark ({steps} steps)", "trigger": {"type": "manual"},
            "steps": nodes, "edges": edges}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_database(data_dir: str, definitions: list[dict]) -> None:
    os.environ["SLUICE_DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from designer import services

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", PASSWORD)
    for definition in definitions:
        services.create_workflow(definition, user, message="benchmark")


def prepare_database_of(root: Path, data_dir: str, definitions: list[dict]) -> None:
    """prepare_database, run by the code of the checkout at `root` (its models, its migrations)."""
    code = "\n".join([
        "import json, os, sys",
        "sys.path.insert(0, sys.argv[1])",
        "os.environ['SLUICE_DATA_DIR'] = sys.argv[2]",
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'orchestrator.settings'",
        "import django",
        "django.setup()",
        "from django.contrib.auth import get_user_model",
        "from django.core.management import call_command",
        "from designer import services",
        "call_command('migrate', verbosity=0)",
        f"user = get_user_model().objects.create_superuser('bench', 'bench@example.com', {PASSWORD!r})",
        "for definition in json.loads(sys.argv[3]):",
        "    services.create_workflow(definition, user, message='benchmark')",
    ])
    subprocess.run([sys.executable, "-c", code, str(root), data_dir, json.dumps(definitions)], cwd=root, check=True)


def start_server(data_dir: str, port: int, root: Path = ROOT) -> subprocess.Popen:
    env = dict(os.environ, SLUICE_DATA_DIR=data_dir, DJANGO_SETTINGS_MODULE="orchestrator.settings")
    process = subprocess.Popen([sys.executable, str(root / "manage.py"), "runserver", f"127.0.0.1:{port}",
                                "--noreload", "--insecure"], cwd=root, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=1)
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not start")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(url: str, definition: dict, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    results: dict[str, list[float]] = {"tti": [], "ready": [], "layout": [], "frames": [], "cells": [],
                                       "first_layout": [], "script": [], "drawn": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 720})
        page = context.new_page()
        slug, steps, first_step = definition["slug"], len(definition["steps"]), definition["steps"][0]["id"]
        page.goto(f"{url}/accounts/login/")
        page.fill("input[name=username]", "bench")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        for _ in range(repeats):
            page.goto(f"{url}/designer/{slug}/")
            page.wait_for_selector("html[data-editor-ready='1']", timeout=60000)
            # Interactive: the first render pass is done (X6 'render:done'); with virtual
            # rendering that is every step in view, the rest are drawn as they scroll in.
            page.wait_for_function("window.sluiceEditor && window.sluiceEditor.renderedAt", timeout=60000, polling="raf")
            results["tti"].append(page.evaluate("window.sluiceEditor.renderedAt"))
            results["drawn"].append(page.evaluate("document.querySelectorAll('#canvas .x6-graph-svg-stage > g.x6-node').length"))
            results["ready"].append(page.evaluate("window.sluiceEditor.readyAt"))
            marks = page.evaluate("() => Object.fromEntries(performance.getEntriesByType('mark').map(m => [m.name, m.startTime]))")
            results["script"].append(marks["sluice:load-start"])
            results["first_layout"].append(marks["sluice:layout-done"] - marks["sluice:load-start"])
            results["cells"].append(marks["sluice:cells-added"] - marks["sluice:layout-done"])
            results["layout"].append(page.evaluate(
                "() => { const t0 = performance.now(); window.sluiceEditor.autoLayout(); return performance.now() - t0; }"))
        # For comparison: switch virtual rendering off and time until every step is drawn.
        results["all_drawn"] = page.evaluate(f"""() => new Promise((resolve) => {{
            const ed = window.sluiceEditor; const t0 = performance.now();
            ed.graph.disableVirtualRender();
            const check = () => document.querySelectorAll('#canvas .x6-graph-svg-stage > g.x6-node').length >= {steps}
                ? resolve(performance.now() - t0)
                : performance.now() - t0 > 30000 ? resolve(NaN) : requestAnimationFrame(check);
            check();
        }})""")
        # Drag one node across the canvas and record the frame intervals meanwhile.
        page.evaluate("""() => {
            window.__frames = []; window.__recording = true;
            const tick = (t) => { window.__frames.push(t); if (window.__recording) requestAnimationFrame(tick); };
            requestAnimationFrame(tick);
        }""")
        node = page.evaluate(("""() => {
            const ed = window.sluiceEditor;
            const cell = ed.nodeForStep(%s);
            ed.graph.centerCell(cell);
            const r = ed.graph.findViewByCell(cell).container.querySelector('rect').getBoundingClientRect();
            return {x: r.x + r.width * 0.45, y: r.y + r.height * 0.3};
        }""") % json.dumps(first_step))
        page.wait_for_timeout(300)
        page.mouse.move(node["x"], node["y"])
        page.mouse.down()
        for i in range(1, 121):
            page.mouse.move(node["x"] + (i % 60) * 4, node["y"] + (i // 60) * 40 + (i % 60))
        page.mouse.up()
        page.wait_for_timeout(100)
        frames = page.evaluate("() => { window.__recording = false; return window.__frames; }")
        results["frames"] = [b - a for a, b in zip(frames, frames[1:])]
        browser.close()
    return results


def sign_in(page, url: str) -> None:
    page.goto(f"{url}/accounts/login/")
    page.fill("input[name=username]", "bench")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


def open_editor(page, url: str, slug: str) -> dict:
    """Open a workflow in the editor; {ready, tti} in ms from the navigation's start."""
    page.goto(f"{url}/designer/{slug}/")
    page.wait_for_selector("html[data-editor-ready='1']", timeout=60000)
    page.wait_for_function("window.sluiceEditor && window.sluiceEditor.renderedAt", timeout=60000, polling="raf")
    return page.evaluate("({ready: window.sluiceEditor.readyAt, tti: window.sluiceEditor.renderedAt})")


def paired(urls: dict[str, str], slugs: list[str], rounds: int) -> dict:
    """Load each workflow in each version alternately (who goes first alternates too)."""
    from playwright.sync_api import sync_playwright

    results = {(name, slug): {"ready": [], "tti": []} for name in urls for slug in slugs}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        pages = {}
        for name, url in urls.items():
            pages[name] = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
            sign_in(pages[name], url)
            for slug in slugs:  # a first visit fills the caches; it is not counted
                open_editor(pages[name], url, slug)
        names = list(urls)
        # One workflow at a time: leaving a 300-step page costs more than leaving a small one.
        for slug in slugs:
            for round_ in range(rounds):
                for name in (names if round_ % 2 == 0 else names[::-1]):
                    for key, value in open_editor(pages[name], urls[name], slug).items():
                        results[(name, slug)][key].append(value)
        browser.close()
    return results


def compare(baseline: Path, definitions: list[dict], rounds: int) -> None:
    trees = {"baseline": baseline.resolve(), "this": ROOT}
    servers, urls = [], {}
    try:
        for name, root in trees.items():
            data_dir = tempfile.mkdtemp(prefix=f"sluice-bench-designer-{name}-")
            prepare_database_of(root, data_dir, definitions)
            port = free_port()
            servers.append(start_server(data_dir, port, root))
            urls[name] = f"http://127.0.0.1:{port}"
        results = paired(urls, [d["slug"] for d in definitions], rounds)
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\nSluice designer, {trees['this']} against {trees['baseline']}: {rounds} paired page loads each, "
          f"headless chromium 1280x720 ({os.cpu_count()} cores, load average {load})")
    print(f"{'workflow':<12} {'measure (ms from navigation)':<32} {'baseline':>9} {'this':>9} {'paired diff':>12}")
    for definition in definitions:
        slug = definition["slug"]
        for key, label in (("ready", "editor ready"), ("tti", "first render pass done")):
            before, after = results[("baseline", slug)][key], results[("this", slug)][key]
            diff = statistics.median(a - b for a, b in zip(after, before))
            print(f"{slug:<12} {label:<32} {statistics.median(before):>9.0f} {statistics.median(after):>9.0f} {diff:>+12.0f}")


def report(definition: dict, results: dict) -> None:
    frames = results["frames"]
    steps = len(definition["steps"])
    rows = [
        ("steps / edges", f"{steps} / {len(definition['edges'])}"),
        ("time to interactive (nav -> first render pass done), median ms", f"{statistics.median(results['tti']):.0f}"),
        ("  runs (ms)", ", ".join(f"{v:.0f}" for v in results["tti"])),
        ("  steps drawn at that moment (the rest are out of view)", f"{statistics.median(results['drawn']):.0f}"),
        ("  page + scripts loaded (nav -> editor starts), median ms", f"{statistics.median(results['script']):.0f}"),
        ("  dagre layout before drawing, median ms", f"{statistics.median(results['first_layout']):.0f}"),
        ("  create and add the cells, median ms", f"{statistics.median(results['cells']):.0f}"),
        ("  editor ready (nav -> end of start-up script), median ms", f"{statistics.median(results['ready']):.0f}"),
        ("    runs (ms)", ", ".join(f"{v:.0f}" for v in results["ready"])),
        (f"virtual rendering off: until all {steps} steps are drawn, ms", f"{results['all_drawn']:.0f}"),
        ("auto-layout button (dagre + move + fit), median ms", f"{statistics.median(results['layout']):.0f}"),
        ("drag, with all steps drawn: frames recorded", f"{len(frames)}"),
        ("drag: frame interval p50 / p95 / max ms",
         f"{percentile(frames, .5):.1f} / {percentile(frames, .95):.1f} / {max(frames):.1f}"),
        ("drag: frames over 50 ms", f"{sum(1 for f in frames if f > 50)}"),
    ]
    width = max(len(name) for name, _ in rows)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\nSluice designer, '{definition['slug']}' ({steps} steps), headless chromium 1280x720 "
          f"({os.cpu_count()} cores, load average {load})")
    print("-" * (width + 14))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--example", default=str(ROOT / "examples" / "hello.json"),
                        help="a workflow file measured beside the generated one ('' for none)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another Sluice checkout to compare with, side by side")
    parser.add_argument("--rounds", type=int, default=20, help="paired page loads per workflow with --baseline")
    args = parser.parse_args()
    definitions = [generated_definition(args.steps)]
    if args.example:
        definitions.append(json.loads(Path(args.example).read_text()))
    if args.baseline:
        compare(args.baseline, definitions, args.rounds)
        return
    data_dir = tempfile.mkdtemp(prefix="sluice-bench-designer-")
    prepare_database(data_dir, definitions)
    port = free_port()
    server = start_server(data_dir, port)
    try:
        results = [measure(f"http://127.0.0.1:{port}", definition, args.repeats) for definition in definitions]
    finally:
        server.terminate()
        server.wait(10)
    for definition, result in zip(definitions, results):
        report(definition, result)


if __name__ == "__main__":
    main()
