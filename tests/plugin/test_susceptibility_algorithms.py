"""The susceptibility algorithms through PyQGIS, and the chain through qgis_process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from plugin_helpers import SHARED, TEST_DATA, assert_fails, run_qgis_process

ECU = TEST_DATA / "ecuador"
STACK = ECU / "ta.tif"
SPLIT_Y = 9558766


def _points(csv: Path, out: Path, where: str) -> Path:
    subprocess.run(
        [
            "ogr2ogr",
            "-q",
            "-overwrite",
            "-f",
            "GPKG",
            str(out),
            str(csv),
            "-nln",
            out.stem,
            "-oo",
            "X_POSSIBLE_NAMES=x",
            "-oo",
            "Y_POSSIBLE_NAMES=y",
            "-oo",
            "AUTODETECT_TYPE=YES",
            "-a_srs",
            "EPSG:32717",
            "-where",
            where,
        ],
        check=True,
    )
    return out


def _rows(table: Path) -> list[dict[str, str]]:
    import csv

    with table.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def inventories(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inventories")
    return {
        "train": _points(ECU / "lsl.csv", folder / "train.gpkg", f"y > {SPLIT_Y}"),
        "valid": _points(ECU / "landslides.csv", folder / "valid.gpkg", f"y <= {SPLIT_Y}"),
        "all": _points(ECU / "lsl.csv", folder / "all.gpkg", "x > 0"),
    }


@pytest.fixture(scope="module")
def pipeline(qgis_app, inventories, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Blocks, a meta model, its prediction and evaluation, run once for the module."""
    import processing

    out = tmp_path_factory.mktemp("pipeline")
    blocks = processing.run(
        "slidewise:segmentblocks",
        {
            "INPUT": str(STACK),
            "N_BLOCKS": 16,
            "INVENTORY": str(inventories["all"]),
            "LABEL_FIELD": "lslpts",
            "OUTPUT": str(out / "blocks.tif"),
            "OUTPUT_POLYGONS": str(out / "blocks.gpkg"),
        },
    )
    model = processing.run(  # trained on the north only: scored on the south below
        "slidewise:trainsusceptibility",
        {
            "INPUT": str(STACK),
            "INVENTORY": str(inventories["train"]),
            "LABEL_FIELD": "lslpts",
            "BLOCKS": blocks["OUTPUT"],
            "METHOD": 0,
            "ITERATIONS_META": 60,
            "CV_FOLDS": 0,
            "OUTPUT": str(out / "model.safetensors"),
        },
    )
    prediction = processing.run(
        "slidewise:predictsusceptibility",
        {
            "MODEL": model["OUTPUT"],
            "INPUT": str(STACK),
            "OUTPUT": str(out / "susc.tif"),
            "CLASSED": str(out / "classes.tif"),
            "CLASSIFICATION": 1,
        },
    )
    report = processing.run(
        "slidewise:evaluatesusceptibility",
        {
            "INPUT": prediction["OUTPUT"],
            "INVENTORY": str(inventories["valid"]),
            "LABEL_FIELD": "lslpts",
            "OUTPUT": str(out / "report.html"),
        },
    )
    return {
        "out": out,
        "blocks": blocks,
        "model": model,
        "prediction": prediction,
        "report": report,
    }


def test_segmentblocks_writes_raster_and_polygons(pipeline) -> None:
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    blocks = pipeline["blocks"]
    assert QgsRasterLayer(blocks["OUTPUT"]).isValid()
    polygons = QgsVectorLayer(blocks["OUTPUT_POLYGONS"])
    assert polygons.isValid() and polygons.featureCount() >= 10
    fields = polygons.fields().names()
    for name in ("block", "area", "landslides", "samples"):
        assert name in fields
    # 350 points; a point on a nodata pixel of the stack is dropped (and logged).
    assert 340 <= sum(f["samples"] for f in polygons.getFeatures()) <= 350


