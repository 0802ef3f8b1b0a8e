"""How ``hybrid`` mixes its adapted MLP with a global model, chosen on the training blocks.

The hybrid's logit is ``w * z_mlp + (1 - w) * z_global``, where ``z_mlp`` is the logit
of the MAML MLP adapted to the sample's block and ``z_global`` that of one global model.
Where the adapted MLP is weak (a table whose blocks do not differ in a way a few samples
can tell, or a poor meta-learned start) a fixed ``w = 1/2`` lets it drag a good global
model down; where it is strong, a low ``w`` throws its block-wise gain away.
:func:`choose_mix` measures instead of guessing: an inner leave-blocks-out split of the
**training blocks only** plays the few-shot task the model will face (meta-train on two
thirds of the blocks, adapt to each held-out block on ``K`` support samples, score its
other samples), fits each candidate global model on the same samples, and keeps the
weight and global model whose mixed logits have the lowest pooled log-loss on the
held-out samples. It costs one meta-training per inner fold.

Hybrids trained before session 6 of wave 2 also shifted each block's logit by
an offset fitted on its support samples (:mod:`.blockoffset`). On both
benchmark tables the offsets did not help (Hong Kong) or cost AUC (Ecuador,
where the mix takes a random forest whose in-sample support predictions make
the offsets wrong), so new hybrids have none; old model files keep theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slidewise.engine.susceptibility.blockoffset import logit, sigmoid
from slidewise.engine.susceptibility.classical import fit_classical

#: Candidate weights of the adapted MLP's logit.
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Candidate global parts.
GLOBAL_METHODS = ("gbm", "rf", "lr")
#: Inner leave-blocks-out folds of the training blocks.
INNER_FOLDS = 3
#: Salt of the inner support draw (so it differs from the outer one).
SUPPORT_SALT = 7

#: ``fit_meta(train, support)`` -> probability function ``(x, blocks) -> p`` of
#: the MLP meta-trained on ``train`` (indices) and adapted on ``support`` (indices).
MetaFit = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray, np.ndarray], np.ndarray]]


@dataclass
class HybridMix:
    """The hybrid's mix of the adapted MLP and a global model.

    Attributes:
        weight: Weight of the adapted MLP's logit (the global model gets ``1 - weight``).
        global_method: The global model (``gbm``, ``rf`` or ``lr``).
        inner_log_loss: ``"<weight>/<global>"`` -> pooled inner log-loss of every
            candidate (empty when the mix was not chosen).
        note: Why the default mix was kept, when it was.
    """

    weight: float = 0.5
    global_method: str = "gbm"
    inner_log_loss: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def combine(self, z_mlp: np.ndarray, z_global: np.ndarray) -> np.ndarray:
        """The mixed logit."""
        return self.weight * np.asarray(z_mlp) + (1.0 - self.weight) * np.asarray(z_global)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe record (the model file's config ``hybrid``)."""
        return {
            "weight": self.weight,
            "global": self.global_method,
            "inner_log_loss": dict(self.inner_log_loss),
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> HybridMix:
        """Inverse of :meth:`to_dict`; a model file without the record mixed 1/2 with ``gbm``."""
        doc = doc or {}
        return cls(
            weight=float(doc.get("weight", 0.5)),
            global_method=str(doc.get("global", "gbm")),
            inner_log_loss={str(k): float(v) for k, v in doc.get("inner_log_loss", {}).items()},
            note=str(doc.get("note", "")),
        )

    def describe(self) -> str:
        """``adapted MLP 0.25, rf 0.75 (inner log-loss 0.512)``."""
        text = f"adapted MLP {self.weight:g}, {self.global_method} {1.0 - self.weight:g}"
        key = mix_key(self.weight, self.global_method)
        if key in self.inner_log_loss:
            text += f" (inner log-loss {self.inner_log_loss[key]:.3f})"
        return text + (f"; {self.note}" if self.note else "")


def mix_key(weight: float, method: str) -> str:
    """``"0.25/rf"``."""
    return f"{weight:g}/{method}"


@dataclass
class InnerPredictions:
    """Pooled predictions of the inner folds.

    Attributes:
        labels: Labels of the held-out query samples.
        logits: ``"mlp"`` or a global method -> its logits of the query samples.
    """

    labels: np.ndarray
    logits: dict[str, np.ndarray]


def choose_mix(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    fit_meta: MetaFit,
    shots: int,
    seed: int,
) -> HybridMix:
    """The weight and global model of the lowest inner leave-blocks-out log-loss.

    Args:
        data: ``(x, y, blocks)`` of the training samples (encoded features).
        fit_meta: Meta-trains and adapts the MLP (see :data:`MetaFit`).
        shots: Support samples per inner held-out block (K).
        seed: Seed of the inner folds, support draws and global models.

    Returns:
        The chosen mix; the default (1/2, ``gbm``) with a note when the training
        blocks cannot be split.
    """
    found = inner_predictions(data, fit_meta, shots, seed)
    if found is None:
        return HybridMix(note=f"fewer than {INNER_FOLDS} usable training blocks: mix kept at 1/2")
    losses = {mix_key(w, g): inner_log_loss(found, w, g) for g in GLOBAL_METHODS for w in WEIGHTS}
    losses = {k: v if np.isfinite(v) else np.inf for k, v in losses.items()}
    best = min(losses.values())
    if not np.isfinite(best):
        return HybridMix(note="no finite inner log-loss: mix kept at 1/2")
    tied = [k for k in losses if losses[k] <= best + 1e-12]
    key = min(tied, key=lambda k: abs(float(k.split("/")[0]) - 0.5))
    weight, method = key.split("/")
    return HybridMix(float(weight), method, {k: round(v, 6) for k, v in losses.items()})


def inner_predictions(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    fit_meta: MetaFit,
    shots: int,
    seed: int,
) -> InnerPredictions | None:
    """Predictions of the MLP and every global candidate on the inner folds' samples."""
    from slidewise.engine.susceptibility.crossval import support_and_query
    from slidewise.engine.susceptibility.spatialcv import block_folds

    x, y, blocks = data
    if np.unique(blocks).size < INNER_FOLDS:
        return None
    rng = np.random.default_rng(seed + SUPPORT_SALT)
    parts: dict[str, list[np.ndarray]] = {}
    for train, test in block_folds(blocks, INNER_FOLDS, seed):
        found = support_and_query(blocks, test, shots, rng)
        if found is None or np.unique(y[train]).size < 2:
            continue
        sup, qry = found
        predict = fit_meta(train, sup)
        parts.setdefault("mlp", []).append(logit(predict(x[qry], blocks[qry])))
        idx = np.r_[train, sup]
        for g in GLOBAL_METHODS:
            model = fit_classical(g, x[idx], y[idx], seed)
            parts.setdefault(g, []).append(logit(model.predict_proba(x[qry])))
        parts.setdefault("y", []).append(y[qry])
    if not parts or np.unique(np.concatenate(parts["y"])).size < 2:
        return None
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return InnerPredictions(labels=cat["y"], logits={n: cat[n] for n in ("mlp", *GLOBAL_METHODS)})


def inner_log_loss(found: InnerPredictions, weight: float, method: str) -> float:
    """Pooled log-loss of one mix on the inner query samples."""
    z = HybridMix(weight, method).combine(found.logits["mlp"], found.logits[method])
    p = np.clip(sigmoid(z), 1e-6, 1.0 - 1e-6)
    y = found.labels
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))
