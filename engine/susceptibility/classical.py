"""Global susceptibility models stored without pickle.

* ``rf``: scikit-learn random forest, stored as tree arrays: ``children_left``,
  ``children_right``, ``feature``, ``threshold`` and the class-1 fraction
  ``value`` of every node of every tree, concatenated, with ``offsets`` (tree
  ``t`` owns nodes ``offsets[t]:offsets[t+1]``; child indices are global, -1 at
  leaves). :func:`forest_predict` walks all trees for a batch of samples at
  once with NumPy and equals ``predict_proba`` of the forest.
* ``lr``: logistic regression, stored as its weight vector and intercept.
* ``mlp``: scikit-learn MLP classifier, stored as its weight matrices.
* ``svm``: scikit-learn RBF support vector classifier (``SVC``), stored as its
  support vectors, dual coefficients, intercept and ``gamma``; its decision
  value is mapped to a probability by Platt scaling (a logistic fit of the
  labels on out-of-fold decision values), stored as two numbers. At most
  :data:`SVM_MAX_SAMPLES` class-balanced samples train it (kernel methods grow
  with the square of the samples).
* ``gbm``: scikit-learn ``HistGradientBoostingClassifier``, stored as tree
  arrays in the random forest's layout (leaf ``value`` = the tree's raw score)
  plus the ``baseline`` raw score; the probability is the logistic of the
  baseline plus the sum over trees.
* ``fr``: frequency ratio. Each factor is split into classes (the categories of
  a categorical factor; deciles of the training samples for a continuous one);
  a class's ratio is its share of landslide samples divided by its share of
  all samples (with random non-landslide samples, the share of all samples
  estimates the share of area). The landslide susceptibility index is the sum
  of the ratios over factors, rescaled to 0-1 between its smallest and largest
  possible value: a relative index, not a calibrated probability.

All models read the encoded, normalised feature matrix of
:class:`slidewise.engine.geo.samples.FeatureEncoder` and return the probability of
class 1 (landslide).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slidewise.engine.core.errors import ModelFileError

METHODS = ("rf", "lr", "mlp", "fr", "svm", "gbm")
ARCHITECTURES = {
    "rf": "random-forest",
    "lr": "logistic-regression",
    "mlp": "sklearn-mlp",
    "fr": "frequency-ratio",
    "svm": "rbf-svm",
    "gbm": "gradient-boosting",
}
#: Samples at most that train the ``svm`` method (class-balanced random subset).
SVM_MAX_SAMPLES = 5000


@dataclass
class ClassicalModel:
    """A fitted global model as plain arrays.

    Attributes:
        method: One of :data:`METHODS`.
        arrays: Named arrays (what goes into the model file, prefixed ``<method>.``).
        config: JSON-safe settings needed to predict.
    """

    method: str
    arrays: dict[str, np.ndarray]
    config: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, x: np.ndarray, batch: int = 65536) -> np.ndarray:
        """Probability of landslide for features ``x`` (n, d), batch by batch."""
        x = np.asarray(x, dtype=np.float32)
        out = np.empty(x.shape[0], dtype=np.float64)
        func = {
            "rf": _predict_rf,
            "lr": _predict_lr,
            "mlp": _predict_mlp,
            "fr": _predict_fr,
            "svm": _predict_svm,
            "gbm": _predict_gbm,
        }[self.method]
        step = batch if self.method in ("lr", "mlp", "fr") else max(1, batch // 16)
        for i in range(0, x.shape[0], step):
            out[i : i + step] = func(self, x[i : i + step])
        return out

    def tensors(self) -> dict[str, Any]:
        """Arrays as torch tensors named ``<method>.<name>`` for the model file."""
        import torch

        return {
            f"{self.method}.{k}": torch.from_numpy(np.ascontiguousarray(v))
            for k, v in self.arrays.items()
        }

    @classmethod
    def from_tensors(
        cls, method: str, tensors: dict[str, Any], config: dict[str, Any]
    ) -> ClassicalModel:
        """Rebuild from model-file tensors (inverse of :meth:`tensors`)."""
        prefix = f"{method}."
        arrays = {k[len(prefix) :]: v.numpy() for k, v in tensors.items() if k.startswith(prefix)}
        if not arrays:
            raise ModelFileError(
                f"The model file has no '{method}' arrays: it is damaged; train the model again."
            )
        return cls(method=method, arrays=arrays, config=dict(config))


def fit_classical(
    method: str,
    x: np.ndarray,
    y: np.ndarray,
    seed: int = 0,
    groups: list[list[int]] | None = None,
    n_estimators: int = 200,
    n_jobs: int | None = None,
) -> ClassicalModel:
    """Fit a global model.

    Args:
        method: One of :data:`METHODS`.
        x: Encoded, normalised features (n, d).
        y: Labels 0/1.
        seed: Random seed.
        groups: For ``fr``: feature columns per factor (one column for a
            continuous factor, the one-hot columns of a categorical factor).
        n_estimators: Trees of the random forest.
        n_jobs: Parallel jobs for the random forest.
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if method == "rf":
        from sklearn.ensemble import RandomForestClassifier

        forest = RandomForestClassifier(
            n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs, min_samples_leaf=1
        )
        forest.fit(x, y)
        return forest_to_arrays(forest)
    if method == "lr":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=2000, C=1.0)
        model.fit(x, y)
        return logistic_to_arrays(model)
    if method == "mlp":
        from sklearn.neural_network import MLPClassifier

        mlp = MLPClassifier(
            hidden_layer_sizes=(32, 32, 16),
            max_iter=500,
            early_stopping=True,
            random_state=seed,
            alpha=1e-3,
        )
        mlp.fit(x, y)
        return mlp_to_arrays(mlp)
    if method == "fr":
        return fit_frequency_ratio(x, y, groups or [[j] for j in range(x.shape[1])])
    if method == "svm":
        return fit_svm(x, y, seed)
    if method == "gbm":
        return fit_gbm(x, y, seed)
    raise ValueError(f"unknown method {method!r}")