def test_train_predict_evaluate_chain(pipeline) -> None:
    from qgis.core import QgsRasterLayer

    model = pipeline["model"]
    assert Path(model["OUTPUT"]).stat().st_size > 0
    assert model["METHOD"] == "meta"
    probability = QgsRasterLayer(pipeline["prediction"]["OUTPUT"])
    stats = probability.dataProvider().bandStatistics(1)
    assert 0.0 <= stats.minimumValue <= stats.maximumValue <= 1.0
    classes = QgsRasterLayer(pipeline["prediction"]["CLASSED"])
    cstats = classes.dataProvider().bandStatistics(1)
    assert cstats.minimumValue >= 1 and cstats.maximumValue == 5
    report = pipeline["report"]
    html = Path(report["OUTPUT"]).read_text(encoding="utf-8")
    assert "data:image/png;base64," in html
    figures = json.loads(Path(report["JSON"]).read_text())
    # Scored on the southern points only; the model saw only northern ones (0.75 measured).
    assert report["ROC_AUC"] > 0.65
    south = [r for r in _rows(ECU / "landslides.csv") if float(r["y"]) <= SPLIT_Y]
    positives = sum(r["lslpts"] == "1" for r in south)
    assert (report["N_POSITIVE"], report["N_NEGATIVE"]) == (positives, len(south) - positives)
    metrics = figures["metrics"]
    assert metrics["roc_auc"] == pytest.approx(report["ROC_AUC"])
    assert metrics["true_positive"] + metrics["false_negative"] == positives
    assert metrics["true_negative"] + metrics["false_positive"] == len(south) - positives


def test_classical_method_and_sample_table(qgis_app, inventories, tmp_path: Path) -> None:
    import processing

    table = processing.run(
        "slidewise:samplefactors",
        {
            "INPUT": str(STACK),
            "INVENTORY": str(inventories["train"]),
            "LABEL_FIELD": "lslpts",
            "OUTPUT": str(tmp_path / "samples.csv"),
        },
    )
    header = Path(table["OUTPUT"]).read_text().splitlines()[0].split(",")
    for name in ("slope", "elev", "label"):
        assert name in header
    rf = processing.run(
        "slidewise:trainsusceptibility",
        {
            "TABLE": table["OUTPUT"],
            "LABEL_FIELD": "label",
            "METHOD": 1,
            "N_ESTIMATORS": 30,
            "CV_FOLDS": 3,
            "OUTPUT": str(tmp_path / "rf.safetensors"),
        },
    )
    assert rf["METHOD"] == "rf"
    # Cross-validated on held-out folds: better than chance; random folds (neighbours of
    # training points) score at least as well as spatial ones, less the noise of 3 folds.
    assert rf["CV_SPATIAL_AUC_MEAN"] > 0.65  # 0.80 measured
    assert rf["CV_RANDOM_AUC_MEAN"] > rf["CV_SPATIAL_AUC_MEAN"] - 0.1
    # A model left to a temporary file is kept in the Slidewise models folder instead.
    from qgis.core import QgsApplication, QgsProcessingUtils

    kept = processing.run(
        "slidewise:trainsusceptibility",
        {
            "TABLE": table["OUTPUT"],
            "LABEL_FIELD": "label",
            "METHOD": 1,
            "N_ESTIMATORS": 10,
            "CV_FOLDS": 0,
            "OUTPUT": "TEMPORARY_OUTPUT",
        },
    )
    model = Path(kept["OUTPUT"])
    assert model.is_file()
    assert Path(QgsProcessingUtils.tempFolder()).resolve() not in model.resolve().parents
    assert model.parent == Path(QgsApplication.qgisSettingsDirPath()) / "slidewise" / "models"


def test_factor_rasters_on_different_grids_are_refused(
    qgis_app, inventories, tmp_path: Path
) -> None:
    other = SHARED / "terrain" / "bigtujunga_srtm30m.tif"
    if not other.is_file():
        pytest.skip("shared data not available")
    assert_fails(
        "slidewise:segmentblocks",
        {"FACTORS": [str(STACK), str(other)], "OUTPUT": str(tmp_path / "b.tif")},
        "bigtujunga_srtm30m.tif",
        tmp_path,
    )


