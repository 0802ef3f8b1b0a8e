"""Pixel metrics of the landslide class, accumulated over batches or windows.

The confusion counts are summed window by window, so any raster size works;
the derived figures follow scikit-learn's definitions (checked in the tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Confusion:
    """Binary confusion counts for the landslide class (1 = landslide).

    Attributes:
        tp: Landslide pixels predicted landslide.
        fp: Background pixels predicted landslide.
        fn: Landslide pixels predicted background.
        tn: Background pixels predicted background.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def update(self, pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add the counts of one batch or window.

        Args:
            pred: Predicted labels (bool or 0/1).
            truth: Reference labels (bool or 0/1).
            valid: Pixels to count (others ignored); all when ``None``.
        """
        p = np.asarray(pred).astype(bool)
        t = np.asarray(truth).astype(bool)
        if valid is not None:
            v = np.asarray(valid).astype(bool)
            p, t = p[v], t[v]
        self.tp += int(np.count_nonzero(p & t))
        self.fp += int(np.count_nonzero(p & ~t))
        self.fn += int(np.count_nonzero(~p & t))
        self.tn += int(np.count_nonzero(~p & ~t))

    def __iadd__(self, other: Confusion) -> Confusion:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.tn += other.tn
        return self

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 0 when nothing was predicted landslide."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 0 when the reference has no landslide."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else 0.0

    @property
    def iou(self) -> float:
        """Intersection over union of the landslide class."""
        denom = self.tp + self.fp + self.fn
        return self.tp / denom if denom else 0.0

    @property
    def mcc(self) -> float:
        """Matthews correlation coefficient (0 when undefined, as scikit-learn)."""
        tp, fp, fn, tn = (float(v) for v in (self.tp, self.fp, self.fn, self.tn))
        denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return (tp * tn - fp * fn) / denom if denom else 0.0

    @property
    def accuracy(self) -> float:
        """Share of correctly classified pixels."""
        total = self.tp + self.fp + self.fn + self.tn
        return (self.tp + self.tn) / total if total else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """All counts and figures."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "iou": self.iou,
            "mcc": self.mcc,
            "accuracy": self.accuracy,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
        }
