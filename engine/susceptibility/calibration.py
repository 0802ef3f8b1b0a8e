"""Calibrated susceptibility probabilities, fitted on out-of-block predictions.

A model's raw probability is over-confident where it was fitted: a block model
adapted to a handful of samples says 0.001 or 0.999 for most of its block.
Training therefore predicts every labelled sample *out of block*
(:func:`out_of_block_predictions`: the model is trained without the sample's
block, then adapted to half of that block's samples and scored on the other
half) and fits a calibrator on these honest predictions
(:func:`fit_calibrator`):

- ``platt``: Platt scaling (Platt 1999), a logistic regression of the label on
  the logit of the model's probability, two numbers, smooth and monotone. The
  default: it keeps the map's ranking and a continuous probability that still
  separates the many pixels near 0 (so quantile classes do not collapse), and
  on the Ecuador inventory it had the lowest cross-fitted Brier score
  (``docs/benchmarks.md``);
- ``isotonic``: a monotone step function (Zadrozny and Elkan 2002), needs more
  samples;
- ``none``: keep the raw probability.

The calibrator is stored in the model file (arrays in safetensors, method and
figures in the JSON config) and :func:`calibrator_from_model` applies it at
prediction. Probabilities are calibrated to the *sample* prevalence of training
(landslides vs non-landslides as sampled), the usual convention of
susceptibility maps. Brier score and expected calibration error (ECE) before
and after are cross-fitted: the calibrator that scores a fold never saw it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slidewise.contract.specs.trainsusceptibility import CALIBRATIONS
from slidewise.engine.core.errors import InputError
from slidewise.engine.geo.samples import FeatureEncoder
from slidewise.engine.susceptibility.crossval import LabelledSamples
from slidewise.engine.susceptibility.models import (
    FittedModel,
    TrainSettings,
    adapt_blocks,
    fit_model,
)

#: Bins of the expected calibration error and the reliability diagram.
ECE_BINS = 10
#: Leave-blocks-out folds of the out-of-block predictions (at most the block count):
#: each fold's model learns from two thirds of the blocks.
CALIBRATION_FOLDS = 3
EPS = 1e-6


@dataclass
class Calibrator:
    """A monotone map from a model's probability to a calibrated probability.

    Attributes:
        method: ``platt``, ``isotonic`` or ``none``.
        arrays: ``platt``: ``coef`` ``[a, b]`` of ``sigmoid(a logit(p) + b)``;
            ``isotonic``: ``x`` and ``y``, the knots of the step function.
    """

    method: str = "none"
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``p`` (any shape; NaN stays NaN)."""
        p = np.asarray(p, dtype=np.float64)
        if self.method == "platt":
            a, b = (float(v) for v in self.arrays["coef"])
            q = np.clip(p, EPS, 1 - EPS)
            return 1.0 / (1.0 + np.exp(-(a * np.log(q / (1 - q)) + b)))
        if self.method == "isotonic":
            out = np.interp(p, self.arrays["x"], self.arrays["y"])
            return np.where(np.isfinite(p), out, np.nan)
        return p

    def tensors(self) -> dict[str, Any]:
        """Arrays named ``calibration.<method>.<name>`` for the model file."""
        import torch

        return {
            f"calibration.{self.method}.{k}": torch.from_numpy(np.ascontiguousarray(v))
            for k, v in self.arrays.items()
        }


def fit_calibrator(y: np.ndarray, p: np.ndarray, method: str) -> Calibrator:
    """Fit a calibrator of probabilities ``p`` to labels ``y`` (1 = landslide).

    Raises:
        InputError: unknown method, or the labels hold one class only.
    """
    if method not in CALIBRATIONS:
        raise InputError(f"Unknown calibration '{method}': use one of {', '.join(CALIBRATIONS)}.")
    y = np.asarray(y, dtype=np.float64)
    if method == "none":
        return Calibrator()
    if np.unique(y).size < 2:
        raise InputError(
            "The out-of-block predictions hold one class only: there is nothing to calibrate "
            "on. Add landslides and non-landslides, or set CALIBRATION=none."
        )
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e4).fit(np.log(q / (1 - q))[:, None], y)
        coef = np.array([lr.coef_[0, 0], lr.intercept_[0]], dtype=np.float64)
        return Calibrator("platt", {"coef": coef})
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(q, y)
    return Calibrator(
        "isotonic",
        {
            "x": np.asarray(iso.X_thresholds_, dtype=np.float64),
            "y": np.asarray(iso.y_thresholds_, dtype=np.float64),
        },
    )


