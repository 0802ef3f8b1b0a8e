"""Statistics of a susceptibility evaluation: point metrics, rate curves, class table.

* point metrics with scikit-learn: ROC-AUC, accuracy, precision, recall, F1 and
  Cohen's kappa at a probability threshold;
* success- and prediction-rate curves: cumulative share of landslides against
  cumulative share of area ranked by decreasing susceptibility, with the area
  under each curve;
* per-class area share, landslide share and frequency ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The point metrics, in the order they are logged and returned.
METRIC_NAMES = ("roc_auc", "accuracy", "precision", "recall", "f1", "kappa")


@dataclass
class RateCurve:
    """Cumulative landslide share against cumulative area share (both 0..100 %).

    Attributes:
        area_pct: Cumulative area, ranked by decreasing probability.
        landslide_pct: Cumulative landslides in that area.
        thresholds: Probability at each point (the area holds values >= it).
        auc: Area under the curve (0..1; 0.5 = no better than random).
        n_landslides: Landslide points or pixels used.
    """

    area_pct: np.ndarray
    landslide_pct: np.ndarray
    thresholds: np.ndarray
    auc: float
    n_landslides: int

    def landslides_in_top(self, area_pct: float) -> float:
        """Landslide share (%) in the most susceptible ``area_pct`` % of the area."""
        return float(np.interp(area_pct, self.area_pct, self.landslide_pct))

    def as_json(self) -> dict[str, Any]:
        """The curve and its figures as JSON values."""
        return {
            "area_pct": self.area_pct.tolist(),
            "landslide_pct": self.landslide_pct.tolist(),
            "threshold": self.thresholds.tolist(),
            "auc": self.auc,
            "n_landslides": self.n_landslides,
            "landslides_in_top_10pct_area": self.landslides_in_top(10),
            "landslides_in_top_20pct_area": self.landslides_in_top(20),
        }


def rate_curve(
    area_counts: np.ndarray, edges: np.ndarray, landslide_values: np.ndarray
) -> RateCurve:
    """Success- or prediction-rate curve from the raster histogram.

    Pixels within one histogram bin are tied; the curve joins bin ends with
    straight lines (their random order), so a random map gives an AUC of 0.5.

    Args:
        area_counts: Pixel counts per bin of the whole raster.
        edges: Bin edges.
        landslide_values: Probability at each landslide point or pixel.
    """
    ls_counts = np.histogram(np.clip(landslide_values, edges[0], edges[-1]), bins=edges)[0]
    area = np.concatenate([[0], np.cumsum(area_counts[::-1])]).astype(np.float64)
    slides = np.concatenate([[0], np.cumsum(ls_counts[::-1])]).astype(np.float64)
    area /= max(area[-1], 1.0)
    slides /= max(slides[-1], 1.0)
    auc = float(np.sum(np.diff(area) * (slides[1:] + slides[:-1]) / 2))
    return RateCurve(area * 100, slides * 100, edges[::-1].copy(), auc, int(ls_counts.sum()))


def threshold_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """ROC-AUC and threshold metrics with scikit-learn.

    Args:
        y_true: 1 = landslide, 0 = not.
        scores: Probability of landslide.
        threshold: Scores >= threshold are predicted landslide.
    """
    from sklearn import metrics

    y_pred = (scores >= threshold).astype(np.int8)
    two_classes = len(np.unique(y_true)) == 2
    tn, fp, fn, tp = metrics.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {
        "roc_auc": float(metrics.roc_auc_score(y_true, scores)) if two_classes else float("nan"),
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "precision": float(metrics.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(metrics.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(metrics.f1_score(y_true, y_pred, zero_division=0)),
        "kappa": float(metrics.cohen_kappa_score(y_true, y_pred)),
        "threshold": float(threshold),
        "true_positive": int(tp),
        "false_positive": int(fp),
        "true_negative": int(tn),
        "false_negative": int(fn),
        "n_positive": int(np.sum(y_true == 1)),
        "n_negative": int(np.sum(y_true == 0)),
    }


def roc_points(
    metrics: dict[str, Any], y_true: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(false positive rates, true positive rates)`` of the ROC curve; ``None`` without AUC."""
    if not math.isfinite(metrics["roc_auc"]):
        return None
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y_true, scores)
    return fpr, tpr


def thin(x: np.ndarray, y: np.ndarray, limit: int = 2000) -> tuple[list[float], list[float]]:
    """At most about ``limit`` evenly spaced points of a curve, as lists."""
    if len(x) <= limit:
        return x.tolist(), y.tolist()
    idx = np.unique(np.linspace(0, len(x) - 1, limit).astype(int))
    return x[idx].tolist(), y[idx].tolist()


def class_statistics(
    area_counts: np.ndarray, landslide_counts: np.ndarray, names: list[str]
) -> list[dict[str, Any]]:
    """Area share, landslide share and frequency ratio per class.

    Args:
        area_counts: Pixels per class (index 0 = class 1).
        landslide_counts: Landslide points or pixels per class.
        names: Class names.
    """
    area_total = max(int(area_counts.sum()), 1)
    ls_total = max(int(landslide_counts.sum()), 1)
    out = []
    for i, name in enumerate(names):
        a = int(area_counts[i]) / area_total
        s = int(landslide_counts[i]) / ls_total
        out.append(
            {
                "class": i + 1,
                "name": name,
                "pixels": int(area_counts[i]),
                "landslides": int(landslide_counts[i]),
                "area_share": a,
                "landslide_share": s,
                "frequency_ratio": s / a if a > 0 else float("nan"),
            }
        )
    return out
