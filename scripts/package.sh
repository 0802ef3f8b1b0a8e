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
OUTZIP="$REPO/dist/slidewise-$VERSION.zip"
rm -f "$OUTZIP"
(cd "$STAGE" && python3 -m zipfile -c "$OUTZIP" slidewise)
echo "$OUTZIP"
