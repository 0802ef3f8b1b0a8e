#!/usr/bin/env bash
# make package: dist/slidewise-<version>.zip with the plugin only (no tests, caches, dev files).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
VERSION="$(sed -n 's/^version=//p' "$REPO/metadata.txt")"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/slidewise" "$REPO/dist"
cd "$REPO"
git ls-files -z --cached --others --exclude-standard \
  | grep -zvE '^(tests/|\.ci/|\.github/|scripts/|docs/|Makefile$|\.gitignore$|\.pre-commit|demo_output/|dist/|build/)' \
  | grep -zvE '(__pycache__|\.pyc$|\.pytest_cache|\.ruff_cache|\.mypy_cache)' \
  | xargs -0 -I{} cp --parents {} "$STAGE/slidewise/"
# The zip is also what "Set up engine" installs the engine from (pip install <plugin folder>):
# it needs pyproject.toml, README.md (its readme) and every package pyproject.toml lists.
python3 - "$STAGE/slidewise" <<'PY'
import sys, tomllib
from pathlib import Path
root = Path(sys.argv[1])
project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
missing = [name for name in ("pyproject.toml", project["project"]["readme"], "metadata.txt")
           if not (root / name).is_file()]
for package in project["tool"]["setuptools"]["packages"]:
    folder = root.joinpath(*package.split(".")[1:])
    if not (folder / "__init__.py").is_file():
        missing.append(f"{package} ({folder.relative_to(root)}/__init__.py)")
if missing:
    sys.exit("package.sh: the zip would miss what the engine install needs: " + ", ".join(missing))
PY
OUTZIP="$REPO/dist/slidewise-$VERSION.zip"
rm -f "$OUTZIP"
(cd "$STAGE" && python3 -m zipfile -c "$OUTZIP" slidewise)
echo "$OUTZIP"