def calibrator_from_model(tensors: dict[str, Any], config: dict[str, Any]) -> Calibrator:
    """The calibrator stored in a model file (``none`` for models trained without one)."""
    method = str(config.get("calibration", {}).get("method", "none"))
    prefix = f"calibration.{method}."
    arrays = {k[len(prefix) :]: v.numpy() for k, v in tensors.items() if k.startswith(prefix)}
    if method == "none" or not arrays:
        return Calibrator()
    return Calibrator(method, arrays)


def brier_score(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared difference of probability and label."""
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y)) ** 2))


def reliability(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per equal-width probability bin: mean probability, landslide share, count."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=bins) / count
        share = np.bincount(idx, weights=y, minlength=bins) / count
    return {"mean_p": mean_p.tolist(), "share": share.tolist(), "count": count.tolist()}


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: bin-count weighted mean of |landslide share - mean probability| (equal bins)."""
    rel = reliability(y, p, bins)
    count = np.asarray(rel["count"])
    gap = np.abs(np.asarray(rel["share"]) - np.asarray(rel["mean_p"]))
    ok = count > 0
    return float(np.sum(gap[ok] * count[ok]) / max(1.0, count.sum()))


def out_of_block_predictions(
    data: LabelledSamples, settings: TrainSettings, n_folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A probability for every sample from a model that was not trained on its block.

    Leave-blocks-out folds (:func:`~.spatialcv.block_folds`): the model is fitted
    on the other folds' blocks; ``meta`` is then adapted to each held-out block
    with one random half of its samples and scores the other half, and the
    halves swap, so every sample is scored once (global methods score the
    held-out blocks directly).

    Returns:
        ``(fold of each sample, probability of each sample)``.
    """
    from slidewise.engine.susceptibility.spatialcv import block_folds

    rng = np.random.default_rng(seed)
    encoder = FeatureEncoder.fit(data.values, data.bands, data.categorical)
    x, y, blocks = encoder.transform(data.values), data.labels, data.blocks
    p = np.full(len(y), np.nan)
    fold_of = np.full(len(y), -1, dtype=np.int64)
    n_folds = min(n_folds, np.unique(blocks).size)
    for k, (train, test) in enumerate(block_folds(blocks, n_folds, seed)):
        fold_of[test] = k
        if np.unique(y[train]).size < 2:
            continue
        fitted = fit_model(x[train], y[train], blocks[train], settings, groups=encoder.groups)
        if settings.method != "meta":
            p[test] = fitted.predict(x[test], blocks[test])
            continue
        half = split_halves(blocks[test], rng)
        for h in (0, 1):
            fit_on, score = test[half != h], test[half == h]
            adapted = FittedModel("meta", skeleton=fitted.skeleton, state=fitted.state)
            adapt_blocks(adapted, x[fit_on], y[fit_on], blocks[fit_on], settings)
            p[score] = adapted.predict(x[score], blocks[score])
    return fold_of, p


def split_halves(blocks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0/1 per sample: a random half of every block's samples each."""
    half = np.zeros(len(blocks), dtype=np.int64)
    for bid in np.unique(blocks):
        members = rng.permutation(np.flatnonzero(blocks == bid))
        half[members[1::2]] = 1
    return half


def cross_fitted(y: np.ndarray, p: np.ndarray, fold_of: np.ndarray, method: str) -> np.ndarray:
    """Calibrated probabilities, each fold's from a calibrator fitted on the other folds."""
    out = np.asarray(p, dtype=np.float64).copy()
    for k in np.unique(fold_of):
        rest = fold_of != k
        if np.unique(y[rest]).size < 2:
            continue
        out[fold_of == k] = fit_calibrator(y[rest], p[rest], method).apply(p[fold_of == k])
    return out


def calibration_figures(y: np.ndarray, p: np.ndarray, fold_of: np.ndarray) -> dict[str, Any]:
    """Brier score, ECE and reliability of ``p`` raw and calibrated per method.

    ``brier``, ``ece``, ``reliability`` and ``extreme_share`` are cross-fitted
    (each fold calibrated by a calibrator fitted on the other folds: what to
    expect in new blocks); ``brier_fitted`` and ``ece_fitted`` score the
    calibrator fitted on every sample, as stored in the model, on those samples.
    """
    out: dict[str, Any] = {"samples": len(y)}
    for method in CALIBRATIONS:
        q = p if method == "none" else cross_fitted(y, p, fold_of, method)
        fitted = fit_calibrator(y, p, method).apply(p)
        out[method] = {
            "brier": brier_score(y, q),
            "ece": expected_calibration_error(y, q),
            "reliability": reliability(y, q),
            "extreme_share": float(np.mean((q < 0.05) | (q > 0.95))),
            "brier_fitted": brier_score(y, fitted),
            "ece_fitted": expected_calibration_error(y, fitted),
        }
    return out
