"""slidewise:terrainfactors through PyQGIS and through qgis_process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_helpers import real_dem, run_qgis_process

BANDS = [
    "slope",
    "aspect",
    "aspect_sin",
    "aspect_cos",
    "plan_curvature",
    "profile_curvature",
    "hillshade",
    "twi",
]


def _band_names(path: str) -> list[str]:
    from osgeo import gdal

    ds = gdal.Open(path)
    return [ds.GetRasterBand(i + 1).GetDescription() for i in range(ds.RasterCount)]


def test_pyqgis_run_writes_named_bands_and_manifest(qgis_app, tmp_path: Path) -> None:
    import processing

    out = tmp_path / "factors.tif"
    result = processing.run(
        "slidewise:terrainfactors", {"INPUT": str(real_dem()), "OUTPUT": str(out)}
    )
    assert Path(result["OUTPUT"]) == out
    assert _band_names(str(out)) == BANDS
    manifest = json.loads(Path(result["MANIFEST"]).read_text())
    assert manifest["algorithm"] == "slidewise:terrainfactors"
    assert manifest["inputs"][str(real_dem())]
    assert manifest["packages"]["numpy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["factors.manifest.json", "factors.tif"]


def _expect_failure(parameters: dict, needle: str, tmp_path: Path) -> None:
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as info:
        processing.run("slidewise:terrainfactors", parameters)
    assert needle in str(info.value), str(info.value)
    assert "Traceback" not in str(info.value)
    leftovers = [p for p in tmp_path.iterdir() if p.suffix != ".txt" and p.name != "empty.tif"]
    assert leftovers == [], leftovers


def test_missing_file(qgis_app, tmp_path: Path) -> None:
    _expect_failure(
        {"INPUT": str(tmp_path / "nope.tif"), "OUTPUT": str(tmp_path / "o.tif")},
        "nope.tif",
        tmp_path,
    )


def test_not_a_raster(qgis_app, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a raster\n")
    _expect_failure({"INPUT": str(bad), "OUTPUT": str(tmp_path / "o.tif")}, "raster", tmp_path)


def test_empty_raster(qgis_app, tmp_path: Path) -> None:
    from osgeo import gdal

    empty = tmp_path / "empty.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(empty), 50, 40, 1, gdal.GDT_Float32)
    ds.SetGeoTransform([500000, 10, 0, 9500000, 0, -10])
    ds.SetProjection("EPSG:32717")
    band = ds.GetRasterBand(1)
    band.SetNoDataValue(-9999)
    band.Fill(-9999)
    ds = None
    _expect_failure({"INPUT": str(empty), "OUTPUT": str(tmp_path / "o.tif")}, "no valid", tmp_path)


def test_geographic_dem_is_refused(qgis_app, tmp_path: Path) -> None:
    from plugin_helpers import SHARED

    rhine = SHARED / "terrain" / "rhine_elv0.tif"
    if not rhine.is_file():
        pytest.skip("shared data not available")
    _expect_failure(
        {"INPUT": str(rhine), "OUTPUT": str(tmp_path / "o.tif")}, "geographic", tmp_path
    )


def test_unknown_enum_value(qgis_app, tmp_path: Path) -> None:
    _expect_failure(
        {"INPUT": str(real_dem()), "OUTPUT": str(tmp_path / "o.tif"), "GEOGRAPHIC": 7},
        "GEOGRAPHIC",
        tmp_path,
    )


def test_missing_engine_environment(qgis_app, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SLIDEWISE_PYTHON", str(tmp_path / "no-env" / "bin" / "python"))
    _expect_failure(
        {"INPUT": str(real_dem()), "OUTPUT": str(tmp_path / "o.tif")}, "Set up engine", tmp_path
    )


def test_cancel_through_feedback_leaves_nothing(qgis_app, tmp_path: Path) -> None:
    """An algorithm on a slow job: cancelling the feedback ends the worker."""
    import time

    from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback

    from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm

    class SlowAlgorithm(SlidewiseAlgorithm):
        ALG_ID = "slowtest"
        JOB = "sleep"

        def initAlgorithm(self, config=None):
            pass

        def job_parameters(self, parameters, context, feedback):
            return {"OUTPUT": str(tmp_path / "slow.txt"), "SECONDS": 60}, [
                str(tmp_path / "slow.txt")
            ]

    feedback = QgsProcessingFeedback()
    cancel_at: list[float] = []

    def on_progress(value: float) -> None:
        if value > 3 and not cancel_at:
            cancel_at.append(time.monotonic())
            feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    alg = SlowAlgorithm()
    alg.initAlgorithm()
    with pytest.raises(QgsProcessingException):
        alg.processAlgorithm({}, QgsProcessingContext(), feedback)
    assert time.monotonic() - cancel_at[0] < 2.0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_qgis_process_lists_groups_and_runs(qgis_process_env, tmp_path: Path) -> None:
    listing = run_qgis_process(qgis_process_env, "list")
    assert listing.returncode == 0, listing.stderr
    assert "slidewise:terrainfactors" in listing.stdout
    assert "slidewise:checkengine" in listing.stdout

    out = tmp_path / "factors.tif"
    proc = run_qgis_process(
        qgis_process_env,
        "--json",
        "run",
        "slidewise:terrainfactors",
        "--",
        f"INPUT={real_dem()}",
        f"OUTPUT={out}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    payload = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert payload["results"]["OUTPUT"] == str(out)
    assert Path(payload["results"]["MANIFEST"]).is_file()
    assert _band_names(str(out)) == BANDS


@pytest.mark.slow
def test_qgis_process_checkengine(qgis_process_env) -> None:
    proc = run_qgis_process(qgis_process_env, "--json", "run", "slidewise:checkengine")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout[proc.stdout.index("{") :])["results"]
    assert results["DEVICE"] in ("cpu", "cuda", "mps")
    assert results["PYTHON"]
    assert "torch" in json.loads(results["PACKAGES"])


@pytest.mark.slow
def test_qgis_process_bad_input_message(qgis_process_env, tmp_path: Path) -> None:
    bad = tmp_path / "notes.tif"
    bad.write_text("not a raster")
    proc = run_qgis_process(
        qgis_process_env,
        "run",
        "slidewise:terrainfactors",
        "--",
        f"INPUT={bad}",
        f"OUTPUT={tmp_path / 'o.tif'}",
    )
    assert proc.returncode != 0
    assert not (tmp_path / "o.tif").exists()
