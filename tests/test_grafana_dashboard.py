"""The Grafana dashboard (docs/grafana/sluice-dashboard.json) and docs/operations.md against the
metrics Sluice really exports, so neither can name a metric that does not exist or leave one out.

`exported` builds the catalog the way the processes do: the same collector classes the runner,
the bridge and the web register (orchestrator/runtime/metrics.py, monitor/metrics.py,
monitor/alerts.py), in a registry of our own, fed through the functions the loops call and
through real database rows, so every family has samples and shows its labels. A cross-check
against the source keeps that catalog complete when someone adds a metric.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "sluice-dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"
DATASOURCE_UID = "${DS_PROMETHEUS}"

# Added by Prometheus itself to every scrape target; no Sluice process exports it.
PROMETHEUS_SYNTHETIC = {"up"}

# The sample names prometheus_client writes for a family of each type (`_created` only where a
# sample says so: the scrape-time collectors write none).
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                   "summary": ("", "_sum", "_count"), "gauge": ("",), "untyped": ("",), "info": ("_info",)}

# The dashboard must chart at least these (the operations the brief asks it to show).
CHARTED = {"sluice_runs_started", "sluice_runs_finished", "sluice_step_duration_seconds", "sluice_step_retries",
           "sluice_dead_letters", "sluice_trigger_records", "sluice_consumer_lag", "sluice_batch_records",
           "sluice_transaction_commit_seconds", "sluice_runner_loops_running",
           "sluice_runner_last_heartbeat_timestamp_seconds"}


# ---- the catalog of exported metrics ----------------------------------------------------------
@pytest.fixture
def exported(db, monkeypatch) -> dict[str, dict]:
    """{family name: {"type", "labels", "samples"}} of every Sluice metric family."""
    from django.utils import timezone

    from monitor import alerts, kafka_lag
    from monitor import metrics as web_metrics
    from monitor.models import AlertDelivery, Run, RunnerProcess, RunStatus
    from monitor.projector import ProjectorStats
    from orchestrator.engine.state import RETRYING, SUCCEEDED
    from orchestrator.runtime import metrics as runtime_metrics

    # Runner: what the engine, worker and trigger loops record after a commit.
    monkeypatch.setattr(runtime_metrics, "STORE", runtime_metrics._Store())
    step = SimpleNamespace
    state = SimpleNamespace(workflow="orders", version=1, done=True, status="succeeded", steps={
        "charge": step(status=SUCCEEDED, attempt=1, started_at=10.0, ended_at=10.5),
        "notify": step(status=RETRYING, attempt=1, started_at=10.5, ended_at=None)})
    spec = SimpleNamespace(steps={"charge": SimpleNamespace(type="python"), "notify": SimpleNamespace(type="http")})
    runtime_metrics.engine_committed({}, {"run-1": state}, SimpleNamespace(get=lambda *_: spec), 3, 0.004)
    runtime_metrics.worker_executed([SimpleNamespace(workflow="orders", type="python")],
                                    [SimpleNamespace(ok=True, started_at=1.0, ended_at=1.2)])
    runtime_metrics.committed("worker", 0.003)
    runtime_metrics.trigger_batch("orders", Counter(runs_started=2, windowed=0, skipped=1, dlq=1))
    loop = SimpleNamespace(stage="engine", stats=Counter(records=3, dlq=1, aborted_batches=1))
    runner = SimpleNamespace(loops=[loop], threads=[threading.current_thread()])

    # Bridge: the projector's totals.
    stats = ProjectorStats(applied=4, skipped=1, undecodable=1, dead_letters=1, heartbeats=2, alerts_queued=1)
    stats.by_kind["run_failed"] = 1
    alerts.NOTIFICATIONS.labels(channel="webhook", outcome="sent")  # a child at 0: no count changes

    # Web: consumer lag (no broker here) and the database gauges, from rows.
    monkeypatch.setattr(kafka_lag, "consumer_lag", lambda *a, **k: {
        "groups": [{"group": "wf.engine", "topic": "wf.runs", "lag": 7}], "error": None})
    now = timezone.now()
    Run.objects.create(id="run-in-flight", workflow="orders", version=1, status=RunStatus.RUNNING, created_at=now)
    RunnerProcess.objects.create(instance="runner-1", started_at=now - timedelta(minutes=5), last_heartbeat=now)
    AlertDelivery.objects.create(run_id="run-failed", seq=3, workflow="orders",
                                 channel=AlertDelivery.Channel.WEBHOOK, status=AlertDelivery.Status.PENDING)

    registry = CollectorRegistry(auto_describe=True)
    for collector in (runtime_metrics.StoreCollector(), runtime_metrics.RunnerCollector(runner),
                      web_metrics.BridgeCollector(SimpleNamespace(stats=stats)), web_metrics.PROJECTOR_BATCH_SECONDS,
                      web_metrics.ConsumerLagCollector(), web_metrics.DatabaseCollector(), alerts.NOTIFICATIONS):
        registry.register(collector)
    catalog = {}
    for family in registry.collect():
        catalog[family.name] = {
            "type": family.type,
            "labels": {label for sample in family.samples for label in sample.labels if label != "le"},
            "samples": {sample.name for sample in family.samples},
        }
    return catalog


def exposed_names(catalog: dict) -> set[str]:
    """Every series name a scrape can show: the samples, and what each family's type implies."""
    names = set()
    for family, entry in catalog.items():
        names |= entry["samples"]
        names |= {family + suffix for suffix in SAMPLE_SUFFIXES.get(entry["type"], ("",))}
    return names


