"""THRESHOLD_RULE expected_f1: the threshold chosen on the raster being mapped."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from engine_helpers import job_context
from rasterio.transform import from_origin

from slidewise.engine.mapping.apply import run_map
from slidewise.engine.mapping.scene_threshold import (
    BINS,
    ProbabilityHistogram,
    expected_f1_threshold,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CALIBRATION = {"method": "platt", "a": 1.0, "b": 0.0, "pixels": 1000}


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


def _raster(path: Path) -> str:
    rng = np.random.default_rng(1)
    image = rng.normal(0.1, 0.05, (3, 96, 96)).astype(np.float32)
    profile = {
        "driver": "GTiff",
        "width": 96,
        "height": 96,
        "count": 3,
        "dtype": "float32",
        "crs": "EPSG:32646",
        "transform": from_origin(400000, 2500000, 10, 10),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    return str(path)


def _model(folder: Path, extra: dict) -> str:
    import torch

    from slidewise.engine.imagery.segmodels import SegModelConfig, build_model, save_mapping_model

    torch.manual_seed(0)
    config = SegModelConfig(architecture="linknet", encoder="mobilenet_v2", in_channels=3)
    path = folder / "model.safetensors"
    norm = {"kind": "fit", "mean": [0.1] * 3, "std": [0.05] * 3}
    save_mapping_model(
        path, build_model(config).eval(), config, ["r", "g", "b"], norm, tile_size=64, extra=extra
    )
    return str(path)


def _logs(stream: io.StringIO) -> list[str]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [m["message"] for m in lines if m.get("type") == "log"]


def test_map_landslides_thresholds_each_raster_by_its_expected_f1(tmp_path) -> None:
    """The mask is the staged probability cut at the chosen threshold, not the stored one."""
    image = _raster(tmp_path / "image.tif")
    model = _model(tmp_path, {"threshold": 0.99, "calibration": CALIBRATION})
    out = tmp_path / "out"
    out.mkdir()
    params = {"INPUT": image, "MODEL": model, "OUTPUT_PROBABILITY": str(out / "p.tif")}
    ctx, stream = job_context("maplandslides")
    result = run_map(params | {"OUTPUT_MASK": str(out / "m.tif")}, ctx)
    with rasterio.open(out / "p.tif") as p, rasterio.open(out / "m.tif") as m:
        prob, mask = p.read(1), m.read(1)
    chosen = expected_f1_threshold(_histogram(prob))
    assert chosen is not None
    assert result.figures["threshold_rule"] == "expected_f1"
    assert result.figures["threshold"] == chosen.threshold != 0.99
    assert result.figures["stored_threshold"] == 0.99
    np.testing.assert_array_equal(mask, (prob >= chosen.threshold).astype(np.uint8))
    assert any("best expected F1" in m for m in _logs(stream))
    assert not any(p.name.startswith(".slidewise-") for p in out.iterdir())  # staging removed

    stored = run_map(
        params | {"OUTPUT_MASK": str(out / "s.tif"), "THRESHOLD_RULE": "stored"},
        job_context("maplandslides")[0],
    )
    assert stored.figures["threshold"] == 0.99 and "threshold_rule" not in stored.figures


def test_models_without_calibration_keep_their_stored_threshold(tmp_path) -> None:
    image = _raster(tmp_path / "image.tif")
    model = _model(tmp_path, {"threshold": 0.7})
    ctx, stream = job_context("maplandslides")
    result = run_map({"INPUT": image, "MODEL": model, "OUTPUT_MASK": str(tmp_path / "m.tif")}, ctx)
    assert result.figures["threshold"] == 0.7
    assert any("has no calibration" in m for m in _logs(stream))
