"""Cross-validation of susceptibility models: leave-blocks-out few-shot and random k-fold.

Protocol of the leave-blocks-out evaluation (:func:`leave_blocks_out`, shared
with ``python -m slidewise.bench.susceptibility``): the blocks are split into
folds; in each fold, every held-out block gives ``shots`` random *support*
samples and its other samples are *query* samples. ``meta`` is meta-trained on
the other blocks and adapted to each held-out block with its support samples
(``hybrid`` too; its global part trains on the other blocks plus the support
samples); the global methods are trained on the other blocks plus all support
samples.
Every method is scored on the same pooled query samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from slidewise.contract.specs.trainsusceptibility import BLOCKWISE_METHODS
from slidewise.engine.core.job import Warn
from slidewise.engine.geo.samples import FeatureEncoder
from slidewise.engine.susceptibility.models import TrainSettings, fit_model, reuse_blockwise


@dataclass
class LabelledSamples:
    """Raw factor values of labelled samples and the block each lies in.

    Attributes:
        values: Raw factor values (n, factors).
        labels: 1 landslide, 0 not (n,).
        blocks: Block ID per sample (n,).
        bands: Factor names.
        categorical: Categorical factor names (one-hot encoded).
    """

    values: np.ndarray
    labels: np.ndarray
    blocks: np.ndarray
    bands: list[str]
    categorical: list[str] = field(default_factory=list)


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, F1 and Cohen's kappa (threshold 0.5) of probabilities ``p``."""
    from sklearn.metrics import cohen_kappa_score, f1_score, roc_auc_score

    y = np.asarray(y, dtype=int)
    pred = (np.asarray(p) >= 0.5).astype(int)
    auc = float(roc_auc_score(y, p)) if np.unique(y).size == 2 else float("nan")
    return {
        "auc": auc,
        "f1": float(f1_score(y, pred, zero_division=0)),
        "kappa": float(cohen_kappa_score(y, pred)) if np.unique(np.r_[y, pred]).size > 1 else 0.0,
    }


def support_and_query(
    blocks: np.ndarray, test: np.ndarray, shots: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """``shots`` random support samples per held-out block, the rest as query.

    Held-out blocks with no more than ``shots`` samples give no query and are
    skipped; ``None`` when no block is left.
    """
    support, query = [], []
    for bid in np.unique(blocks[test]):
        members = test[blocks[test] == bid]
        if members.size <= shots:
            continue
        perm = rng.permutation(members)
        support.append(perm[:shots])
        query.append(perm[shots:])
    if not query:
        return None
    return np.concatenate(support), np.concatenate(query)


def score_fold(
    data: LabelledSamples,
    split: tuple[np.ndarray, np.ndarray, np.ndarray],
    method: str,
    settings: TrainSettings,
    shared: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Scores of ``method`` on one fold's query samples.

    Args:
        data: Every sample.
        split: ``(train, support, query)`` sample indices.
        method: The method to fit.
        settings: Hyper-parameters (``method`` replaced).
        shared: Per-fold cache: the block-wise methods (``meta``, ``hybrid``)
            share one meta-training and adaptation of the fold.
    """
    train, sup, qry = split
    y, blocks = data.labels, data.blocks
    encoder = FeatureEncoder.fit(data.values[np.r_[train, sup]], data.bands, data.categorical)
    xt = encoder.transform(data.values)
    s = replace(settings, method=method)
    if method in BLOCKWISE_METHODS:
        reuse = shared.get("blockwise") if shared is not None else None
        parts = (xt[train], y[train], blocks[train]), (xt[sup], y[sup], blocks[sup])
        if reuse is not None:
            fitted = reuse_blockwise(reuse, *parts, s)
        else:
            fitted = fit_model(*parts[0], s, adapt_on=parts[1])
        if shared is not None:
            shared["blockwise"] = fitted
    else:
        idx = np.r_[train, sup]
        fitted = fit_model(xt[idx], y[idx], blocks[idx], s, groups=encoder.groups)
    return scores(y[qry], fitted.predict(xt[qry], blocks[qry]))


def leave_blocks_out(
    data: LabelledSamples,
    methods: Sequence[str],
    settings: TrainSettings,
    shots: int = 5,
    n_folds: int = 5,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    log: Warn | None = None,
) -> list[dict[str, Any]]:
    """Leave-blocks-out evaluation with ``shots`` support samples per held-out block.

    See the module docstring for the protocol. Held-out blocks with no more than
    ``shots`` samples give no query and are skipped, and so are folds whose query
    holds one class only.

    Returns:
        One record per fold: ``{"fold", "n_query", "<method>": scores}``.
    """
    from slidewise.engine.susceptibility.spatialcv import block_folds

    rng = np.random.default_rng(seed)
    folds = block_folds(data.blocks, n_folds, seed)
    records = []
    for k, (train, test) in enumerate(folds):
        found = support_and_query(data.blocks, test, shots, rng)
        if found is None:
            continue
        sup, qry = found
        if np.unique(data.labels[qry]).size < 2:
            continue
        record: dict[str, Any] = {"fold": k, "n_query": int(qry.size)}
        shared: dict[str, Any] = {}
        for m in methods:
            record[m] = score_fold(data, (train, sup, qry), m, settings, shared)
            if log:
                log(f"fold {k + 1}/{len(folds)} {m}: AUC {record[m]['auc']:.3f}")
        records.append(record)
        if progress:
            progress((k + 1) / len(folds))
    return records


def random_cv(
    data: LabelledSamples, settings: TrainSettings, n_folds: int = 5, seed: int = 0
) -> list[float]:
    """Random k-fold AUCs of the whole pipeline (``meta``: blocks adapted on training samples)."""
    from slidewise.engine.susceptibility.spatialcv import random_folds

    y, blocks = data.labels, data.blocks
    aucs = []
    for train, test in random_folds(len(y), n_folds, seed, labels=y):
        encoder = FeatureEncoder.fit(data.values[train], data.bands, data.categorical)
        xt = encoder.transform(data.values)
        fitted = fit_model(xt[train], y[train], blocks[train], settings, groups=encoder.groups)
        aucs.append(scores(y[test], fitted.predict(xt[test], blocks[test]))["auc"])
    return aucs


def summarise(records: list[dict[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of fold scores per method."""
    out = {}
    for m in methods:
        auc = np.array([r[m]["auc"] for r in records if m in r], dtype=float)
        f1 = np.array([r[m]["f1"] for r in records if m in r], dtype=float)
        kappa = np.array([r[m]["kappa"] for r in records if m in r], dtype=float)
        out[m] = {
            "auc_mean": float(np.nanmean(auc)) if auc.size else float("nan"),
            "auc_sd": float(np.nanstd(auc)) if auc.size else float("nan"),
            "f1_mean": float(np.nanmean(f1)) if f1.size else float("nan"),
            "kappa_mean": float(np.nanmean(kappa)) if kappa.size else float("nan"),
        }
    return out
