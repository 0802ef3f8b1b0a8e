"""SVM, gradient boosting, the block-wise hybrid and the ``auto`` method (issue 16)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import SHARED, context_text, quiet_context

from slidewise.engine.susceptibility.classical import ClassicalModel, fit_classical
from slidewise.engine.susceptibility.selection import MethodScore, choose

LSL = SHARED / "susceptibility" / "ecuador" / "lsl.csv"
TABLE = {"TABLE": str(LSL), "LABEL_FIELD": "lslpts", "X_FIELD": "x", "Y_FIELD": "y"}


def synthetic(n: int = 800, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] ** 2 - 1 + 0.5 * rng.normal(size=n) > 0).astype(np.int64)
    return x, y


def test_gbm_arrays_equal_sklearn_and_survive_the_model_file() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = synthetic()
    test = synthetic(300, seed=1)[0]
    model = fit_classical("gbm", x, y, seed=0)
    ref = HistGradientBoostingClassifier(random_state=0).fit(x, y)
    np.testing.assert_allclose(model.predict_proba(test), ref.predict_proba(test)[:, 1], atol=1e-9)
    back = ClassicalModel.from_tensors("gbm", model.tensors(), model.config)
    np.testing.assert_array_equal(back.predict_proba(test), model.predict_proba(test))


def test_svm_decision_equals_sklearn_and_probability_ranks() -> None:
    from sklearn.metrics import roc_auc_score
    from sklearn.svm import SVC

    from slidewise.engine.susceptibility.classical import svm_decision

    x, y = synthetic()
    test, y_test = synthetic(300, seed=1)
    model = fit_classical("svm", x, y, seed=0)
    ref = SVC(kernel="rbf", C=1.0, gamma="scale").fit(x, y)
    np.testing.assert_allclose(
        svm_decision(model.arrays, test), ref.decision_function(test), atol=1e-6
    )
    p = model.predict_proba(test)
    assert roc_auc_score(y_test, p) > 0.9
    assert 0.2 < float(np.mean(p)) < 0.8  # Platt scaling, not raw margins
    back = ClassicalModel.from_tensors("svm", model.tensors(), model.config)
    np.testing.assert_array_equal(back.predict_proba(test), p)


def test_choose_warns_when_a_global_model_wins() -> None:
    table = [MethodScore("rf", 0.80, 0.05, 5), MethodScore("meta", 0.75, 0.1, 5)]
    chosen, lines, warnings = choose("auto", table)
    assert chosen == "rf"
    assert "auto chose rf" in lines[-1] and "by 0.050 over meta" in lines[-1]
    assert len(warnings) == 1 and "global model (rf) beat block-wise" in warnings[0]
    chosen, _, warnings = choose("meta", table)
    assert chosen == "meta"
    assert len(warnings) == 1 and "auto would have chosen rf" in warnings[0]
    better = [MethodScore("hybrid", 0.9, 0.01, 5), MethodScore("rf", 0.8, 0.01, 5)]
    assert choose("auto", better)[0] == "hybrid" and not choose("auto", better)[2]


def test_auto_picks_the_best_method_on_ecuador_and_stores_the_comparison(tmp_path: Path) -> None:
    from slidewise.engine.core.modelfile import load_model
    from slidewise.engine.susceptibility.selection import AUTO_CANDIDATES
    from slidewise.engine.susceptibility.train import run_train

    if not LSL.is_file():
        pytest.skip("Ecuador data not available")
    out = tmp_path / "auto.safetensors"
    c = quiet_context()
    params = {**TABLE, "N_BLOCKS": 8, "CV_FOLDS": 2, "ITERATIONS_META": 20, "TASKS_PER_BATCH": 4}
    result = run_train({**params, "N_ESTIMATORS": 30, "OUTPUT": str(out)}, c)
    rows = result.figures["cv"]["comparison"]
    assert {r["method"] for r in rows} == set(AUTO_CANDIDATES)
    best = max(rows, key=lambda r: r["auc_mean"])
    assert result.figures["method"] == best["method"] == result.figures["cv"]["chosen"]
    assert result.figures["cv"]["spatial_auc_mean"] == best["auc_mean"]
    assert "random_auc_mean" in result.figures["cv"]
    _, meta = load_model(out, task="susceptibility")
    assert meta.config["method"] == best["method"]
    assert meta.config["selection"]["requested"] == "auto"
    assert meta.config["selection"]["comparison"] == rows
    log = context_text(c)
    assert f"auto chose {best['method']}" in log
    assert "Leave-blocks-out AUC by method" in log


def test_auto_without_cv_trains_the_hybrid_which_saves_and_predicts(tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from slidewise.engine.core.modelfile import load_model
    from slidewise.engine.susceptibility.predict import run_predict
    from slidewise.engine.susceptibility.train import run_train

    if not LSL.is_file():
        pytest.skip("Ecuador data not available")
    model = tmp_path / "hybrid.safetensors"
    params = {**TABLE, "METHOD": "auto", "N_BLOCKS": 8, "CV_FOLDS": 0, "ITERATIONS_META": 20}
    c = quiet_context()
    result = run_train({**params, "TASKS_PER_BATCH": 4, "OUTPUT": str(model)}, c)
    assert "CV_FOLDS is below 2: no methods were compared and hybrid was trained" in context_text(c)
    assert result.figures["method"] == "hybrid"
    assert "block_offsets" not in result.figures  # new hybrids have no per-block offsets
    tensors, meta = load_model(str(model), task="susceptibility")
    assert not any(k.startswith("offsets.") for k in tensors)
    assert "offset_precision" not in meta.config
    out = tmp_path / "p.csv"
    where = {"TABLE": str(LSL), "X_FIELD": "x", "Y_FIELD": "y"}
    run_predict({"MODEL": str(model), **where, "OUTPUT": str(out)}, quiet_context())
    with open(out, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    p = np.array([float(r["susceptibility"]) for r in rows])
    y = np.array([int(float(r["lslpts"])) for r in rows])
    assert roc_auc_score(y, p) > 0.85
    assert abs(roc_auc_score(y, p) - result.figures["train_auc"]) < 1e-6
