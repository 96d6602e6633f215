"""Running the installed `sluice` console script as a user would: a child process, its own config dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The console script pip installed next to the test's interpreter ([project.scripts] in pyproject.toml).
SLUICE = Path(sys.executable).with_name("sluice")


def cli_env(config_home: Path, url: str | None = None, token: str | None = None) -> dict:
    """The environment of a CLI child: no inherited SLUICE_* or Django settings, a private config dir."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("SLUICE_") and key != "DJANGO_SETTINGS_MODULE"}
    # The console script may be installed from another checkout (an editable install of a
    # sibling worktree): the child imports this checkout's code first, the code under test.
    env.update({"XDG_CONFIG_HOME": str(config_home), "HOME": str(config_home), "PYTHONUNBUFFERED": "1",
                "TZ": "UTC", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    if url is not None:
        env["SLUICE_URL"] = url
    if token is not None:
        env["SLUICE_TOKEN"] = token
    return env


def sluice(env: dict, *args: str, stdin: str | None = None, cwd: Path | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    assert SLUICE.exists(), f"{SLUICE} missing: `pip install -e .` installs the console script"
    return subprocess.run([str(SLUICE), *args], env=env, input=stdin, capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout)


def sluice_json(env: dict, *args: str, **kwargs):
    """Run a command with --json and return its parsed stdout (asserting exit 0)."""
    result = sluice(env, *args, "--json", **kwargs)
    assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
    return json.loads(result.stdout)
