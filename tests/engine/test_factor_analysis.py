"""Factor analysis: VIF and correlation screening, SHAP factor importance, the report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import REPO, job_context, log_messages

from slidewise.engine.geo.collinearity import screen_factors, variance_inflation
from slidewise.engine.geo.samples import FeatureEncoder
from slidewise.engine.geo.sampletables import read_sample_table
from slidewise.engine.preparation.samplefactors import run_sample_factors
from slidewise.engine.susceptibility.importance import (
    block_function,
    factor_importance,
    forest_model,
)
from slidewise.engine.susceptibility.models import TrainSettings, fit_model
from slidewise.engine.susceptibility.train import run_train

ECUADOR = REPO / "tests" / "data" / "ecuador"


@pytest.fixture(scope="module")
def ecuador() -> tuple[np.ndarray, np.ndarray, list[str]]:
    values, labels, _, _, names = read_sample_table(
        str(ECUADOR / "lsl.csv"), "lslpts", "x", "y", []
    )
    return values, labels, names


def test_vif_is_the_diagonal_of_the_inverse_correlation(ecuador) -> None:
    values, _, _ = ecuador
    expected = np.diag(np.linalg.inv(np.corrcoef(values, rowvar=False)))
    np.testing.assert_allclose(variance_inflation(values), expected, rtol=1e-8)


def test_screening_warns_about_a_near_copy_and_skips_categorical(ecuador) -> None:
    values, _, names = ecuador
    rng = np.random.default_rng(0)
    copy = values[:, 3] + rng.normal(0, 0.02 * values[:, 3].std(), len(values))
    lith = rng.integers(1, 4, len(values)).astype(float)
    x = np.column_stack([values, copy, lith, np.ones(len(values))])
    result = screen_factors(x, [*names, "elev_copy", "lithology", "flat"], ["lithology"])
    assert result.names == [*names, "elev_copy"]
    assert result.skipped == {"lithology": "categorical", "flat": "constant over the samples"}
    assert [n for n, _ in result.high_vif()] == ["elev_copy", "elev"] or [
        n for n, _ in result.high_vif()
    ] == ["elev", "elev_copy"]
    pairs = result.correlated_pairs()
    assert len(pairs) == 1 and {pairs[0][0], pairs[0][1]} == {"elev", "elev_copy"}
    text = " ".join(result.warnings())
    assert "elev_copy" in text and "slope" not in text


def test_forest_tree_shap_equals_exact_kernel_shap(ecuador) -> None:
    """The stored forest handed to shap's TreeExplainer gives exactly the model-agnostic
    (interventional) SHAP values: kernel SHAP over all 2^5 coalitions, same background."""
    import shap

    values, labels, names = ecuador
    enc = FeatureEncoder.fit(values, names, [])
    x, blocks = enc.transform(values), np.zeros(len(labels), dtype=np.int64)
    fitted = fit_model(x, labels, blocks, TrainSettings(method="rf", n_estimators=30))
    assert fitted.classical is not None
    imp = factor_importance(fitted, x, blocks, names, enc.groups, max_samples=60, seed=0)
    assert imp.method == "tree-shap" and imp.values.shape == (60, 5)
    rng = np.random.default_rng(0)
    background, picked = x[rng.choice(len(x), 20, replace=False)], x[:30]
    tree = shap.TreeExplainer(
        forest_model(fitted.classical.arrays),
        data=background,
        feature_perturbation="interventional",
        model_output="raw",
    ).shap_values(picked.astype(np.float32))
    kernel = shap.KernelExplainer(block_function(fitted, 0), background).shap_values(
        picked, nsamples=32, silent=True, l1_reg=False
    )
    np.testing.assert_allclose(tree, kernel, atol=1e-6)
    # ... and they add up to the forest's probability minus its mean over the background.
    expected = fitted.predict(picked) - fitted.predict(background).mean()
    np.testing.assert_allclose(tree.sum(axis=1), expected, atol=1e-6)


def test_meta_importance_per_block(ecuador) -> None:
    """Each sample of a meta model is explained with its block's adapted model."""
    from slidewise.engine.susceptibility.blocks import kmeans_blocks
    from slidewise.engine.susceptibility.maml import MetaConfig

    values, labels, names = ecuador
    _, _, xs, ys, _ = read_sample_table(str(ECUADOR / "lsl.csv"), "lslpts", "x", "y", [])
    blocks, _ = kmeans_blocks(xs, ys, 6, 0)
    enc = FeatureEncoder.fit(values, names, [])
    x = enc.transform(values)
    meta = MetaConfig(iterations=20, tasks_per_batch=4)
    fitted = fit_model(x, labels, blocks, TrainSettings(method="meta", meta=meta))
    imp = factor_importance(fitted, x, blocks, names, enc.groups, max_samples=60, seed=0)
    assert imp.method == "kernel-shap" and imp.values.shape == (60, 5)
    # Exact kernel SHAP (2^5 coalitions): each sample's values add up to its block
    # model's prediction minus that model's mean over the background.
    per_block = imp.to_dict()["blocks"]
    assert len(per_block) > 1 and set(per_block) <= {str(b) for b in np.unique(blocks)}
    one = str(imp.blocks[0])
    assert per_block[one] != per_block[next(b for b in per_block if b != one)]


