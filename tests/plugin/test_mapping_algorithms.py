"""The mapping algorithms through PyQGIS and qgis_process, on the shipped Bijie pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_helpers import BIJIE, SHARED, TEST_DATA, assert_fails, run_qgis_process

TEST_IMAGE = BIJIE / "test" / "images" / "10105.png"
TEST_MASK = BIJIE / "test" / "masks" / "10105.png"


def test_train_writes_model_with_validation_metrics(trained) -> None:
    result = trained["result"]
    assert Path(result["OUTPUT"]).is_file()
    assert Path(result["MANIFEST"]).is_file()
    metric_keys = [k for k in result if "F1" in k]
    assert metric_keys, sorted(result)


def test_map_then_evaluate(trained, qgis_app) -> None:
    import processing
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    out = trained["out"]
    mapped = processing.run(
        "slidewise:maplandslides",
        {
            "INPUT": str(TEST_IMAGE),
            "MODEL": trained["result"]["OUTPUT"],
            "OUTPUT_PROBABILITY": str(out / "prob.tif"),
            "OUTPUT_MASK": str(out / "mask.tif"),
            "OUTPUT_POLYGONS": str(out / "polygons.gpkg"),
        },
    )
    probability = QgsRasterLayer(mapped["OUTPUT_PROBABILITY"])
    assert probability.isValid()
    assert probability.width() == QgsRasterLayer(str(TEST_IMAGE)).width()
    stats = probability.dataProvider().bandStatistics(1)
    assert 0.0 <= stats.minimumValue <= stats.maximumValue <= 1.0
    assert QgsRasterLayer(mapped["OUTPUT_MASK"]).isValid()
    polygons = QgsVectorLayer(mapped["OUTPUT_POLYGONS"])
    assert polygons.isValid()
    assert {"area_m2", "mean_probability"} <= set(polygons.fields().names())

    evaluated = processing.run(
        "slidewise:evaluatemapping",
        {
            "INPUT": mapped["OUTPUT_PROBABILITY"],
            "REFERENCE": str(TEST_MASK),
            "LANDSLIDE_VALUES": "255",
            "OUTPUT": str(out / "eval.json"),
            "OUTPUT_HTML": str(out / "eval.html"),
        },
    )
    figures = json.loads(Path(evaluated["OUTPUT"]).read_text())
    assert Path(evaluated["OUTPUT_HTML"]).is_file()
    _check_confusion(figures, evaluated, mapped["OUTPUT_PROBABILITY"])


def _check_confusion(figures: dict, evaluated: dict, probability: str) -> None:
    """The evaluation's counts agree with the files, counted here independently: the
    reference's landslide pixels are TP + FN, the map's pixels at or over the threshold
    are TP + FP, every pixel is counted once, and F1 follows from the counts."""
    import numpy as np
    from osgeo import gdal

    def band_1(path: str) -> np.ndarray:
        dataset = gdal.Open(path)  # kept while its band is read (GDAL's Python binding)
        return dataset.GetRasterBand(1).ReadAsArray()

    reference, prob = band_1(str(TEST_MASK)), band_1(probability)
    tp, fp, fn, tn = (figures[k] for k in ("tp", "fp", "fn", "tn"))
    assert tp + fn == int((reference == 255).sum()) > 0
    assert tp + fp == int((prob >= figures["threshold"]).sum())
    assert tp + fp + fn + tn == figures["evaluated_pixels"] == reference.size
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert evaluated["F1"] == pytest.approx(f1) == pytest.approx(figures["f1"])
    assert np.isfinite(prob).all()


def test_band_count_mismatch_names_expected_bands(trained, tmp_path: Path) -> None:
    tiles = sorted((SHARED / "mapping" / "chattogram_s2" / "images").glob("*.tif"))
    if not tiles:
        pytest.skip("shared data not available")
    assert_fails(
        "slidewise:maplandslides",
        {
            "INPUT": str(tiles[0]),
            "MODEL": trained["result"]["OUTPUT"],
            "OUTPUT_PROBABILITY": str(tmp_path / "p.tif"),
        },
        "band",
        tmp_path,
    )


def test_model_of_another_task_is_refused(trained, qgis_app, tmp_path: Path) -> None:
    import processing

    susceptibility = processing.run(
        "slidewise:trainsusceptibility",
        {
            "INPUT": str(TEST_DATA / "ecuador" / "ta.tif"),
            "TABLE": str(TEST_DATA / "ecuador" / "lsl.csv"),
            "LABEL_FIELD": "lslpts",
            "METHOD": 2,
            "CV_FOLDS": 0,
            "OUTPUT": str(tmp_path / "lr.safetensors"),
        },
    )
    work = tmp_path / "work"
    work.mkdir()
    assert_fails(
        "slidewise:maplandslides",
        {
            "INPUT": str(TEST_IMAGE),
            "MODEL": susceptibility["OUTPUT"],
            "OUTPUT_PROBABILITY": str(work / "p.tif"),
        },
        "susceptibility",
        work,
    )


def test_no_output_chosen(trained, tmp_path: Path) -> None:
    assert_fails(
        "slidewise:maplandslides",
        {"INPUT": str(TEST_IMAGE), "MODEL": trained["result"]["OUTPUT"]},
        "at least one output",
        tmp_path,
    )


@pytest.mark.slow
def test_qgis_process_map(trained, qgis_process_env, tmp_path: Path) -> None:
    proc = run_qgis_process(
        qgis_process_env,
        "--json",
        "run",
        "slidewise:maplandslides",
        "--",
        f"INPUT={TEST_IMAGE}",
        f"MODEL={trained['result']['OUTPUT']}",
        f"OUTPUT_PROBABILITY={tmp_path / 'p.tif'}",
        f"OUTPUT_POLYGONS={tmp_path / 'p.gpkg'}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout[proc.stdout.index("{") :])["results"]
    assert Path(results["OUTPUT_PROBABILITY"]).is_file()
    assert Path(results["MANIFEST"]).is_file()