def defined_in_source() -> set[str]:
    """Metric names written in the modules that use prometheus_client."""
    names = set()
    for path in [*ROOT.glob("monitor/**/*.py"), *ROOT.glob("orchestrator/**/*.py")]:
        text = path.read_text()
        if "prometheus_client" in text:
            names |= set(re.findall(r"""["'](sluice_[a-z0-9_]+)["']""", text))
    return names


def test_the_catalog_has_every_metric_the_code_defines(exported):
    assert defined_in_source() == set(exported), (
        "a metric was added or removed: feed it in the `exported` fixture, then chart and document it")
    for family, entry in exported.items():
        assert entry["samples"], f"{family}: the fixture records nothing for it"


# ---- PromQL: the metric names an expression reads -------------------------------------------
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan", "atan2", "start", "end"}


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (Grafana variables and label_values() allowed)."""
    text = re.sub(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", r"\1", expr)  # Grafana's (metric, label) form
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', text)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", "", text)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else ""
        if before.isdigit() or before == ".":  # 1e3, 5m
            continue
        if text[match.end():].lstrip().startswith("(") or match.group() in PROMQL_WORDS:
            continue  # a function, an aggregation or a keyword
        names.add(match.group())
    return names


def test_metric_names_reads_promql():
    assert metric_names('histogram_quantile(0.95, sum by (le, workflow) '
                        '(rate(sluice_step_duration_seconds_bucket{workflow=~"$workflow"}[$__rate_interval])))'
                        ) == {"sluice_step_duration_seconds_bucket"}
    assert metric_names("sum(rate(a_total[5m])) by (workflow) / ignoring(status) group_left "
                        "sum(rate(b_total{x='y'}[5m] offset 1h)) > 0.5 and on() vector(1)") == {"a_total", "b_total"}
    assert metric_names("time() - max by (instance) (sluice_runner_last_heartbeat_timestamp_seconds) > 1e2"
                        ) == {"sluice_runner_last_heartbeat_timestamp_seconds"}
    assert metric_names('label_values(sluice_runs_started_total, workflow)') == {"sluice_runs_started_total"}


# ---- the dashboard --------------------------------------------------------------------------
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list) -> list:
    found = []
    for panel in panels:
        found.append(panel)
        found += all_panels(panel.get("panels", []))
    return found


def expressions(board: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    found = []
    for panel in all_panels(board["panels"]):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['id']} {panel.get('title')!r}", target["expr"]))
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            found.append((f"variable {variable['name']}", query["query"] if isinstance(query, dict) else query))
    return found


def test_the_dashboard_is_an_importable_grafana_dashboard():
    board = dashboard()
    assert board["title"] and board["uid"] and 36 <= board["schemaVersion"] <= 41
    inputs = {entry["name"]: entry for entry in board["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource" and inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    assert {"grafana", "prometheus"} <= {entry["id"] for entry in board["__requires"]}
    assert board["id"] is None  # Grafana assigns one on import

    panels = all_panels(board["panels"])
    ids = [panel["id"] for panel in panels]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids)), ids
    cells = {}
    for panel in panels:
        assert panel["type"] and panel["title"], panel
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["w"] > 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0 and grid["y"] >= 0
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"panels {cells.get((x, y))} and {panel['id']} overlap"
                cells[(x, y)] = panel["id"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], panel["title"]
            assert target["expr"].strip(), panel["title"]
    for variable in board["templating"]["list"]:
        if variable.get("type") == "query":
            assert variable["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, variable["name"]


def test_every_metric_on_the_dashboard_is_exported(exported):
    exposed = exposed_names(exported) | PROMETHEUS_SYNTHETIC
    used = set()
    for where, expr in expressions(dashboard()):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        missing = names - exposed
        assert not missing, f"{where}: {sorted(missing)} not exported by any Sluice process"
        used |= names
    families = {family for family in exported for name in used if name in exposed_names({family: exported[family]})}
    assert CHARTED <= families, f"not charted: {sorted(CHARTED - families)}"


# ---- docs/operations.md ---------------------------------------------------------------------
def test_the_operations_guide_documents_every_metric_with_its_labels(exported):
    text = OPERATIONS.read_text()
    lines = text.splitlines()
    for family, entry in sorted(exported.items()):
        suffixes = "|".join(re.escape(s) for s in SAMPLE_SUFFIXES[entry["type"]] if s)
        mention = re.compile(rf"\b{re.escape(family)}(?:{suffixes})?\b" if suffixes else rf"\b{re.escape(family)}\b")
        rows = [line for line in lines if mention.search(line)]
        assert rows, f"docs/operations.md does not mention {family}"
        assert any(all(re.search(rf"\b{label}\b", row) for label in entry["labels"]) for row in rows), (
            f"docs/operations.md: no line names {family} with its labels {sorted(entry['labels'])}")


def test_the_operations_guide_names_no_metric_that_does_not_exist(exported):
    text = OPERATIONS.read_text()
    exposed = exposed_names(exported) | set(exported)
    named = set(re.findall(r"\bsluice_[a-z0-9_]+\b", text))
    assert named, "docs/operations.md names no metric"
    assert not named - exposed, f"docs/operations.md names unknown metrics: {sorted(named - exposed)}"
    # The suggested alert rules read only exported series too.
    rules = re.findall(r"^\s*expr:\s*(.+)$", text, flags=re.MULTILINE)
    assert rules, "docs/operations.md has no alert rule expressions"
    for expr in rules:
        missing = metric_names(expr.strip().strip("|>").strip()) - exposed_names(exported) - PROMETHEUS_SYNTHETIC
        assert not missing, f"alert rule {expr!r} reads {sorted(missing)}"
