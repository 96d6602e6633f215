"""The vendored browser libraries are exactly what the pinned lockfile produces.

Two checks: the committed manifest matches the committed files (cheap, catches hand edits),
and re-running scripts/vendor.sh from the lockfile into a temp dir reproduces them byte for
byte (catches a lockfile bump without re-vendoring, or a vendored file nobody can rebuild).
"""

import filecmp
import hashlib
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "static"


def test_manifest_hashes_match_committed_files():
    manifest = json.loads((STATIC / "vendor" / "MANIFEST.json").read_text())
    files = {item["file"] for item in manifest}
    assert {"vendor/x6.min.js", "vendor/dagre.min.js", "vendor/x6.LICENSE", "vendor/dagre.LICENSE"} <= files
    for item in manifest:
        digest = hashlib.sha256((STATIC / item["file"]).read_bytes()).hexdigest()
        assert digest == item["sha256"], f"{item['file']} differs from MANIFEST.json"
    versions = {item["name"]: item["version"] for item in manifest}
    lock = json.loads((ROOT / "package-lock.json").read_text())
    for name, version in versions.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version


def test_vendor_script_reproduces_committed_files(tmp_path):
    subprocess.run([str(ROOT / "scripts" / "vendor.sh"), str(tmp_path)], check=True, timeout=240,
                   capture_output=True)
    for sub in ("vendor", "icons"):
        fresh, committed = tmp_path / sub, STATIC / sub
        fresh_names = sorted(p.name for p in fresh.iterdir())
        assert fresh_names == sorted(p.name for p in committed.iterdir()), f"static/{sub} file list differs"
        match, mismatch, errors = filecmp.cmpfiles(fresh, committed, fresh_names, shallow=False)
        assert not mismatch and not errors, f"static/{sub}: re-vendored files differ: {mismatch + errors}"