def test_samplefactors_reports_vif(tmp_path: Path) -> None:
    c, stream = job_context("samplefactors")
    result = run_sample_factors(
        {
            "INPUT": str(ECUADOR / "ta.tif"),
            "INVENTORY": str(ECUADOR / "lsl.csv"),
            "LABEL_FIELD": "lslpts",
            "INVENTORY_CRS": "EPSG:32717",
            "VIF_THRESHOLD": 1.5,
            "OUTPUT": str(tmp_path / "samples.csv"),
        },
        c,
    )
    doc = result.figures["collinearity"]
    assert set(doc["vif"]) == {"slope", "cplan", "cprof", "elev", "log10_carea"}
    # A strict threshold flags the factors above it, in the log as a warning.
    assert doc["high_vif"] == [
        n for n, v in sorted(doc["vif"].items(), key=lambda p: -p[1]) if v > 1.5
    ]
    assert doc["high_vif"] and any("variance inflation" in m for m in log_messages(stream))


def test_train_writes_factor_report(tmp_path: Path) -> None:
    """A table with a near copy of elevation: warned about, and in the importance and report."""
    rng = np.random.default_rng(1)
    table = tmp_path / "table.csv"
    with open(ECUADOR / "lsl.csv", newline="") as fh, open(table, "w", newline="") as out:
        rows = list(csv.DictReader(fh))
        writer = csv.DictWriter(out, [*rows[0], "elev_copy"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "elev_copy": float(r["elev"]) + rng.normal(0, 5)})
    c, stream = job_context("trainsusceptibility")
    result = run_train(
        {
            "TABLE": str(table),
            "LABEL_FIELD": "lslpts",
            "METHOD": "lr",
            "CV_FOLDS": 0,
            "IMPORTANCE_SAMPLES": 80,
            "OUTPUT": str(tmp_path / "lr.safetensors"),
        },
        c,
    )
    report = Path(result.outputs["OUTPUT_FACTORS"])
    assert report == tmp_path / "lr_factors.html"
    html = report.read_text()
    assert "Factor importance" in html and "Multicollinearity" in html and "elev_copy" in html
    figures = json.loads(report.with_suffix(".json").read_text())
    importance = figures["importance"]
    assert importance["method"] == "linear-shap" and importance["samples"] == 80
    assert set(importance["global"]) == {
        "slope",
        "cplan",
        "cprof",
        "elev",
        "log10_carea",
        "elev_copy",
    }
    assert len(importance["blocks"]) > 1  # per k-means block of the table
    assert "elev_copy" in figures["collinearity"]["high_vif"]
    assert any("elev_copy" in m and "inflation" in m for m in log_messages(stream))
    assert result.figures["importance"] == importance
