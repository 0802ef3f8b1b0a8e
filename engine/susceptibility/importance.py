"""Factor importance of a susceptibility model: SHAP values, globally and per block.

Which factors drive the model, and do they drive it the same way everywhere?
SHAP values (as in meta_LSM's analysis) split each sample's predicted
probability of landslide into one contribution per factor:

* ``lr``: exact linear SHAP values (:class:`shap.LinearExplainer` on the
  weights, in log-odds);
* ``rf``: exact tree SHAP values (:class:`shap.TreeExplainer`, interventional,
  on the stored tree arrays: they add up to the forest's probability);
* ``meta``, ``mlp``, ``fr``: :class:`shap.KernelExplainer` on the model's
  probability with a small background of training samples (exact when the
  coalitions of the features fit in its budget, :data:`KERNEL_COALITIONS`;
  sampled beyond). A ``meta`` model explains each sample with its own block's
  adapted model, so the per-block importance shows how adaptation re-weights
  the factors. (The permutation explainer gives the same values but compiles
  numba code for half a minute in every new worker process.)

The one-hot columns of a categorical factor are summed into that factor. The
importance of a factor is the mean absolute SHAP value over the explained
samples (all of them, or those of one block), and its share of the total.
At most ``max_samples`` samples are explained (a random subset), so the cost
is bounded whatever the training set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from slidewise.engine.susceptibility.models import FittedModel

#: Samples explained by default (a random subset beyond).
MAX_SAMPLES = 200
#: Background samples of the tree explainer.
BACKGROUND = 50
#: Background samples of the kernel explainer (its cost grows with it).
KERNEL_BACKGROUND = 20
#: Coalitions the kernel explainer evaluates per sample at most (2^d when fewer).
KERNEL_COALITIONS = 256
#: Blocks listed in the report (largest first).
LISTED_BLOCKS = 30


@dataclass
class Importance:
    """SHAP values of the explained samples, per factor.

    Attributes:
        method: How they were computed (``linear-shap`` or ``permutation-shap``).
        factors: Factor names.
        values: SHAP values (n, factors).
        blocks: Block ID of each explained sample.
    """

    method: str
    factors: list[str]
    values: np.ndarray
    blocks: np.ndarray

    def global_importance(self) -> dict[str, float]:
        """Mean absolute SHAP value per factor over all explained samples."""
        mean = np.abs(self.values).mean(axis=0) if len(self.values) else np.zeros(len(self.factors))
        return {f: float(v) for f, v in zip(self.factors, mean, strict=True)}

    def block_importance(self) -> dict[str, dict[str, float]]:
        """Mean absolute SHAP value per factor in each block (block ID as text)."""
        out = {}
        for bid in np.unique(self.blocks):
            mean = np.abs(self.values[self.blocks == bid]).mean(axis=0)
            out[str(int(bid))] = {f: float(v) for f, v in zip(self.factors, mean, strict=True)}
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe figures: method, global and per-block importance, ranking."""
        glob = self.global_importance()
        total = sum(glob.values()) or 1.0
        return {
            "method": self.method,
            "samples": len(self.values),
            "global": glob,
            "share": {f: v / total for f, v in glob.items()},
            "ranking": sorted(glob, key=lambda f: -glob[f]),
            "blocks": self.block_importance() if np.unique(self.blocks).size > 1 else {},
        }


def explained_subset(n: int, max_samples: int, seed: int) -> np.ndarray:
    """Indices of at most ``max_samples`` of ``n`` samples (all when fewer), sorted."""
    if n <= max_samples:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))