# --- random forest -----------------------------------------------------------------


def forest_to_arrays(forest: Any) -> ClassicalModel:
    """Convert a fitted binary ``RandomForestClassifier`` to concatenated tree arrays."""
    if list(forest.classes_) != [0, 1]:
        raise ValueError("the forest must be fitted on labels 0 and 1")
    left, right, feat, thr, val, offsets = [], [], [], [], [], [0]
    for est in forest.estimators_:
        tree = est.tree_
        base = offsets[-1]
        cl = tree.children_left.astype(np.int64)
        cr = tree.children_right.astype(np.int64)
        left.append(np.where(cl >= 0, cl + base, -1))
        right.append(np.where(cr >= 0, cr + base, -1))
        feat.append(tree.feature.astype(np.int64))
        thr.append(tree.threshold.astype(np.float64))
        counts = tree.value[:, 0, :].astype(np.float64)
        val.append(counts[:, 1] / np.maximum(counts.sum(axis=1), 1e-300))
        offsets.append(base + tree.node_count)
    arrays = {
        "children_left": np.concatenate(left),
        "children_right": np.concatenate(right),
        "feature": np.concatenate(feat),
        "threshold": np.concatenate(thr),
        "value": np.concatenate(val),
        "offsets": np.asarray(offsets, dtype=np.int64),
    }
    return ClassicalModel("rf", arrays, {"n_estimators": len(forest.estimators_)})