def test_inventory_outside_the_stack(qgis_app, tmp_path: Path) -> None:
    far = _points(ECU / "lsl.csv", tmp_path / "far.gpkg", "x > 0")
    subprocess.run(
        [
            "ogr2ogr",
            "-q",
            "-f",
            "GPKG",
            str(tmp_path / "far4326.gpkg"),
            str(far),
            "-a_srs",
            "EPSG:4326",
        ],
        check=True,
    )  # wrong CRS label: far outside
    (tmp_path / "far.gpkg").unlink()
    assert_fails(
        "slidewise:trainsusceptibility",
        {
            "INPUT": str(STACK),
            "INVENTORY": str(tmp_path / "far4326.gpkg"),
            "OUTPUT": str(tmp_path / "m.safetensors"),
        },
        "outside",
        tmp_path,
    )


def test_no_factors(qgis_app, inventories, tmp_path: Path) -> None:
    assert_fails(
        "slidewise:trainsusceptibility",
        {"INVENTORY": str(inventories["train"]), "OUTPUT": str(tmp_path / "m.safetensors")},
        "No factors",
        tmp_path,
    )


def test_model_of_another_kind_is_refused(qgis_app, tmp_path: Path) -> None:
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    assert_fails(
        "slidewise:predictsusceptibility",
        {"MODEL": str(bogus), "INPUT": str(STACK), "OUTPUT": str(tmp_path / "p.tif")},
        "Slidewise",
        tmp_path,
    )


def test_missing_factor_band_at_prediction(pipeline, tmp_path: Path) -> None:
    dem = ECU / "dem_10m.tif"
    assert_fails(
        "slidewise:predictsusceptibility",
        {
            "MODEL": pipeline["model"]["OUTPUT"],
            "FACTORS": [str(dem)],
            "OUTPUT": str(tmp_path / "p.tif"),
        },
        "slope",
        tmp_path,
    )


@pytest.mark.slow
def test_qgis_process_susceptibility(qgis_process_env, inventories, tmp_path: Path) -> None:
    model = tmp_path / "lr.safetensors"
    proc = run_qgis_process(
        qgis_process_env,
        "--json",
        "run",
        "slidewise:trainsusceptibility",
        "--",
        f"INPUT={STACK}",
        f"INVENTORY={inventories['train']}",
        "LABEL_FIELD=lslpts",
        "METHOD=2",
        "CV_FOLDS=2",
        f"OUTPUT={model}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_qgis_process(
        qgis_process_env,
        "--json",
        "run",
        "slidewise:predictsusceptibility",
        "--",
        f"MODEL={model}",
        f"INPUT={STACK}",
        f"OUTPUT={tmp_path / 'p.tif'}",
        f"CLASSED={tmp_path / 'c.tif'}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout[proc.stdout.index("{") :])["results"]
    assert Path(results["OUTPUT"]).is_file() and Path(results["CLASSED"]).is_file()
    assert Path(results["MANIFEST"]).is_file()


@pytest.mark.slow
def test_qgis_process_adaptsusceptibility(qgis_process_env, pipeline, inventories) -> None:
    """The pipeline's meta model adapted to the southern inventory with 5 samples per block."""
    out = pipeline["out"]
    proc = run_qgis_process(
        qgis_process_env,
        "--json",
        "run",
        "slidewise:adaptsusceptibility",
        "--",
        f"MODEL={pipeline['model']['OUTPUT']}",
        f"INPUT={STACK}",
        f"INVENTORY={inventories['valid']}",
        "LABEL_FIELD=lslpts",
        f"BLOCKS={pipeline['blocks']['OUTPUT']}",
        "SHOTS=5",
        f"OUTPUT={out / 'adapted.safetensors'}",
        f"OUTPUT_SAMPLES={out / 'adapted_samples.csv'}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout[proc.stdout.index("{") :])["results"]
    assert Path(results["OUTPUT"]).is_file() and Path(results["OUTPUT_SAMPLES"]).is_file()
    # Scores before and after adaptation on the samples it did not adapt on.
    assert 0 < results["HOLDOUT_AUC_BEFORE"] < 1 and 0 < results["HOLDOUT_AUC_AFTER"] < 1
    assert 0 < results["SUPPORT_SAMPLES"] < results["HOLDOUT_SAMPLES"]
    roles = Path(results["OUTPUT_SAMPLES"]).read_text().splitlines()[1:]
    assert sum(",support," in r for r in roles) == results["SUPPORT_SAMPLES"]
