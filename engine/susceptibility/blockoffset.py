"""Per-block correction of a model's logit, with a prior learned across blocks.

A global model scores every block on the same scale, but blocks differ in how
common landslides are (rainfall, lithology, the inventory's completeness). A
block's *offset* ``c_b`` shifts the model's logit there:
``p = sigmoid(z(x) + c_b)``. It is the maximum a posteriori estimate from the
block's few labelled samples under a Gaussian prior ``c_b ~ N(0, tau^2)``
(:func:`fit_offset`; Newton steps on the penalised log-likelihood), so a block
with five samples moves a little and one with five hundred follows its data.

The prior's spread ``tau^2`` is learned from the training blocks only
(:func:`learn_offset_prior`): an inner leave-blocks-out split scores each
training block with a model that did not see it, the offset that fits each
block best is measured, and ``tau^2`` is their variance less the sampling noise
(the method of moments of an empirical-Bayes random-effects model). This is
the meta-learned part: how far a new block should trust its own few samples.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Smallest prior variance (a precision of 1000: offsets all but fixed at 0).
MIN_TAU2 = 1e-3
#: Clip of probabilities before taking logits.
EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities ``p`` (clipped to ``[EPS, 1 - EPS]``)."""
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(q) - np.log1p(-q)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def fit_offset(
    z: np.ndarray, y: np.ndarray, precision: float, steps: int = 25
) -> tuple[float, float]:
    """MAP offset of logits ``z`` for labels ``y`` under a N(0, 1/precision) prior.

    Returns:
        ``(offset, variance)``: the estimate and its Laplace variance (the
        inverse curvature of the penalised log-likelihood).
    """
    c, curvature = 0.0, float(precision)
    for _ in range(steps):
        p = sigmoid(z + c)
        curvature = float(np.sum(p * (1.0 - p))) + precision
        step = (float(np.sum(y - p)) - precision * c) / max(curvature, 1e-12)
        c += float(np.clip(step, -2.0, 2.0))
        if abs(step) < 1e-6:
            break
    return c, 1.0 / max(curvature, 1e-12)


def block_offsets(
    z: np.ndarray, y: np.ndarray, blocks: np.ndarray, precision: float
) -> dict[int, float]:
    """MAP offset of every block from its samples' logits ``z`` and labels ``y``."""
    return {
        int(b): fit_offset(z[blocks == b], y[blocks == b], precision)[0] for b in np.unique(blocks)
    }


def apply_offsets(z: np.ndarray, blocks: np.ndarray, offsets: dict[int, float]) -> np.ndarray:
    """Logits shifted by their block's offset (0 for blocks without one)."""
    shift = np.array([offsets.get(int(b), 0.0) for b in blocks], dtype=np.float64)
    return np.asarray(z, dtype=np.float64) + shift


def learn_offset_prior(
    x: np.ndarray,
    y: np.ndarray,
    blocks: np.ndarray,
    fit: Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]],
    n_folds: int = 3,
    seed: int = 0,
) -> float:
    """Prior precision ``1 / tau^2`` of block offsets, from the training blocks only.

    Args:
        x: Features of the training samples.
        y: Their labels.
        blocks: Their block IDs.
        fit: Fits a model on ``(x, y)`` and returns its logit function.
        n_folds: Inner leave-blocks-out folds.
        seed: Seed of the fold split.

    Returns:
        The precision (``1 / MIN_TAU2`` when the blocks do not differ).
    """
    from slidewise.engine.susceptibility.spatialcv import block_folds

    ids = np.unique(blocks)
    if ids.size < max(n_folds, 2):
        return 1.0 / MIN_TAU2
    estimates, variances = [], []
    for train, test in block_folds(blocks, n_folds, seed):
        if np.unique(y[train]).size < 2:
            continue
        z = fit(x[train], y[train])(x[test])
        for b in np.unique(blocks[test]):
            sel = blocks[test] == b
            if sel.sum() < 2:
                continue
            c, v = fit_offset(z[sel], y[test][sel], precision=1e-2)
            estimates.append(c)
            variances.append(v)
    if len(estimates) < 2:
        return 1.0 / MIN_TAU2
    tau2 = float(np.var(estimates) - np.mean(variances))
    return 1.0 / max(tau2, MIN_TAU2)