def forest_predict(arrays: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Mean class-1 fraction over trees; equals the forest's ``predict_proba``."""
    return arrays["value"][tree_leaves(arrays, x)].mean(axis=1)


def tree_leaves(arrays: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Leaf node (global index) of every sample in every tree, shape (n, trees).

    Every tree and sample are advanced together. A sample goes left when
    ``x <= threshold`` as in scikit-learn; features are float32 and the float64
    thresholds are rounded down to float32, which keeps that comparison exact.
    Only the (sample, tree) pairs not yet at a leaf are advanced at each level.
    """
    left, right = arrays["children_left"], arrays["children_right"]
    leaf = left < 0
    thr = arrays["threshold"].astype(np.float64)
    thr32 = thr.astype(np.float32)
    over = thr32.astype(np.float64) > thr
    thr32[over] = np.nextafter(thr32[over], np.float32(-np.inf))
    feature = np.where(leaf, 0, arrays["feature"]).astype(np.int64)
    children = np.stack([left, right], axis=1).astype(np.int64).ravel()
    roots = arrays["offsets"][:-1].astype(np.int64)
    xf = np.ascontiguousarray(x, dtype=np.float32)
    n, d = xf.shape
    flat_x = xf.ravel()
    node = np.repeat(roots[None, :], n, axis=0).ravel()
    row_base = np.repeat(np.arange(n, dtype=np.int64) * d, roots.size)
    active = np.flatnonzero(~leaf[node])
    while active.size:
        nd = node[active]
        go_right = flat_x[row_base[active] + feature[nd]] > thr32[nd]
        nd = children[2 * nd + go_right]
        node[active] = nd
        active = active[~leaf[nd]]
    return node.reshape(n, roots.size)


def _predict_rf(model: ClassicalModel, x: np.ndarray) -> np.ndarray:
    return forest_predict(model.arrays, x)


# --- gradient boosting ------------------------------------------------------------


def fit_gbm(x: np.ndarray, y: np.ndarray, seed: int = 0) -> ClassicalModel:
    """Fit scikit-learn's histogram gradient boosting (its defaults) and store its trees."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(random_state=seed)
    model.fit(x, y)
    return gbm_to_arrays(model)


def gbm_to_arrays(model: Any) -> ClassicalModel:
    """Convert a fitted binary ``HistGradientBoostingClassifier`` to tree arrays.

    Raises:
        ValueError: the model is not binary or uses categorical splits.
    """
    if list(model.classes_) != [0, 1] or model.n_trees_per_iteration_ != 1:
        raise ValueError("the gradient boosting model must be fitted on labels 0 and 1")
    left, right, feat, thr, val, offsets = [], [], [], [], [], [0]
    for (pred,) in model._predictors:
        nodes = pred.nodes
        if np.any(nodes["is_categorical"]):
            raise ValueError("categorical splits are not supported")
        base = offsets[-1]
        leaf = nodes["is_leaf"].astype(bool)
        left.append(np.where(leaf, -1, nodes["left"].astype(np.int64) + base))
        right.append(np.where(leaf, -1, nodes["right"].astype(np.int64) + base))
        feat.append(np.where(leaf, -2, nodes["feature_idx"].astype(np.int64)))
        thr.append(np.where(leaf, -2.0, nodes["num_threshold"].astype(np.float64)))
        val.append(nodes["value"].astype(np.float64))
        offsets.append(base + len(nodes))
    arrays = {
        "children_left": np.concatenate(left),
        "children_right": np.concatenate(right),
        "feature": np.concatenate(feat),
        "threshold": np.concatenate(thr),
        "value": np.concatenate(val),
        "offsets": np.asarray(offsets, dtype=np.int64),
        "baseline": np.asarray(model._baseline_prediction, dtype=np.float64).reshape(1),
    }
    return ClassicalModel("gbm", arrays, {"n_iter": int(model.n_iter_)})


def _predict_gbm(model: ClassicalModel, x: np.ndarray) -> np.ndarray:
    raw = model.arrays["value"][tree_leaves(model.arrays, x)].sum(axis=1)
    return _sigmoid(raw + model.arrays["baseline"][0])


# --- support vector machine ---------------------------------------------------------


def fit_svm(x: np.ndarray, y: np.ndarray, seed: int = 0) -> ClassicalModel:
    """Fit an RBF ``SVC`` (C = 1, ``gamma="scale"``) with Platt-scaled probabilities.

    Platt scaling is a logistic regression of the labels on 3-fold out-of-fold
    decision values. Above :data:`SVM_MAX_SAMPLES` samples, a class-balanced
    random subset trains the machine.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.svm import SVC

    idx = balanced_subset(y, SVM_MAX_SAMPLES, seed)
    xs, ys = x[idx], y[idx]
    svc = SVC(kernel="rbf", C=1.0, gamma="scale")
    folds = min(3, int(np.bincount(ys, minlength=2).min()))
    if folds >= 2:
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        dec = cross_val_predict(svc, xs, ys, cv=cv, method="decision_function")
    svc.fit(xs, ys)
    if folds < 2:
        dec = svc.decision_function(xs)
    platt = LogisticRegression(C=1e4, max_iter=1000).fit(np.asarray(dec).reshape(-1, 1), ys)
    arrays = {
        "support_vectors": np.asarray(svc.support_vectors_, dtype=np.float64),
        "dual_coef": np.asarray(svc.dual_coef_, dtype=np.float64).reshape(-1),
        "intercept": np.asarray(svc.intercept_, dtype=np.float64).reshape(1),
        "gamma": np.asarray([svc._gamma], dtype=np.float64),
        "platt": np.asarray([platt.coef_[0, 0], platt.intercept_[0]], dtype=np.float64),
    }
    return ClassicalModel("svm", arrays, {"training_samples": int(idx.size)})


def balanced_subset(y: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of at most ``limit`` samples, about half of each class (all when fewer)."""
    if y.size <= limit:
        return np.arange(y.size)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n_pos = min(pos.size, max(limit // 2, limit - neg.size))
    n_neg = min(neg.size, limit - n_pos)
    return np.sort(
        np.r_[rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)]
    )


def svm_decision(arrays: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The SVC's decision value: sum of dual coefficients times RBF kernels, plus intercept."""
    sv = arrays["support_vectors"]
    xd = x.astype(np.float64)
    d2 = (xd**2).sum(axis=1)[:, None] + (sv**2).sum(axis=1)[None, :] - 2.0 * xd @ sv.T
    kernel = np.exp(-arrays["gamma"][0] * np.maximum(d2, 0.0))
    return kernel @ arrays["dual_coef"] + arrays["intercept"][0]


def _predict_svm(model: ClassicalModel, x: np.ndarray) -> np.ndarray:
    a, b = model.arrays["platt"]
    return _sigmoid(a * svm_decision(model.arrays, x) + b)


# --- logistic regression and MLP ---------------------------------------------------


def logistic_to_arrays(model: Any) -> ClassicalModel:
    """Convert a fitted binary ``LogisticRegression`` to its weights."""
    arrays = {
        "coef": model.coef_.reshape(-1).astype(np.float64),
        "intercept": np.asarray(model.intercept_, dtype=np.float64).reshape(1),
    }
    return ClassicalModel("lr", arrays)


def _predict_lr(model: ClassicalModel, x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64) @ model.arrays["coef"] + model.arrays["intercept"][0]
    return _sigmoid(z)


def mlp_to_arrays(mlp: Any) -> ClassicalModel:
    """Convert a fitted binary ``MLPClassifier`` (ReLU, logistic output) to its weights."""
    if mlp.activation != "relu" or mlp.out_activation_ != "logistic":
        raise ValueError("only binary ReLU MLPs are supported")
    arrays: dict[str, np.ndarray] = {}
    for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_, strict=False)):
        arrays[f"weight{i}"] = np.asarray(w, dtype=np.float64)
        arrays[f"bias{i}"] = np.asarray(b, dtype=np.float64)
    return ClassicalModel("mlp", arrays, {"layers": len(mlp.coefs_)})


def _predict_mlp(model: ClassicalModel, x: np.ndarray) -> np.ndarray:
    n_layers = int(model.config.get("layers", sum(k.startswith("weight") for k in model.arrays)))
    h = x.astype(np.float64)
    for i in range(n_layers):
        h = h @ model.arrays[f"weight{i}"] + model.arrays[f"bias{i}"]
        if i < n_layers - 1:
            h = np.maximum(h, 0.0)
    return _sigmoid(h[:, 0])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


# --- frequency ratio ---------------------------------------------------------------

FR_BINS = 10


def fit_frequency_ratio(x: np.ndarray, y: np.ndarray, groups: list[list[int]]) -> ClassicalModel:
    """Fit frequency ratios per factor class (see the module docstring).

    A group with several columns is a one-hot categorical factor (class = the
    column that is 1; no column set = a class unseen in training, ratio 1).
    """
    n_pos = max(int((y == 1).sum()), 1)
    n_all = max(y.size, 1)
    edges_list, ratios_list, kinds, cols = [], [], [], []
    for group in groups:
        codes, edges = _fr_codes(x, group, None)
        n_classes = len(group) + 1 if len(group) > 1 else edges.size + 1
        pos = np.bincount(codes[y == 1], minlength=n_classes) / n_pos
        share = np.bincount(codes, minlength=n_classes) / n_all
        ratio = np.where(share > 0, pos / np.maximum(share, 1e-12), 1.0)
        if len(group) > 1:
            ratio[-1] = 1.0  # unseen class: no information
        edges_list.append(edges)
        ratios_list.append(ratio)
        kinds.append(1 if len(group) > 1 else 0)
        cols.append(group)
    width_e = max(e.size for e in edges_list)
    width_r = max(r.size for r in ratios_list)
    width_c = max(len(c) for c in cols)
    edges = np.full((len(groups), width_e), np.inf)
    ratios = np.ones((len(groups), width_r))
    columns = np.full((len(groups), width_c), -1, dtype=np.int64)
    for i, (e, r, c) in enumerate(zip(edges_list, ratios_list, cols, strict=False)):
        edges[i, : e.size] = e
        ratios[i, : r.size] = r
        columns[i, : len(c)] = c
    lo = sum(float(r.min()) for r in ratios_list)
    hi = sum(float(r.max()) for r in ratios_list)
    arrays = {
        "edges": edges,
        "ratios": ratios,
        "columns": columns,
        "categorical": np.asarray(kinds, dtype=np.int64),
        "range": np.asarray([lo, hi], dtype=np.float64),
    }
    return ClassicalModel("fr", arrays)


def _fr_codes(
    x: np.ndarray, group: list[int], edges: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    if len(group) > 1:
        sub = x[:, group]
        hot = sub.max(axis=1) > 0.5
        codes = np.where(hot, np.argmax(sub, axis=1), len(group))
        return codes.astype(np.int64), np.zeros(0)
    col = x[:, group[0]].astype(np.float64)
    if edges is None:
        qs = np.quantile(col, np.linspace(0, 1, FR_BINS + 1)[1:-1])
        edges = np.unique(qs)
    return np.searchsorted(edges, col, side="right").astype(np.int64), edges


def _predict_fr(model: ClassicalModel, x: np.ndarray) -> np.ndarray:
    arr = model.arrays
    total = np.zeros(x.shape[0], dtype=np.float64)
    for i in range(arr["edges"].shape[0]):
        group = [int(c) for c in arr["columns"][i] if c >= 0]
        edges = arr["edges"][i]
        edges = edges[np.isfinite(edges)]
        if arr["categorical"][i]:
            codes, _ = _fr_codes(x, group, np.zeros(0))
        else:
            codes, _ = _fr_codes(x, group, edges)
        total += arr["ratios"][i][codes]
    lo, hi = arr["range"]
    return np.clip((total - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
