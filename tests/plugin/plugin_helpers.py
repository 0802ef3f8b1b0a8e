"""Shared paths and helpers of the plugin tests (imported by conftest and tests).

These tests run with Debian's ``/usr/bin/python3`` (the only interpreter with
PyQGIS); the engine runs in the environment named by ``SLIDEWISE_PYTHON``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
TEST_DATA = REPO / "tests" / "data"
BIJIE = TEST_DATA / "bijie"
DEFAULT_ENGINE_PY = Path.home() / ".local/share/slidewise/engine-venv/bin/python"
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"


def _plugin_parent(root: Path) -> Path:
    """A folder in which ``slidewise`` names this checkout (whatever its folder name)."""
    if REPO.name == "slidewise":
        return REPO.parent
    root.mkdir(parents=True, exist_ok=True)
    link = root / "slidewise"
    if link.is_symlink() and link.resolve() != REPO.resolve():
        link.unlink()  # left by another checkout
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    return root


_CHECKOUT = hashlib.sha1(str(REPO.resolve()).encode()).hexdigest()[:10]
PLUGINS_DIR = _plugin_parent(
    Path(os.environ.get("TMPDIR", "/tmp"))
    / f"slidewise-tests-{os.getuid()}-{_CHECKOUT}"
    / "plugins"
)
sys.path.insert(0, str(PLUGINS_DIR))
os.environ.setdefault("SLIDEWISE_PYTHON", str(DEFAULT_ENGINE_PY))


def run_qgis_process(
    env: dict[str, str], *args: str, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """Run qgis_process.bin with ``args`` and return the completed process."""
    return subprocess.run(
        [QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def real_dem() -> Path:
    """A real DEM shipped with the repository."""
    return TEST_DATA / "ecuador" / "dem_10m.tif"


def assert_fails(alg: str, params: dict, needle: str, folder: Path) -> None:
    """Run ``alg`` expecting a clear Processing error containing ``needle``.

    The message must not be a traceback and ``folder`` must be left as it was
    (no half-written output).
    """
    import processing
    import pytest
    from qgis.core import QgsProcessingException

    before = set(folder.iterdir())
    with pytest.raises(QgsProcessingException) as info:
        processing.run(alg, params)
    assert needle.lower() in str(info.value).lower(), str(info.value)
    assert "Traceback" not in str(info.value)
    assert set(folder.iterdir()) == before


def scene_footprints(folder: Path, scenes: dict[str, tuple[int, str, str]]) -> Path:
    """Georeferenced 256 x 256 crops of a real Bijie image and a GeoJSON of their footprints.

    Args:
        folder: Where the crops (``<name>.tif``) and ``footprints.geojson`` are written.
        scenes: Scene name -> (first column of its crop, date, region); 1 m pixels in
            UTM 48N, so crops 128 columns apart overlap by half.
    """

    from osgeo import gdal

    features = []
    for name, (col, date, region) in scenes.items():
        left, top = 430000.0 + col, 3019800.0
        gdal.Translate(
            str(folder / f"{name}.tif"),
            str(BIJIE / "test" / "images" / "10105.png"),
            srcWin=[col, 200, 256, 256],
            outputSRS="EPSG:32648",
            outputBounds=[left, top, left + 256, top - 256],
        )
        ring = [[left, top], [left + 256, top], [left + 256, top - 256], [left, top - 256]]
        features.append(
            {
                "type": "Feature",
                "properties": {"path": f"{name}.tif", "region": region, "date": date},
                "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
            }
        )
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32648"}}
    path = folder / "footprints.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": features}))
    return path


def model_metadata(path: str | Path) -> dict:
    """The Slidewise metadata of a model file, read from the safetensors header.

    The plugin side has no safetensors package: the header is an 8-byte
    little-endian length followed by JSON, whose ``__metadata__["slidewise"]``
    is the engine's metadata JSON.
    """
    import struct

    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return json.loads(header["__metadata__"]["slidewise"])


def qgis_desktop_command(profiles: Path, script: Path, screen: str = "1600x1000x24") -> list[str]:
    """The real QGIS desktop under Xvfb, a fresh profiles folder, running ``script`` at start."""
    return [
        "xvfb-run",
        "-a",
        "-s",
        f"-screen 0 {screen}",
        "qgis",
        "--nologo",
        "--noversioncheck",
        "--profiles-path",
        str(profiles),
        "--code",
        str(script),
    ]


# --- Map scenes into an inventory (slidewise:mapscenes) ------------------------------
#: Scene name -> (first column of the 256 x 256 crop, date, region); 1 m pixels, UTM 48N.
TWO_SCENES = {"west": (0, "2020-08-01", "bijie"), "middle": (128, "2021-07-15", "bijie")}


def two_scene_footprints(folder: Path) -> Path:
    """Two Bijie crops overlapping by half, and a GeoJSON of their footprints."""
    return scene_footprints(folder, TWO_SCENES)


def styled_ramp(alg, output: str, folder: Path, top: float) -> list:
    """Style an 8 x 8 float raster (0..``top``) as ``alg`` styles its ``output``.

    Returns:
        The colour ramp items of the single-band pseudocolour renderer it got.
    """
    import numpy as np
    from osgeo import gdal
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject, QgsRasterLayer

    path = str(folder / f"{output.lower()}.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 8, 8, 1, gdal.GDT_Float32)
    ds.SetGeoTransform([0, 10, 0, 80, 0, -10])
    ds.GetRasterBand(1).WriteArray(np.linspace(0, top, 64, dtype="float32").reshape(8, 8))
    ds = None
    context = QgsProcessingContext()
    details = QgsProcessingContext.LayerDetails(output.lower(), QgsProject.instance(), output)
    context.addLayerToLoadOnCompletion(path, details)
    alg.style_outputs({output: path}, context)
    processor = context.layerToLoadOnCompletionDetails(path).postProcessor()
    assert processor is not None, f"{output} gets no style"
    layer = QgsRasterLayer(path, output.lower())
    processor.postProcessLayer(layer, context, QgsProcessingFeedback())
    assert layer.renderer().type() == "singlebandpseudocolor"
    return layer.renderer().shader().rasterShaderFunction().colorRampItemList()