def group_columns(values: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """Sum the SHAP values of each factor's columns (one-hot groups) -> (n, factors)."""
    return np.stack([values[:, list(g)].sum(axis=1) for g in groups], axis=1)


def factor_importance(
    fitted: FittedModel,
    x: np.ndarray,
    blocks: np.ndarray,
    factors: Sequence[str],
    groups: Sequence[Sequence[int]],
    max_samples: int = MAX_SAMPLES,
    seed: int = 0,
) -> Importance:
    """SHAP values of ``fitted`` on (a subset of) the encoded training samples.

    Args:
        fitted: The model.
        x: Encoded features (n, d) (:class:`~slidewise.engine.geo.samples.FeatureEncoder`).
        blocks: Block ID per sample (``meta`` explains each with its block's model).
        factors: Factor names, one per group.
        groups: Feature columns per factor.
        max_samples: Samples explained at most.
        seed: Seed of the subset and of the permutations.
    """
    import shap

    rng = np.random.default_rng(seed)
    pick = explained_subset(x.shape[0], max_samples, seed)
    xe, be = np.asarray(x, dtype=np.float64)[pick], np.asarray(blocks)[pick]
    background = x[rng.choice(x.shape[0], min(BACKGROUND, x.shape[0]), replace=False)]
    if fitted.method == "lr":
        assert fitted.classical is not None
        arrays = fitted.classical.arrays
        coef = np.asarray(arrays["coef"], dtype=np.float64).reshape(-1)
        intercept = float(np.asarray(arrays["intercept"]).reshape(-1)[0])
        explainer = shap.LinearExplainer((coef, intercept), shap.maskers.Independent(background))
        raw = np.asarray(explainer.shap_values(xe))
        return Importance("linear-shap", list(factors), group_columns(raw, groups), be)
    if fitted.method == "rf":
        assert fitted.classical is not None
        explainer = shap.TreeExplainer(
            forest_model(fitted.classical.arrays),
            data=background,
            feature_perturbation="interventional",
            model_output="raw",
        )
        raw = np.asarray(explainer.shap_values(xe.astype(np.float32)))
        return Importance("tree-shap", list(factors), group_columns(raw, groups), be)
    raw = np.zeros_like(xe)
    ids = be if fitted.method == "meta" else np.zeros(be.size, dtype=np.int64)
    d = x.shape[1]
    budget = 2**d if d < 8 else min(2**d, 2 * d + KERNEL_COALITIONS)
    for bid in np.unique(ids):
        sel = ids == bid
        # (Beyond 2^d coalitions it samples with NumPy's global generator, which
        # the job seeds with the run seed.)
        explainer = shap.KernelExplainer(
            block_function(fitted, int(bid)), background[:KERNEL_BACKGROUND]
        )
        raw[sel] = explainer.shap_values(xe[sel], nsamples=budget, silent=True, l1_reg=False)
    return Importance("kernel-shap", list(factors), group_columns(raw, groups), be)


def block_function(fitted: FittedModel, block: int) -> Callable[[np.ndarray], np.ndarray]:
    """The probability of landslide as a function of features alone, in one block."""

    def f(x: np.ndarray) -> np.ndarray:
        return fitted.predict(np.asarray(x), np.full(len(x), block, dtype=np.int64))

    return f


def forest_model(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The stored random forest as a :class:`shap.TreeExplainer` model dictionary.

    Each tree's leaf values are divided by the tree count, so the ensemble's sum
    is the forest's mean probability of landslide.
    """
    offsets = arrays["offsets"]
    n_trees = len(offsets) - 1
    trees = []
    for t in range(n_trees):
        s, e = int(offsets[t]), int(offsets[t + 1])
        left = np.where(arrays["children_left"][s:e] >= 0, arrays["children_left"][s:e] - s, -1)
        right = np.where(arrays["children_right"][s:e] >= 0, arrays["children_right"][s:e] - s, -1)
        trees.append(
            {
                "children_left": left,
                "children_right": right,
                "children_default": left.copy(),
                "features": np.where(left >= 0, arrays["feature"][s:e], -2),
                "thresholds": arrays["threshold"][s:e].astype(np.float64),
                "values": arrays["value"][s:e].reshape(-1, 1) / n_trees,
                "node_sample_weight": np.ones(e - s),
            }
        )
    return {
        "trees": trees,
        "base_offset": 0.0,
        "input_dtype": np.float32,
        "internal_dtype": np.float64,
        "tree_output": "probability",
    }
