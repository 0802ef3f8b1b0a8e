"""Tests of spatial cross-validation, with the published Ecuador and Hong Kong references.

Reference (scikit-learn, 5 folds): Hong Kong (17,093 samples) random forest AUC
0.938 random CV vs 0.852 spatial CV, logistic regression 0.884 vs 0.825;
Ecuador (350 points) RF 0.849 vs 0.751.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import SHARED

from slidewise.engine.core.errors import InputError
from slidewise.engine.susceptibility.spatialcv import (
    block_folds,
    compare_cv,
    cv_auc,
    random_folds,
    spatial_folds,
)

DATA = SHARED / "susceptibility"


def load_samples(path: Path, x: str, y: str, label: str) -> tuple[np.ndarray, ...]:
    """Factors, labels and coordinates of a sample table (Hong Kong: BOM in header)."""
    if not path.is_file():
        pytest.skip(f"real data not found at {path}")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    header, values = rows[0], np.array(rows[1:], dtype=float)
    col = {name: i for i, name in enumerate(header)}
    factors = [i for name, i in col.items() if name not in (x, y, label)]
    return values[:, factors], values[:, col[label]].astype(int), values[:, [col[x], col[y]]]


def rf_factory(n_estimators: int):
    from sklearn.ensemble import RandomForestClassifier

    return lambda: RandomForestClassifier(n_estimators=n_estimators, n_jobs=1, random_state=0)


def lr_factory():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def assert_partition(folds: list, n: int) -> None:
    tests = np.concatenate([te for _, te in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(n))
    for train, test in folds:
        assert np.intersect1d(train, test).size == 0
        assert train.size + test.size == n


def test_spatial_folds_are_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [1000, 0], [0, 1000], [1000, 1000]])
    pts = np.concatenate([c + rng.normal(0, 20, (50, 2)) for c in centres])
    folds = spatial_folds(pts[:, 0], pts[:, 1], n_folds=4, seed=1)
    assert_partition(folds, len(pts))
    for _, test in folds:
        # Each test fold is exactly one of the four separated clouds.
        assert len(test) == 50 and len(np.unique(test // 50)) == 1
    again = spatial_folds(pts[:, 0], pts[:, 1], n_folds=4, seed=1)
    for (_, a), (_, b) in zip(folds, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_block_folds_leave_blocks_out() -> None:
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 23, 1000)
    folds = spatial_folds(np.zeros(1000), np.zeros(1000), 5, seed=3, block_ids=blocks)
    assert_partition(folds, 1000)
    for train, test in folds:
        assert np.intersect1d(blocks[train], blocks[test]).size == 0
        assert 100 < len(test) < 300  # balanced within about one block
    other = block_folds(blocks, 5, seed=4)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other, strict=True))
    with pytest.raises(InputError, match="blocks"):
        block_folds(np.array([1, 1, 2, 2]), 3)
    with pytest.raises(InputError, match="block ids"):
        spatial_folds(np.zeros(3), np.zeros(3), 2, block_ids=[1, 2])


def test_random_folds_stratified() -> None:
    labels = np.r_[np.ones(40), np.zeros(160)].astype(int)
    folds = random_folds(200, 5, seed=0, labels=labels)
    assert_partition(folds, 200)
    for _, test in folds:
        assert labels[test].sum() == 8
    assert_partition(random_folds(17, 3, seed=0), 17)
    with pytest.raises(InputError, match="at least 2"):
        random_folds(10, 1)


def test_cv_auc_marks_one_class_folds_nan() -> None:
    X = np.arange(20, dtype=float)[:, None]
    y = (np.arange(20) >= 10).astype(int)
    folds = [(np.arange(10, 20), np.arange(10)), (np.arange(20)[::2], np.arange(20)[1::2])]
    aucs = cv_auc(lr_factory(), X, y, folds)
    assert np.isnan(aucs[0]) and aucs[1] == pytest.approx(1.0)


def test_ecuador_random_cv_is_optimistic() -> None:
    X, y, xy = load_samples(DATA / "ecuador" / "lsl.csv", "x", "y", "lslpts")
    assert X.shape == (350, 5) and y.sum() == 175
    done: list[float] = []
    rf = compare_cv(rf_factory(100), X, y, xy, n_folds=5, seed=0, progress=done.append)
    assert done[-1] == pytest.approx(1.0) and len(done) == 10
    print(
        f"Ecuador RF: random {rf['auc_random_mean']:.3f} ± {rf['auc_random_sd']:.3f}, "
        f"spatial {rf['auc_spatial_mean']:.3f} ± {rf['auc_spatial_sd']:.3f}"
    )
    assert rf["auc_random_mean"] > rf["auc_spatial_mean"] + 0.03
    assert rf["auc_random_mean"] == pytest.approx(0.849, abs=0.03)
    assert rf["auc_spatial_mean"] == pytest.approx(0.751, abs=0.05)
    assert rf["optimism"] == pytest.approx(rf["auc_random_mean"] - rf["auc_spatial_mean"])
    assert len(rf["auc_spatial_folds"]) == 5 and rf["spatial_scheme"] == "kmeans"


@pytest.mark.slow
def test_hongkong_random_cv_is_optimistic() -> None:
    X, y, xy = load_samples(DATA / "hongkong" / "samples_HK_noTS.csv", "X", "Y", "label")
    assert X.shape == (17093, 14)
    rf = compare_cv(rf_factory(50), X, y, xy, n_folds=5, seed=0)
    lr = compare_cv(lr_factory(), X, y, xy, n_folds=5, seed=0)
    for name, r in (("RF", rf), ("LR", lr)):
        print(
            f"Hong Kong {name}: random {r['auc_random_mean']:.3f} ± {r['auc_random_sd']:.3f}, "
            f"spatial {r['auc_spatial_mean']:.3f} ± {r['auc_spatial_sd']:.3f}"
        )
        assert r["auc_random_mean"] > r["auc_spatial_mean"] + 0.03
    assert rf["auc_random_mean"] == pytest.approx(0.938, abs=0.02)
    assert rf["auc_spatial_mean"] == pytest.approx(0.852, abs=0.04)
    assert lr["auc_random_mean"] == pytest.approx(0.884, abs=0.02)
    assert lr["auc_spatial_mean"] == pytest.approx(0.825, abs=0.04)
