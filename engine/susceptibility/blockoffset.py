"""Logit helpers of ``hybrid``, and the per-block offsets of its old model files.

Hybrids trained before wave 2 session 6 shifted each block's logit by an
offset ``c_b`` fitted on the block's few samples under a Gaussian prior learned
across the training blocks: ``p = sigmoid(z(x) + c_b)``. Measured on both
benchmark tables, the offsets did not help once the adapted MLP is in the mix
(the MLP already learns a block's base rate from the same samples), and they
cost AUC where the mix is a random forest alone (fitted on its own in-sample
support predictions), so new hybrids have none (``docs/benchmarks.md``,
"Variants tried (session 6)"). Old files still apply theirs.
"""

from __future__ import annotations

import numpy as np

#: Clip of probabilities before taking logits.
EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities ``p`` (clipped to ``[EPS, 1 - EPS]``)."""
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(q) - np.log1p(-q)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def apply_offsets(z: np.ndarray, blocks: np.ndarray, offsets: dict[int, float]) -> np.ndarray:
    """Logits shifted by their block's offset (0 for blocks without one)."""
    shift = np.array([offsets.get(int(b), 0.0) for b in blocks], dtype=np.float64)
    return np.asarray(z, dtype=np.float64) + shift
