"""The evaluatemapping job: pixel metrics as scikit-learn, objects, point labels, grids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from engine_helpers import SHARED, job_context
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject
from scipy import ndimage
from sklearn.metrics import (
    f1_score,
    jaccard_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
)

import slidewise.engine.mapping.evaluate as mapping_eval
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext
from slidewise.engine.mapping.evaluate import evaluate_rasters, run_evaluate

LABELS = SHARED / "mapping" / "chattogram_s2" / "labels"
CRS = "EPSG:32645"


def _ctx() -> JobContext:
    return job_context("evaluatemapping")[0]


def _write(path: Path, band: np.ndarray, nodata=None, crs=CRS, transform=None) -> str:
    profile = {
        "driver": "GTiff",
        "width": band.shape[1],
        "height": band.shape[0],
        "count": 1,
        "dtype": str(band.dtype),
        "crs": crs,
        "transform": transform or from_origin(400000, 2500000, 10, 10),
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(band[None])
    return str(path)


@pytest.fixture()
def pair(tmp_path):
    """A probability raster with NaN nodata and a reference mask with nodata 255."""
    rng = np.random.default_rng(0)
    shape = (300, 200)
    ref = ndimage.binary_opening(rng.random(shape) > 0.7, iterations=1).astype(np.uint8)
    prob = np.clip(0.6 * ref + rng.random(shape) * 0.7 - 0.1, 0, 1).astype(np.float32)
    prob[:20, :] = np.nan
    ref[-15:, :] = 255
    return (
        _write(tmp_path / "prob.tif", prob),
        _write(tmp_path / "ref.tif", ref, nodata=255),
        prob,
        ref,
    )


def test_pixel_metrics_equal_scikit_learn(pair, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(mapping_eval, "STRIP_PIXELS", 200 * 16)  # 16-row strips
    prob_path, ref_path, prob, ref = pair
    out = tmp_path / "eval.json"
    result = run_evaluate(
        {"INPUT": prob_path, "REFERENCE": ref_path, "OUTPUT": str(out), "THRESHOLD": 0.45},
        _ctx(),
    )
    figures = json.loads(out.read_text())
    valid = np.isfinite(prob) & (ref != 255)
    y_true = ref[valid] == 1
    y_pred = prob[valid] >= 0.45
    assert figures["evaluated_pixels"] == valid.sum()
    assert figures["precision"] == pytest.approx(precision_score(y_true, y_pred))
    assert figures["recall"] == pytest.approx(recall_score(y_true, y_pred))
    assert figures["f1"] == pytest.approx(f1_score(y_true, y_pred))
    assert figures["iou"] == pytest.approx(jaccard_score(y_true, y_pred))
    assert figures["mcc"] == pytest.approx(matthews_corrcoef(y_true, y_pred))
    (tn, fp), (fn, tp) = figures["confusion_matrix"]["matrix"]
    assert (tp, fp, fn, tn) == (
        np.sum(y_true & y_pred),
        np.sum(~y_true & y_pred),
        np.sum(y_true & ~y_pred),
        np.sum(~y_true & ~y_pred),
    )
    # Objects, counted on the evaluated pixels (streamed across 16-row strips).
    ref_lab, n_ref = ndimage.label((ref == 1) & valid)
    pred_lab, n_pred = ndimage.label(y_pred_full := (np.nan_to_num(prob) >= 0.45) & valid)
    hit_ref = len(np.unique(ref_lab[(ref_lab > 0) & y_pred_full]))
    hit_pred = len(np.unique(pred_lab[(pred_lab > 0) & (ref == 1)]))
    assert figures["reference_objects"] == n_ref
    assert figures["reference_objects_hit"] == hit_ref
    assert figures["predicted_objects"] == n_pred
    assert figures["predicted_objects_hit"] == hit_pred
    assert result.figures["f1"] == figures["f1"]


def test_mask_prediction_polygon_reference_and_html(pair, tmp_path) -> None:
    """A 0/1 mask prediction against polygons equals the raster reference."""
    from slidewise.engine.geo.polygons import polygonise_mask
    from slidewise.engine.geo.vectors import write_vector

    _, ref_path, prob, ref = pair
    mask = np.where(np.isfinite(prob), prob >= 0.5, 255).astype(np.uint8)
    mask_path = _write(tmp_path / "mask.tif", mask, nodata=255)
    full = np.where(ref == 255, 0, ref).astype(bool)
    with rasterio.open(ref_path) as ds:
        transform = ds.transform
    geoms, fields = polygonise_mask(full, np.zeros(full.shape), transform, CRS)
    poly = write_vector(tmp_path / "ref.gpkg", geoms, fields, CRS)
    a = evaluate_rasters(mask_path, str(poly))
    b = evaluate_rasters(mask_path, _write(tmp_path / "ref0.tif", full.astype(np.uint8)))
    for key in ("tp", "fp", "fn", "tn", "reference_objects", "reference_objects_hit"):
        assert a[key] == b[key], key
    html = tmp_path / "eval.html"
    out = tmp_path / "eval.json"
    report = pytest.importorskip("slidewise.engine.core.report")
    assert report is not None
    run_evaluate(
        {
            "INPUT": mask_path,
            "REFERENCE": str(poly),
            "OUTPUT": str(out),
            "OUTPUT_HTML": str(html),
        },
        _ctx(),
    )
    assert "Landslide map evaluation" in html.read_text()
    assert json.loads(out.read_text())["tp"] == a["tp"]


def test_point_labels_hit_and_false_alarm_rate(tmp_path) -> None:
    """Chattogram labels: 0 unlabelled, 1 non-landslide, 2 landslide blobs."""
    label_path = LABELS / "000000000003.tif"
    if not label_path.exists():
        pytest.skip(f"real data not found: {label_path}")
    with rasterio.open(label_path) as ds:
        labels = ds.read(1)
        profile = ds.profile
    slides, n_slides = ndimage.label(labels == 2)
    others, n_others = ndimage.label(labels == 1)
    assert n_slides >= 4 and n_others >= 4
    # Predict one pixel of the first three landslide blobs and of two non-landslide blobs.
    pred = np.zeros(labels.shape, np.float32)
    for blobs, ids in ((slides, (1, 2, 3)), (others, (1, 2))):
        for i in ids:
            r, c = np.argwhere(blobs == i)[0]
            pred[r, c] = 0.9
    pred_path = _write(
        tmp_path / "pred.tif", pred, crs=profile["crs"], transform=profile["transform"]
    )
    figures = evaluate_rasters(
        pred_path, str(label_path), kind="points", landslide_values=(2,), ignore_values=(0,)
    )
    assert figures["landslide_blobs"] == n_slides
    assert figures["hit_rate"] == pytest.approx(3 / n_slides)
    assert figures["non_landslide_blobs"] == n_others
    assert figures["false_alarm_rate"] == pytest.approx(2 / n_others)
    assert figures["evaluated_pixels"] == np.count_nonzero(labels > 0)
    assert figures["tp"] == 3 and figures["fp"] == 2


def test_reference_on_another_crs_is_warped(tmp_path) -> None:
    rng = np.random.default_rng(1)
    ref = np.zeros((200, 240), np.uint8)
    for _ in range(12):
        r, c = rng.integers(10, 190), rng.integers(10, 230)
        ref[r - 6 : r + 6, c - 8 : c + 8] = 1
    ref_path = _write(tmp_path / "ref_utm.tif", ref)
    # The reference goes to WGS 84; the prediction stays on the UTM grid.
    src_transform = from_origin(400000, 2500000, 10, 10)
    dst_transform, w, h = calculate_default_transform(
        CRS, "EPSG:4326", 240, 200, 400000, 2498000, 402400, 2500000
    )
    ref_wgs = np.zeros((h, w), np.uint8)
    reproject(
        ref,
        ref_wgs,
        src_transform=src_transform,
        src_crs=CRS,
        dst_transform=dst_transform,
        dst_crs="EPSG:4326",
        resampling=Resampling.nearest,
    )
    wgs_path = _write(tmp_path / "ref_wgs.tif", ref_wgs, crs="EPSG:4326", transform=dst_transform)
    pred_path = _write(tmp_path / "pred.tif", ref.astype(np.float32))
    same = evaluate_rasters(pred_path, ref_path)
    warped = evaluate_rasters(pred_path, wgs_path)
    assert same["f1"] == 1.0 and not same["reference_warped"]
    assert warped["reference_warped"] and warped["f1"] > 0.9


def test_bad_inputs(pair, tmp_path) -> None:
    prob_path, ref_path, _, _ = pair
    out = str(tmp_path / "e.json")
    with pytest.raises(InputError, match="does not exist"):
        run_evaluate(
            {"INPUT": prob_path, "REFERENCE": str(tmp_path / "no.tif"), "OUTPUT": out}, _ctx()
        )
    with pytest.raises(InputError, match="does not exist"):
        run_evaluate(
            {"INPUT": str(tmp_path / "no.tif"), "REFERENCE": ref_path, "OUTPUT": out}, _ctx()
        )
    with pytest.raises(InputError, match="share"):
        run_evaluate(
            {
                "INPUT": prob_path,
                "REFERENCE": ref_path,
                "OUTPUT": out,
                "LANDSLIDE_VALUES": "1,2",
                "IGNORE_VALUES": "2",
            },
            _ctx(),
        )
    with pytest.raises(InputError, match="REFERENCE_KIND"):
        run_evaluate(
            {
                "INPUT": prob_path,
                "REFERENCE": ref_path,
                "OUTPUT": out,
                "REFERENCE_KIND": "blobs",
            },
            _ctx(),
        )
    far = _write(
        tmp_path / "far.tif", np.ones((10, 10), np.uint8), transform=from_origin(0, 0, 10, 10)
    )
    with pytest.raises(InputError, match="No pixel could be evaluated"):
        run_evaluate({"INPUT": prob_path, "REFERENCE": far, "OUTPUT": out}, _ctx())
    assert not Path(out).exists()


def test_parameters_come_from_the_contract() -> None:
    from slidewise.engine.mapping.evaluate import EvaluateMappingParams

    given = {"INPUT": "a.tif", "REFERENCE": "r.tif", "OUTPUT": "e.json"}
    options = EvaluateMappingParams.from_params({**given, "REFERENCE_KIND": 1})
    assert options.reference_kind == "points"  # qgis_process passes the index
    assert (options.threshold, options.landslide_values, options.ignore_values) == (None, "1", None)
    with pytest.raises(InputError, match="THRESHOLD must be between 0 and 1, got 2"):
        EvaluateMappingParams.from_params({**given, "THRESHOLD": 2})
    with pytest.raises(InputError, match="Missing required parameter"):
        EvaluateMappingParams.from_params({"INPUT": "a.tif"})


def test_the_best_threshold_on_the_reference_is_reported(tmp_path) -> None:
    """A map whose landslides score 0.10-0.20 (a model from a region with fewer landslides):
    the stored 0.5 finds none, and the report names the threshold that finds them all."""
    rng = np.random.default_rng(1)
    ref = np.zeros((120, 100), np.uint8)
    ref[30:70, 20:60] = 1
    prob = np.where(ref == 1, 0.10 + 0.10 * rng.random(ref.shape), 0.05 * rng.random(ref.shape))
    ctx, stream = job_context("evaluatemapping")
    out, html = tmp_path / "eval.json", tmp_path / "eval.html"
    run_evaluate(
        {
            "INPUT": _write(tmp_path / "prob.tif", prob.astype(np.float32)),
            "REFERENCE": _write(tmp_path / "ref.tif", ref),
            "OUTPUT": str(out),
            "OUTPUT_HTML": str(html),
        },
        ctx,
    )
    figures = json.loads(out.read_text())
    assert figures["f1"] == 0.0
    assert 0.05 <= figures["best_threshold"] <= 0.10 and figures["best_f1"] == 1.0
    assert "give it as THRESHOLD to Map landslides" in stream.getvalue()
    assert "The best threshold on this reference is" in html.read_text()
    mask = tmp_path / "mask.tif"
    _write(mask, (prob >= 0.1).astype(np.uint8))
    run_evaluate(
        {"INPUT": str(mask), "REFERENCE": str(tmp_path / "ref.tif"), "OUTPUT": str(out)}, _ctx()
    )
    assert "best_threshold" not in json.loads(out.read_text())  # a 0/1 map has no curve
