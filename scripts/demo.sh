#!/usr/bin/env bash
# make demo: the main Slidewise jobs through qgis_process on the real data in tests/data.
set -euo pipefail
OUT="${1:-$(pwd)/demo_output}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DATA="$REPO/tests/data"
QP="${QGIS_PROCESS:-qgis_process.bin}"
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"

run_as() {  # run_as NAME ALG KEY=VALUE... ; prints qgis_process JSON into $OUT/NAME.json
  local name="$1" alg="$2"; shift 2
  echo "== $alg ($name)"
  "$QP" --json run "$alg" -- "$@" > "$OUT/$name.json" 2> "$OUT/$name.log" || {
    echo "FAILED: $alg (see $OUT/$name.log)"; tail -20 "$OUT/$name.log"; exit 1; }
}

run() {  # run ALG KEY=VALUE... ; into $OUT/<alg>.json
  run_as "${1#slidewise:}" "$@"
}

json() {  # json FILE EXPR: read a field of a qgis_process JSON answer
  "${SLIDEWISE_PYTHON:-python3}" - "$1" "$2" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):])
value = doc
for key in sys.argv[2].split("."):
    value = value[key]
print(f"{value:.3f}" if isinstance(value, float) else value)
PY
}

run slidewise:checkengine
run slidewise:terrainfactors "INPUT=$DATA/ecuador/dem_10m.tif" "OUTPUT=$OUT/terrain_factors.tif"

{
  echo "# Slidewise demo ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo
  echo "Engine: $(json "$OUT/checkengine.json" results.PYTHON) on $(json "$OUT/checkengine.json" results.DEVICE), torchvision ops: $(json "$OUT/checkengine.json" results.TORCHVISION_OPS)"
  echo
  echo "## Terrain factors (southern Ecuador 10 m DEM)"
  echo "- output: $OUT/terrain_factors.tif (bands slope, aspect, aspect_sin, aspect_cos, plan_curvature, profile_curvature, hillshade, twi)"
  echo "- manifest: $(json "$OUT/terrainfactors.json" results.MANIFEST)"
} > "$SUMMARY"
for extra in "$REPO"/scripts/demo.d/*.sh; do
  [ -e "$extra" ] && source "$extra"
done
echo
cat "$SUMMARY"
