"""THRESHOLD_RULE expected_f1: the threshold chosen on the raster being mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from engine_helpers import job_context, log_messages, write_geotiff

from slidewise.engine.imagery.scene_threshold import (
    BINS,
    ProbabilityHistogram,
    expected_f1_threshold,
)
from slidewise.engine.mapping.apply import run_map
from slidewise.engine.mapping.shipped import shipped_model_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BIJIE_IMAGE = (
    Path(__file__).resolve().parents[1] / "data" / "bijie" / "test" / "images" / "10105.png"
)


def _f1(prob: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    pred = prob >= threshold
    tp = np.count_nonzero(pred & truth)
    return 2 * tp / max(np.count_nonzero(pred) + np.count_nonzero(truth), 1)


def _histogram(prob: np.ndarray) -> np.ndarray:
    histogram = ProbabilityHistogram()
    histogram.add(prob)
    return histogram.counts


def test_the_rule_finds_the_best_f1_of_calibrated_probabilities() -> None:
    """Labels drawn from the probabilities: the chosen threshold's F1 is all but the best."""
    rng = np.random.default_rng(0)
    prob = rng.beta(0.6, 3.0, 400_000)
    truth = rng.random(prob.size) < prob
    chosen = expected_f1_threshold(_histogram(prob))
    assert chosen is not None
    best = max(_f1(prob, truth, t) for t in np.arange(0.01, 1.0, 0.01))
    assert _f1(prob, truth, chosen.threshold) > best - 0.005
    assert chosen.expected_f1 == pytest.approx(best, abs=0.01)
    assert chosen.expected_fraction == pytest.approx(truth.mean(), abs=0.005)
    # A less sure model (probabilities halved) needs a lower threshold.
    lower = expected_f1_threshold(_histogram(prob / 2))
    assert lower is not None and lower.threshold < chosen.threshold - 0.05


def test_empty_and_nodata_histograms() -> None:
    assert expected_f1_threshold(np.zeros(BINS)) is None
    assert expected_f1_threshold(_histogram(np.zeros(10))) is None
    counts = _histogram(np.array([np.nan, 1.0, 0.0, 0.25]))
    assert counts.sum() == 3 and counts[-1] == 1 and counts[250] == 1


@pytest.fixture(scope="module")
def bijie_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The held-out Bijie demo image 10105 (real data), as a GeoTIFF."""
    from PIL import Image

    rgb = np.asarray(Image.open(BIJIE_IMAGE).convert("RGB")).transpose(2, 0, 1)
    return write_geotiff(tmp_path_factory.mktemp("bijie") / "10105.tif", rgb)


def _uncalibrated_copy(folder: Path) -> str:
    """The shipped model's file without its calibration record (as an older model)."""
    from slidewise.engine.imagery.segmodels import (
        SegModelConfig,
        load_mapping_model,
        save_mapping_model,
    )

    model, meta = load_mapping_model(shipped_model_path())
    extra = {k: v for k, v in meta.extra.items() if k != "calibration"}
    path = folder / "uncalibrated.safetensors"
    config = SegModelConfig(**meta.config)
    save_mapping_model(path, model, config, meta.bands, meta.normalisation, extra=extra)
    return str(path)


def test_map_landslides_thresholds_each_raster_by_its_expected_f1(bijie_image, tmp_path) -> None:
    """Shipped model on a real image: the mask is the probability cut at the chosen threshold."""
    out = tmp_path / "out"
    out.mkdir()
    params = {"INPUT": bijie_image, "OUTPUT_PROBABILITY": str(out / "p.tif"), "BACKEND": "torch"}
    ctx, stream = job_context("maplandslides")
    result = run_map(params | {"OUTPUT_MASK": str(out / "m.tif")}, ctx)
    with rasterio.open(out / "p.tif") as p, rasterio.open(out / "m.tif") as m:
        prob, mask = p.read(1), m.read(1)
    chosen = expected_f1_threshold(_histogram(prob))
    assert chosen is not None
    figures = result.figures
    assert figures["threshold_rule"] == "expected_f1" and figures["stored_threshold"] == 0.28
    assert figures["threshold"] == chosen.threshold != 0.28
    np.testing.assert_array_equal(mask, (prob >= chosen.threshold).astype(np.uint8))
    assert any("best expected F1" in m for m in log_messages(stream))
    assert not any(p.name.startswith(".slidewise-") for p in out.iterdir())  # staging removed

    stored = run_map(
        params | {"OUTPUT_MASK": str(out / "s.tif"), "THRESHOLD_RULE": "stored"},
        job_context("maplandslides")[0],
    )
    assert stored.figures["threshold"] == 0.28 and "threshold_rule" not in stored.figures


def test_models_without_calibration_keep_their_stored_threshold(bijie_image, tmp_path) -> None:
    model = _uncalibrated_copy(tmp_path)
    ctx, stream = job_context("maplandslides")
    params = {"INPUT": bijie_image, "MODEL": model, "OUTPUT_MASK": str(tmp_path / "m.tif")}
    result = run_map(params | {"BACKEND": "torch"}, ctx)
    assert result.figures["threshold"] == 0.28
    assert any("has no calibration" in m for m in log_messages(stream))


