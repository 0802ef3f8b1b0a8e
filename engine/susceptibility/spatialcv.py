"""Spatial and random cross-validation for susceptibility models.

Landslide samples are spatially autocorrelated: with a random split, test points
sit next to training points and the score is optimistic. Spatial
cross-validation keeps whole areas out of training, either user-given blocks
(leave-blocks-out) or k-means clusters of the coordinates (as in sperrorest and
mlr3spatiotempcv ``spcv_coords``). :func:`compare_cv` runs both on the same
model so that the optimism of random splits is visible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from slidewise.engine.core.errors import InputError

Fold = tuple[np.ndarray, np.ndarray]


def _check_folds(n_folds: int, n_units: int, what: str) -> None:
    if n_folds < 2:
        raise InputError(f"The number of folds must be at least 2 (got {n_folds}): use 2 or more.")
    if n_units < n_folds:
        raise InputError(
            f"Cannot make {n_folds} folds from {n_units} {what}: "
            f"use at most {n_units} folds or more data."
        )


def _folds_from_assignment(fold_of: np.ndarray, n_folds: int) -> list[Fold]:
    """Turn a fold number per sample into ``(train_idx, test_idx)`` pairs."""
    folds = []
    for k in range(n_folds):
        test = np.flatnonzero(fold_of == k)
        train = np.flatnonzero(fold_of != k)
        folds.append((train, test))
    return folds


def block_folds(block_ids: Sequence[Any] | np.ndarray, n_folds: int, seed: int = 0) -> list[Fold]:
    """Leave-blocks-out folds: every block falls entirely into one test fold.

    Blocks are shuffled with ``seed`` and cut into ``n_folds`` runs of about
    equal sample counts, so folds differ between seeds and stay balanced
    within one block's size.

    Args:
        block_ids: Block id per sample (any hashable values).
        n_folds: Number of folds.
        seed: Seed of the block shuffle.

    Returns:
        ``n_folds`` pairs ``(train_idx, test_idx)``.

    Raises:
        InputError: fewer blocks than folds.
    """
    ids = np.asarray(block_ids)
    uniques, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    _check_folds(n_folds, len(uniques), "blocks")
    order = np.random.default_rng(seed).permutation(len(uniques))
    cum = np.cumsum(counts[order]) - counts[order] / 2.0  # block centres on the sample axis
    fold_of_block = np.empty(len(uniques), dtype=np.int64)
    fold_of_block[order] = np.minimum((cum / counts.sum() * n_folds).astype(np.int64), n_folds - 1)
    # Every fold must get at least one block: fall back to round-robin if not.
    if len(np.unique(fold_of_block)) < n_folds:
        fold_of_block[order] = np.arange(len(uniques)) % n_folds
    return _folds_from_assignment(fold_of_block[inverse.ravel()], n_folds)


def spatial_folds(
    x: np.ndarray,
    y: np.ndarray,
    n_folds: int = 5,
    seed: int = 0,
    block_ids: Sequence[Any] | np.ndarray | None = None,
) -> list[Fold]:
    """Spatial cross-validation folds.

    With ``block_ids`` the folds leave whole blocks out (:func:`block_folds`);
    otherwise the samples are grouped into ``n_folds`` k-means clusters of their
    coordinates and each cluster is one test fold.

    Args:
        x: Easting of each sample (projected CRS units).
        y: Northing of each sample.
        n_folds: Number of folds.
        seed: Seed of the clustering (or of the block shuffle).
        block_ids: Optional block id per sample (for example from segmentation).

    Returns:
        ``n_folds`` pairs ``(train_idx, test_idx)`` of integer index arrays.

    Raises:
        InputError: coordinates of unequal length, non-finite coordinates, or too
            few samples/blocks for the folds.
    """
    xs = np.asarray(x, dtype=float).ravel()
    ys = np.asarray(y, dtype=float).ravel()
    if xs.shape != ys.shape:
        raise InputError(f"x and y have different lengths ({len(xs)} and {len(ys)}).")
    if block_ids is not None:
        ids = np.asarray(block_ids).ravel()
        if len(ids) != len(xs):
            raise InputError(
                f"There are {len(ids)} block ids for {len(xs)} samples: "
                "give one block id per sample."
            )
        return block_folds(ids, n_folds, seed)
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise InputError("Some sample coordinates are missing or not finite: remove those samples.")
    _check_folds(n_folds, len(xs), "samples")
    from sklearn.cluster import KMeans

    coords = np.column_stack([xs, ys])
    labels = KMeans(n_clusters=n_folds, random_state=seed, n_init=10).fit_predict(coords)
    return _folds_from_assignment(labels, n_folds)


def random_folds(
    n: int, n_folds: int = 5, seed: int = 0, labels: np.ndarray | None = None
) -> list[Fold]:
    """Random (shuffled) k-fold cross-validation, stratified when labels are given.

    Args:
        n: Number of samples.
        n_folds: Number of folds.
        seed: Shuffle seed.
        labels: Optional class labels; folds then keep the class proportions.

    Returns:
        ``n_folds`` pairs ``(train_idx, test_idx)``.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    _check_folds(n_folds, n, "samples")
    dummy = np.zeros((n, 1))
    if labels is not None:
        lab = np.asarray(labels).ravel()
        if len(lab) != n:
            raise InputError(f"There are {len(lab)} labels for {n} samples.")
        smallest = int(np.unique(lab, return_counts=True)[1].min())
        if smallest >= n_folds:
            skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            return [(tr, te) for tr, te in skf.split(dummy, lab)]
    kf = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in kf.split(dummy)]


