"""Robust mapping recipe (issue 16): calibration, threshold shrinkage, photometric
augmentation, loss-based selection, the shipped model and the LORO benchmark helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import BIJIE, job_context, log_messages

from slidewise.bench.mapping_accuracy import parse_region, parse_variant, summarise, write_scaled
from slidewise.engine.core.errors import InputError
from slidewise.engine.imagery.augment import gaussian_blur, random_photometric
from slidewise.engine.imagery.segmodels import (
    SegModelConfig,
    build_model,
    load_mapping_model,
    main_logits,
)
from slidewise.engine.mapping import shipped
from slidewise.engine.mapping.calibration import (
    expected_calibration_error,
    fit_platt,
    fold_platt,
)
from slidewise.engine.mapping.train import run_train
from slidewise.engine.mapping.validation import (
    BINS,
    CALIBRATED_GRID,
    EpochSelection,
    ValidationPass,
    choose_threshold,
    threshold_prior,
)

TINY = {"widths": [8, 16, 32], "residual": False, "deep_supervision": False}


def test_platt_fit_undoes_overconfidence() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20_000, generator=g) * 2
    y = (torch.rand(20_000, generator=g) < torch.sigmoid(z)).float()
    raw = 4 * z + 2  # an overconfident, landslide-biased model
    cal = fit_platt(raw, y)
    assert cal is not None
    assert cal.a == pytest.approx(0.25, abs=0.03) and cal.b == pytest.approx(-0.5, abs=0.08)
    assert cal.ece_before > 0.1 and cal.ece_after < cal.ece_before / 4
    assert cal.brier_after < cal.brier_before
    assert expected_calibration_error(torch.sigmoid(z), y) < 0.02
    # Too few pixels of a class: nothing to fit.
    assert fit_platt(raw[:1000], torch.zeros(1000)) is None


@pytest.mark.parametrize(
    "config",
    [
        SegModelConfig("resunet", in_channels=3, extra=TINY),
        SegModelConfig("unet", "resnet18", in_channels=3, encoder_depth=3),
    ],
)
def test_platt_is_folded_into_the_output_layer(config: SegModelConfig) -> None:
    model = build_model(config).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = main_logits(model(x))
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(5000, generator=g) < 0.3).float()
    cal = fit_platt(torch.randn(5000, generator=g) * 3, y)
    assert cal is not None and fold_platt(model, cal)
    with torch.no_grad():
        after = main_logits(model(x))
    assert torch.allclose(after, cal.a * before + cal.b, atol=1e-4)


def _pass(pos: dict[int, int], neg: dict[int, int]) -> ValidationPass:
    p, n = np.zeros(BINS), np.zeros(BINS)
    for k, v in pos.items():
        p[k] = v
    for k, v in neg.items():
        n[k] = v
    return ValidationPass(0.0, p, n)


def test_tuned_threshold_is_shrunk_toward_half_on_few_chips() -> None:
    # Landslides score 0.92+, background up to 0.89: F1 peaks at 0.90.
    vp = _pass({92: 1000, 60: 10}, {89: 1000, 10: 5000})
    assert choose_threshold(vp, "auto", "f1") == pytest.approx(0.9)
    few = choose_threshold(vp, "auto", "f1", n_chips=4)
    many = choose_threshold(vp, "auto", "f1", n_chips=400)
    assert few == pytest.approx(0.5 + 0.4 * 4 / 44, abs=0.006)
    assert 0.85 < many < 0.9
    assert choose_threshold(vp, "0.3", "f1", n_chips=4) == pytest.approx(0.3)
    assert choose_threshold(vp, "auto", "loss", n_chips=None) == pytest.approx(0.9)


def _rare_calibrated_pass() -> ValidationPass:
    """Calibrated probabilities of a rare class: label ~ Bernoulli(p), about 7 % landslides."""
    rng = np.random.default_rng(0)
    prob = rng.beta(0.5, 7.0, 200_000)
    slide = rng.random(prob.size) < prob
    bins = np.minimum((prob * BINS).astype(int), BINS - 1)
    pos = np.bincount(bins[slide], minlength=BINS).astype(float)
    neg = np.bincount(bins[~slide], minlength=BINS).astype(float)
    return ValidationPass(0.0, pos, neg)


def test_calibrated_threshold_shrinks_toward_half_the_best_f1_not_half() -> None:
    # The demo's failure: calibrated probabilities of a rare class, a handful of
    # validation chips; shrinking toward 0.5 cut at 0.45+ and kept 7 % of the landslides.
    vp = _rare_calibrated_pass()
    best_f1 = max(vp.confusion(t).f1 for t in CALIBRATED_GRID)
    prior = threshold_prior(vp, "f1", calibrated=True)
    assert prior == pytest.approx(best_f1 / 2)
    assert threshold_prior(vp, "iou", calibrated=True) == prior
    assert threshold_prior(vp, "mcc", calibrated=True) == 0.5
    assert threshold_prior(vp, "f1", calibrated=False) == 0.5
    few = choose_threshold(vp, "auto", "f1", n_chips=4, calibrated=True)
    assert abs(few - prior) < 0.03
    old = choose_threshold(vp, "auto", "f1", n_chips=4)  # the rule before: toward 0.5
    assert old > 0.4
    assert vp.confusion(few).f1 > vp.confusion(old).f1 + 0.15
    assert vp.confusion(few).recall > 3 * vp.confusion(old).recall
    # Many chips: the tuned threshold wins, within a few bins of the best F1.
    many = choose_threshold(vp, "auto", "f1", n_chips=4000, calibrated=True)
    assert vp.confusion(many).f1 >= best_f1 - 0.011
    assert choose_threshold(vp, "0.3", "f1", n_chips=4, calibrated=True) == pytest.approx(0.3)


def test_selection_on_loss_ignores_a_noisy_metric() -> None:
    model = torch.nn.Conv2d(1, 1, 1)
    sel = EpochSelection("loss")
    assert sel.offer({"epoch": 1, "threshold": 0.5, "f1": 0.7}, _vp_loss(0.5), True, model)
    # Higher F1 but a worse loss: not selected.
    assert not sel.offer({"epoch": 2, "threshold": 0.5, "f1": 0.9}, _vp_loss(0.6), True, model)
    assert sel.offer({"epoch": 3, "threshold": 0.5, "f1": 0.1}, _vp_loss(0.4), True, model)
    assert sel.best["epoch"] == 3


def _vp_loss(loss: float) -> ValidationPass:
    return ValidationPass(loss, np.zeros(BINS), np.zeros(BINS))


def test_photometric_augmentation() -> None:
    x = torch.randn(6, 3, 24, 24)
    a = random_photometric(x, torch.Generator().manual_seed(3))
    b = random_photometric(x, torch.Generator().manual_seed(3))
    c = random_photometric(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    # Per-image brightness/contrast: image means move by different amounts.
    shifts = (a - x).mean(dim=(1, 2, 3))
    assert shifts.std() > 0.05
    flat = torch.full((1, 3, 16, 16), 2.0)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat, atol=1e-5)


needs_bijie = pytest.mark.skipif(not BIJIE.is_dir(), reason="Bijie pairs not available")


@needs_bijie
def test_trainmapping_stores_calibration(tmp_path: Path) -> None:
    pairs = [(p, BIJIE / "masks" / p.name) for p in sorted((BIJIE / "images").glob("*.png"))]
    img, msk = write_scaled(pairs[:4], tmp_path / "small", 0.25)
    out = tmp_path / "m.safetensors"
    params = {
        "DATASET_TYPE": "pairs",
        "TRAIN_IMAGES": str(img),
        "TRAIN_MASKS": str(msk),
        "ARCHITECTURE": "resunet",
        "MODEL_OPTIONS": json.dumps(TINY),
        "CHIP_SIZE": 64,
        "CHIPS_PER_EPOCH": 16,
        "BATCH_SIZE": 8,
        "VALID_FRACTION": 0.25,
        "EPOCHS": 3,
        "LR": 0.01,
        "OUTPUT": str(out),
    }
    ctx, stream = job_context("trainmapping")
    result = run_train(params, ctx)
    cal = result.figures["calibration"]
    assert cal["method"] == "platt" and cal["ece_after"] < cal["ece_before"]
    _, meta = load_mapping_model(out)
    assert meta.extra["calibration"] == cal
    assert meta.provenance["recipe"]["photometric"] is True
    assert any("ECE" in m for m in log_messages(stream))


def test_shipped_model_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    msgs: list[str] = []
    assert shipped.resolve_model("given.safetensors", msgs.append) == "given.safetensors"
    assert not msgs
    monkeypatch.setattr(shipped, "shipped_model_path", lambda: tmp_path / "absent.safetensors")
    with pytest.raises(InputError, match="Train mapping model"):
        shipped.resolve_model("", msgs.append)


def test_shipped_model_is_installed_small_with_its_card() -> None:
    path = shipped.shipped_model_path()
    assert path.is_file(), f"the shipped model {path} is missing"
    assert path.stat().st_size < shipped.MAX_BYTES
    msgs: list[str] = []
    assert shipped.resolve_model("", msgs.append) == str(path)
    assert "shipped landslide model" in msgs[0] and "leave-one-region-out F1" in msgs[0]
    model, meta = load_mapping_model(path)
    assert meta.extra["weights_dtype"] in ("float16", "float32")
    assert 0 < meta.extra["threshold"] < 1
    loro = meta.metrics["leave_one_region_out"]
    assert set(loro["folds"]) == {"sichuan->bijie", "bijie->sichuan"}
    assert next(model.parameters()).dtype == torch.float32


def test_write_shipped_model_half_keeps_predictions(tmp_path: Path) -> None:
    from slidewise.engine.imagery.segmodels import save_mapping_model

    config = SegModelConfig("resunet", in_channels=3, extra=TINY)
    model = build_model(config).eval()
    src = tmp_path / "src.safetensors"
    save_mapping_model(src, model, config, ["red", "green", "blue"], {})
    dst = tmp_path / "dst.safetensors"
    card = {"metrics": {"leave_one_region_out": {"f1": 0.5}}}
    assert shipped.write_shipped_model(src, dst, card, half=True) < src.stat().st_size
    assert shipped.state_dtype(dst) == torch.float16
    half, meta = load_mapping_model(dst)
    assert meta.metrics["leave_one_region_out"] == {"f1": 0.5}
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(torch.sigmoid(half(x)), torch.sigmoid(model(x)), atol=2e-3)


def test_loro_benchmark_arguments() -> None:
    region = parse_region("sichuan=/a/img,/a/msk,255:0:255")
    assert (region.name, region.images, region.masks, region.color) == (
        "sichuan",
        "/a/img",
        "/a/msk",
        (255, 0, 255),
    )
    assert parse_region("b=/i,/m").color is None
    assert parse_variant("v=default;photometric=false;POS_WEIGHT=none") == (
        "v",
        "default",
        {"PHOTOMETRIC": "false", "POS_WEIGHT": "none"},
    )
    s = summarise(
        {
            "0": dict.fromkeys(("f1", "precision", "recall", "iou"), 0.4),
            "1": dict.fromkeys(("f1", "precision", "recall", "iou"), 0.6),
        }
    )
    assert s["mean"]["f1"] == pytest.approx(0.5)
    assert s["std"]["f1"] == pytest.approx(np.std([0.4, 0.6], ddof=1))
