#!/usr/bin/env bash
# Vendor Sluice's browser libraries from the pinned npm lockfile, reproducibly.
#
#   scripts/vendor.sh [STATIC_DIR]     (default: ./static)
#
# Installs package-lock.json exactly (npm ci, install scripts off: npm 11 holds some back and
# none are needed for prebuilt bundles) in a throw-away directory, then copies the built UMD
# files, their licences and the step-type icons into STATIC_DIR/vendor and STATIC_DIR/icons,
# and writes STATIC_DIR/vendor/MANIFEST.json (name, version, file, sha256, licence).
# tests/test_designer_vendor.py runs this into a temp dir and fails if the committed files differ.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATIC="$(mkdir -p "${1:-$ROOT/static}" && cd "${1:-$ROOT/static}" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cp "$ROOT/package.json" "$ROOT/package-lock.json" "$WORK/"
(cd "$WORK" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
NM="$WORK/node_modules"

VENDOR="$STATIC/vendor"
ICONS="$STATIC/icons"
rm -rf "$VENDOR" "$ICONS"
mkdir -p "$VENDOR" "$ICONS"

# The canvas (X6 UMD bundle: global X6, plugins included) and the layout engine (global dagre).
cp "$NM/@antv/x6/dist/x6.min.js" "$VENDOR/x6.min.js"
cp "$NM/@antv/x6/LICENSE" "$VENDOR/x6.LICENSE"
cp "$NM/@dagrejs/dagre/dist/dagre.min.js" "$VENDOR/dagre.min.js"
cp "$NM/@dagrejs/dagre/LICENSE" "$VENDOR/dagre.LICENSE"
# YAML view of the definition in the editor (global jsyaml).
cp "$NM/js-yaml/dist/js-yaml.min.js" "$VENDOR/js-yaml.min.js"
cp "$NM/js-yaml/LICENSE" "$VENDOR/js-yaml.LICENSE"
# Monitor charts and the run timeline (global Chart). Added by the monitor.
cp "$NM/chart.js/dist/chart.umd.min.js" "$VENDOR/chart.umd.min.js"
cp "$NM/chart.js/LICENSE.md" "$VENDOR/chart.LICENSE"

# Icons for step types, triggers and toolbar buttons: only the ones Sluice names.
ICON_NAMES=(
  activity alert-triangle arrow-right-left box braces calendar-clock check check-circle
  circle-x clock code cog copy download file-json filter git-branch git-compare globe
  hand hourglass inbox layers layout-dashboard list-checks mail maximize minus octagon-x
  play plus radio redo-2 rocket save search send shuffle split timer trash-2 undo-2
  upload user-check wand-sparkles webhook workflow x zap zoom-in zoom-out
)
for name in "${ICON_NAMES[@]}"; do
  cp "$NM/lucide-static/icons/$name.svg" "$ICONS/$name.svg"
done
# Older lucide names step types may use, mapped to the current file.
cp "$NM/lucide-static/icons/octagon-x.svg" "$ICONS/x-octagon.svg"
cp "$NM/lucide-static/LICENSE" "$ICONS/LICENSE"

python3 - "$NM" "$STATIC" <<'PY'
import hashlib, json, sys
from pathlib import Path

nm, static = Path(sys.argv[1]), Path(sys.argv[2])

def package(name):
    return json.loads((nm / name / "package.json").read_text())

def entry(pkg_name, file):
    pkg = package(pkg_name)
    path = static / file
    return {"name": pkg_name, "version": pkg["version"], "file": file,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "licence": pkg.get("license", "")}

files = [("@antv/x6", "vendor/x6.min.js"), ("@antv/x6", "vendor/x6.LICENSE"),
         ("@dagrejs/dagre", "vendor/dagre.min.js"), ("@dagrejs/dagre", "vendor/dagre.LICENSE"),
         ("js-yaml", "vendor/js-yaml.min.js"), ("js-yaml", "vendor/js-yaml.LICENSE")]
files += [("chart.js", "vendor/chart.umd.min.js"), ("chart.js", "vendor/chart.LICENSE")]  # the monitor's
files += [("lucide-static", f"icons/{p.name}") for p in sorted((static / "icons").iterdir())]
manifest = [entry(pkg, file) for pkg, file in files]
(static / "vendor" / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
PY
echo "vendored $(ls "$VENDOR" | wc -l) files and $(ls "$ICONS" | wc -l) icon files into $STATIC"
