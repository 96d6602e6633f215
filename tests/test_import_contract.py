"""The import contract ([tool.importlinter] in pyproject.toml, docs/architecture.md) holds, and
would catch a forbidden import: the engine importing a web app's models, or the monitor
importing the designer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("orchestrator", "designer", "monitor", "triggers", "webbase", "sluice_cli", "demo")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    return subprocess.run([command, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_tree_keeps_the_import_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def copy_tree(target: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))


def test_a_forbidden_import_breaks_the_contract(tmp_path):
    copy_tree(tmp_path)
    # The engine reaching for run rows or for the database, and the monitor for designer code.
    (tmp_path / "orchestrator" / "runtime" / "peek.py").write_text("from monitor.models import Run\n")
    (tmp_path / "orchestrator" / "steps" / "peek.py").write_text("from django.db import connection\n")
    (tmp_path / "monitor" / "peek.py").write_text("def f():\n    from designer import services\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "The engine imports no web app BROKEN" in out
    assert "Apps depend one way: designer > triggers > monitor > webbase > orchestrator BROKEN" in out
    assert "orchestrator.runtime.peek -> monitor.models (l.1)" in out
    assert "monitor.peek -> designer.services (l.2)" in out
    assert "The engine reads settings, never the web database BROKEN" in out
    assert "orchestrator.steps.peek -> django.db (l.1)" in out
    assert "Contracts: 1 kept, 3 broken." in out