def _scores(model: Any, X: np.ndarray) -> np.ndarray:
    """Landslide scores of a fitted classifier (probability of class 1 if available)."""
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X))
        classes = list(getattr(model, "classes_", [0, 1]))
        return proba[:, classes.index(1)] if 1 in classes else proba[:, -1]
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(X)).ravel()
    return np.asarray(model.predict(X), dtype=float).ravel()


def cv_auc(
    model_factory: Callable[[], Any],
    X: np.ndarray,
    y: np.ndarray,
    folds: Sequence[Fold],
    progress: Callable[[float], None] | None = None,
) -> list[float]:
    """ROC-AUC of a fresh model on each fold's test set.

    Folds whose training or test part holds only one class cannot be scored and
    give NaN.

    Args:
        model_factory: Called once per fold; returns an unfitted classifier with
            ``fit`` and ``predict_proba`` (or ``decision_function``).
        X: Features (samples, factors).
        y: Labels, 1 = landslide, 0 = not.
        folds: ``(train_idx, test_idx)`` pairs.
        progress: Called with the fraction of folds done.

    Returns:
        AUC per fold.
    """
    from sklearn.metrics import roc_auc_score

    aucs = []
    for i, (train, test) in enumerate(folds):
        if len(np.unique(y[train])) < 2 or len(np.unique(y[test])) < 2:
            aucs.append(float("nan"))
        else:
            model = model_factory()
            model.fit(X[train], y[train])
            aucs.append(float(roc_auc_score(y[test], _scores(model, X[test]))))
        if progress is not None:
            progress((i + 1) / len(folds))
    return aucs


def _summary(aucs: list[float]) -> tuple[float, float]:
    scored = np.asarray([a for a in aucs if np.isfinite(a)])
    if len(scored) == 0:
        return float("nan"), float("nan")
    sd = float(np.std(scored, ddof=1)) if len(scored) > 1 else 0.0
    return float(np.mean(scored)), sd


def compare_cv(
    model_factory: Callable[[], Any],
    X: np.ndarray,
    y: np.ndarray,
    coords: np.ndarray,
    n_folds: int = 5,
    seed: int = 0,
    block_ids: Sequence[Any] | np.ndarray | None = None,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Compare random (stratified) and spatial k-fold cross-validation AUC.

    Args:
        model_factory: Returns a fresh unfitted classifier (scikit-learn API).
        X: Features (samples, factors).
        y: Labels, 1 = landslide, 0 = not.
        coords: Sample coordinates (samples, 2) in a projected CRS.
        n_folds: Number of folds of each scheme.
        seed: Seed of both fold assignments.
        block_ids: Optional block id per sample for leave-blocks-out spatial CV;
            k-means clusters of ``coords`` otherwise.
        progress: Called with the fraction done (random CV first, then spatial).

    Returns:
        ``auc_random_mean``, ``auc_random_sd``, ``auc_random_folds``,
        ``auc_spatial_mean``, ``auc_spatial_sd``, ``auc_spatial_folds``,
        ``optimism`` (random minus spatial mean AUC), ``spatial_scheme``
        (``"blocks"`` or ``"kmeans"``), ``n_folds``, ``seed``, ``n_samples``.
        Standard deviations are over folds (ddof 1); unscorable folds (one class)
        are NaN in the fold lists and left out of the means.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y).astype(np.int64).ravel()
    xy = np.asarray(coords, dtype=float)
    if X.ndim != 2 or len(X) != len(y) or xy.shape != (len(y), 2):
        raise InputError(
            f"Features {X.shape}, labels {y.shape} and coordinates {xy.shape} do not match: "
            "give one row of features, one label and one (x, y) pair per sample."
        )
    if set(np.unique(y)) != {0, 1}:
        raise InputError("Cross-validation needs both landslide (1) and non-landslide (0) samples.")

    def part(offset: float) -> Callable[[float], None] | None:
        if progress is None:
            return None
        report = progress
        return lambda fraction: report(offset + fraction / 2)

    rand_folds = random_folds(len(y), n_folds, seed, labels=y)
    spat_folds = spatial_folds(xy[:, 0], xy[:, 1], n_folds, seed, block_ids)
    rand = cv_auc(model_factory, X, y, rand_folds, part(0.0))
    spat = cv_auc(model_factory, X, y, spat_folds, part(0.5))
    r_mean, r_sd = _summary(rand)
    s_mean, s_sd = _summary(spat)
    return {
        "auc_random_mean": r_mean,
        "auc_random_sd": r_sd,
        "auc_random_folds": rand,
        "auc_spatial_mean": s_mean,
        "auc_spatial_sd": s_sd,
        "auc_spatial_folds": spat,
        "optimism": r_mean - s_mean,
        "spatial_scheme": "blocks" if block_ids is not None else "kmeans",
        "n_folds": int(n_folds),
        "seed": int(seed),
        "n_samples": len(y),
    }