def test_evaluate_mapping_scores_the_map_at_its_mask_threshold(bijie_image, tmp_path) -> None:
    """No THRESHOLD: Evaluate mapping reads the threshold the mask was cut at from the manifest."""
    from PIL import Image

    from slidewise.contract.partials import manifest_path
    from slidewise.engine.core.manifest import build_manifest, write_manifest
    from slidewise.engine.mapping.evaluate import run_evaluate

    prob_path = str(tmp_path / "p.tif")
    map_params = {"INPUT": bijie_image, "OUTPUT_PROBABILITY": prob_path, "BACKEND": "torch"}
    mapped = run_map(map_params, job_context("maplandslides")[0])
    record = build_manifest(  # as the worker writes it after the job
        "slidewise:maplandslides", map_params, [], mapped.outputs, "cpu", 0, 0.0, mapped.figures
    )
    write_manifest(manifest_path(prob_path), record)
    mask = np.asarray(Image.open(BIJIE_IMAGE.parents[1] / "masks" / "10105.png").convert("L"))
    reference = write_geotiff(tmp_path / "ref.tif", (mask[None] > 127).astype(np.uint8))
    params = {"INPUT": prob_path, "REFERENCE": reference, "OUTPUT": str(tmp_path / "e.json")}
    ctx, stream = job_context("evaluatemapping")
    figures = run_evaluate(params, ctx).figures
    assert figures["threshold"] == mapped.figures["threshold"] != 0.5
    assert any("its run manifest" in m for m in log_messages(stream))
    fixed = run_evaluate(params | {"THRESHOLD": 0.5}, job_context("evaluatemapping")[0]).figures
    assert fixed["threshold"] == 0.5 and fixed["f1"] != figures["f1"]


def test_default_threshold_is_the_rule_only_for_calibrated_models() -> None:
    """The benches cut each image where Map landslides would: rule if calibrated, else stored."""
    from slidewise.engine.imagery.scene_threshold import default_threshold, raster_threshold

    prob = np.random.default_rng(0).beta(0.6, 3.0, (64, 64))
    assert default_threshold(prob, {"threshold": 0.9}) == 0.9
    assert default_threshold(prob, {}) == 0.5
    calibrated = {"threshold": 0.9, "calibration": {"method": "platt"}}
    assert default_threshold(prob, calibrated) == raster_threshold(prob) != 0.9
    assert default_threshold(np.zeros((4, 4)), calibrated) == 0.9  # nothing to choose from


def test_detection_says_why_it_keeps_the_stored_threshold() -> None:
    """Detect landslides logs why it cuts at the stored threshold, as Map landslides does."""
    from slidewise.engine.detection.apply import segmentation_threshold

    calibrated = {"threshold": 0.9, "calibration": {"method": "platt"}}
    lines: list[str] = []
    assert segmentation_threshold(np.zeros((4, 4)), calibrated, "expected_f1", lines.append) == 0.9
    assert any("No probability above 0" in line for line in lines)
    lines.clear()
    assert segmentation_threshold(np.ones((4, 4)), calibrated, "stored", lines.append) == 0.9
    assert not lines


def test_detect_landslides_cuts_a_mapping_model_where_map_landslides_would(
    bijie_image, tmp_path
) -> None:
    """Source segmentation: the shipped model's probability is cut by THRESHOLD_RULE too."""
    from slidewise.engine.detection.apply import run_detect

    prob_path = str(tmp_path / "p.tif")
    run_map(
        {"INPUT": bijie_image, "OUTPUT_PROBABILITY": prob_path, "BACKEND": "torch"},
        job_context("maplandslides")[0],
    )
    with rasterio.open(prob_path) as src:
        chosen = expected_f1_threshold(_histogram(src.read(1)))
    assert chosen is not None and chosen.threshold != 0.28
    params = {
        "SOURCE": "segmentation",
        "INPUT": bijie_image,
        "MODEL": shipped_model_path(),
        "BACKEND": "torch",
    }
    ctx, stream = job_context("detectlandslides")
    found = run_detect(params | {"OUTPUT": str(tmp_path / "d.gpkg")}, ctx)
    assert found.figures["threshold"] == pytest.approx(chosen.threshold, abs=2 / BINS)
    assert any("best expected F1" in m for m in log_messages(stream))
    stored = run_detect(
        params | {"OUTPUT": str(tmp_path / "s.gpkg"), "THRESHOLD_RULE": "stored"},
        job_context("detectlandslides")[0],
    )
    assert stored.figures["threshold"] == 0.28
    uncalibrated, stream = job_context("detectlandslides")
    plain = run_detect(
        params | {"MODEL": _uncalibrated_copy(tmp_path), "OUTPUT": str(tmp_path / "u.gpkg")},
        uncalibrated,
    )
    assert plain.figures["threshold"] == 0.28
    assert any("has no calibration" in m for m in log_messages(stream))
