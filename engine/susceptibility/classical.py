"""Global susceptibility models stored without pickle.

* ``rf``: scikit-learn random forest, stored as tree arrays: ``children_left``,
  ``children_right``, ``feature``, ``threshold`` and the class-1 fraction
  ``value`` of every node of every tree, concatenated, with ``offsets`` (tree
  ``t`` owns nodes ``offsets[t]:offsets[t+1]``; child indices are global, -1 at
  leaves). :func:`forest_predict` walks all trees for a batch of samples at
  once with NumPy and equals ``predict_proba`` of the forest.
* ``lr``: logistic regression, stored as its weight vector and intercept.
* ``mlp``: scikit-learn MLP classifier, stored as its weight matrices.
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

METHODS = ("rf", "lr", "mlp", "fr")
ARCHITECTURES = {
    "rf": "random-forest",
    "lr": "logistic-regression",
    "mlp": "sklearn-mlp",
    "fr": "frequency-ratio",
}


@dataclass
class ClassicalModel:
    """A fitted global model as plain arrays.

    Attributes:
        method: ``rf``, ``lr``, ``mlp`` or ``fr``.
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
        func = {"rf": _predict_rf, "lr": _predict_lr, "mlp": _predict_mlp, "fr": _predict_fr}[
            self.method
        ]
        step = batch if self.method != "rf" else max(1, batch // 16)
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
        method: ``rf``, ``lr``, ``mlp`` or ``fr``.
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
    """Mean class-1 fraction over trees: every tree and sample advanced together.

    Equals scikit-learn's ``predict_proba``: features are float32 and a sample
    goes left when ``x <= threshold``; the float64 thresholds are rounded down
    to float32, which keeps that comparison exact. Only the (sample, tree)
    pairs not yet at a leaf are advanced at each level.
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
    return arrays["value"][node].reshape(n, roots.size).mean(axis=1)


def _predict_rf(model: ClassicalModel, x: np.ndarray) -> np.ndarray:
    return forest_predict(model.arrays, x)


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
