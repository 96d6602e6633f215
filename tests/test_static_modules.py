"""The browser code's ES modules: the status names they share match the models, and the editor
page preloads every module the editor imports (so none waits for the one importing it)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.urls import reverse

from monitor.models import RunStatus, StepStatus

STATIC = Path(__file__).resolve().parent.parent / "static"
IMPORT = re.compile(r'^\s*(?:import|export)\s[^;]*?from\s+"(\.{1,2}/[^"]+)"', re.M)


def js_array(path: Path, name: str) -> list[str]:
    match = re.search(rf"export const {name} = (\[[^\]]*\]);", path.read_text())
    assert match, f"{name} not found in {path}"
    return json.loads(match.group(1))


def test_status_names_are_the_models():
    status = STATIC / "monitor" / "status.js"
    assert js_array(status, "STEP_STATUSES") == list(StepStatus.values)
    assert js_array(status, "RUN_STATUSES") == list(RunStatus.values)
    colours = re.search(r"export const STATUS_COLOURS = \{(.*?)\n\};", status.read_text(), re.S).group(1)
    assert re.findall(r"^\s+(\w+): \{", colours, re.M) == list(StepStatus.values)


def imported_modules(entry: Path) -> set[Path]:
    """Every module `entry` imports, directly or through others (relative imports only)."""
    seen, todo = set(), [entry]
    while todo:
        module = todo.pop()
        for target in IMPORT.findall(module.read_text()):
            path = (module.parent / target).resolve()
            if path not in seen:
                seen.add(path)
                todo.append(path)
    return seen


@pytest.mark.django_db
def test_editor_page_preloads_every_module_the_editor_imports(admin_client):
    html = admin_client.get(reverse("designer:new")).content.decode()
    preloaded = {(STATIC / href.removeprefix("/static/")).resolve()
                 for href in re.findall(r'<link rel="modulepreload" href="([^"]+)">', html)}
    wanted = imported_modules(STATIC / "designer" / "editor.js")
    assert len(wanted) > 10
    assert preloaded == wanted, {"missing": sorted(map(str, wanted - preloaded)),
                                 "not imported": sorted(map(str, preloaded - wanted))}
