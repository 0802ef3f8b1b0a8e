"""Multicollinearity screening of conditioning factors: VIF and Pearson correlation.

Two factors that carry the same information (elevation and temperature, two
curvatures...) make a model's weights and its factor importance unstable. The
usual screening of susceptibility studies is the variance inflation factor,
``VIF_j = 1 / (1 - R_j^2)`` with ``R_j^2`` the coefficient of determination of
factor ``j`` regressed on all the others (least squares with an intercept,
:func:`numpy.linalg.lstsq`), and the Pearson correlation matrix. VIF above 10
and ``|r|`` above 0.8 are the usual warning thresholds.

Categorical factors are left out (their one-hot columns are collinear by
construction); so are factors that are constant over the samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: R^2 above this is treated as exact collinearity (VIF infinite).
EXACT_R2 = 1 - 1e-12


def variance_inflation(values: np.ndarray) -> np.ndarray:
    """Variance inflation factor of every column of ``values`` (n, d).

    Each column is regressed on the others with an intercept by least squares.
    A column explained exactly by the others gets ``inf``; with one column, 1.

    Args:
        values: Finite samples by factors (n, d), no constant column.

    Returns:
        VIF per column (d,).
    """
    x = np.asarray(values, dtype=np.float64)
    n, d = x.shape
    out = np.ones(d)
    if d < 2:
        return out
    for j in range(d):
        y = x[:, j]
        design = np.column_stack([np.ones(n), np.delete(x, j, axis=1)])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        resid = y - design @ coef
        tss = float(np.sum((y - y.mean()) ** 2))
        r2 = 1.0 - float(resid @ resid) / tss if tss > 0 else 1.0
        out[j] = np.inf if r2 >= EXACT_R2 else 1.0 / (1.0 - r2)
    return out


@dataclass
class Collinearity:
    """The screening of a set of factors.

    Attributes:
        names: Factors screened (continuous, not constant).
        vif: VIF per factor.
        correlation: Pearson correlation matrix (len(names) squared).
        vif_threshold: Warning threshold of the VIF.
        r_threshold: Warning threshold of ``|r|``.
        skipped: Factors left out, with why.
    """

    names: list[str]
    vif: np.ndarray
    correlation: np.ndarray
    vif_threshold: float = 10.0
    r_threshold: float = 0.8
    skipped: dict[str, str] = field(default_factory=dict)

    def high_vif(self) -> list[tuple[str, float]]:
        """Factors above the VIF threshold, highest first."""
        pairs = [(n, float(v)) for n, v in zip(self.names, self.vif, strict=True)]
        return sorted((p for p in pairs if p[1] > self.vif_threshold), key=lambda p: -p[1])

    def correlated_pairs(self) -> list[tuple[str, str, float]]:
        """Factor pairs with ``|r|`` above the threshold, strongest first."""
        out = []
        for i in range(len(self.names)):
            for j in range(i + 1, len(self.names)):
                r = float(self.correlation[i, j])
                if abs(r) > self.r_threshold:
                    out.append((self.names[i], self.names[j], r))
        return sorted(out, key=lambda p: -abs(p[2]))

    def warnings(self) -> list[str]:
        """One message per problem, naming the factors and what to do."""
        msgs = []
        high = self.high_vif()
        if high:
            listed = ", ".join(f"{n} ({v:.1f})" for n, v in high)
            msgs.append(
                f"Multicollinearity: variance inflation factor above {self.vif_threshold:g} "
                f"for {listed}. These factors are largely explained by the others: consider "
                "dropping one of each related group (factor importance is unstable among them)."
            )
        pairs = self.correlated_pairs()
        if pairs:
            listed = ", ".join(f"{a}/{b} (r = {r:.2f})" for a, b, r in pairs)
            msgs.append(
                f"Strongly correlated factors (|r| above {self.r_threshold:g}): {listed}. "
                "Consider keeping one factor of each pair."
            )
        return msgs

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe figures (manifests, reports)."""
        return {
            "vif": {n: float(v) for n, v in zip(self.names, self.vif, strict=True)},
            "correlation": {
                "names": list(self.names),
                "matrix": [[round(float(v), 4) for v in row] for row in self.correlation],
            },
            "vif_threshold": self.vif_threshold,
            "r_threshold": self.r_threshold,
            "high_vif": [n for n, _ in self.high_vif()],
            "correlated_pairs": [[a, b, round(r, 4)] for a, b, r in self.correlated_pairs()],
            "skipped": dict(self.skipped),
        }


def screen_factors(
    values: np.ndarray,
    names: Sequence[str],
    categorical: Sequence[str] = (),
    vif_threshold: float = 10.0,
    r_threshold: float = 0.8,
) -> Collinearity:
    """VIF and correlation of the continuous factors over the samples with every value.

    Args:
        values: Raw factor values (n, d); rows with a missing value are left out.
        names: Factor names (d).
        categorical: Factors that are classes (left out).
        vif_threshold: Warn above this VIF.
        r_threshold: Warn above this absolute correlation.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.all(np.isfinite(x), axis=1)]
    skipped: dict[str, str] = {}
    keep = []
    for j, name in enumerate(names):
        if name in categorical:
            skipped[name] = "categorical"
        elif x.shape[0] < 2 or np.ptp(x[:, j]) == 0:
            skipped[name] = "constant over the samples"
        else:
            keep.append(j)
    kept = [names[j] for j in keep]
    if len(keep) < 2 or x.shape[0] <= len(keep):
        for name in kept:
            skipped[name] = "too few factors or samples"
        empty = np.zeros((0, 0))
        return Collinearity([], np.zeros(0), empty, vif_threshold, r_threshold, skipped)
    sub = x[:, keep]
    corr = np.atleast_2d(np.corrcoef(sub, rowvar=False))
    return Collinearity(kept, variance_inflation(sub), corr, vif_threshold, r_threshold, skipped)


@dataclass(frozen=True)
class CollinearityParams:
    """The COLLINEARITY group of a job's parameters (``contract/specs/analysis.py``).

    Attributes:
        vif_threshold: VIF_THRESHOLD, warn above this variance inflation factor.
        correlation_threshold: CORRELATION_THRESHOLD, warn above this ``|r|``.
    """

    vif_threshold: float = 10.0
    correlation_threshold: float = 0.8

    def collinearity_thresholds(self) -> tuple[float, float]:
        """``(VIF threshold, |r| threshold)``."""
        return self.vif_threshold, self.correlation_threshold


def report_collinearity(
    values: np.ndarray,
    names: Sequence[str],
    categorical: Sequence[str],
    thresholds: tuple[float, float],
    log: Callable[[str], None],
    warn: Callable[[str], None],
) -> dict[str, Any]:
    """Screen the factors, log the VIFs, warn about each problem; return the figures.

    The one call the sampling and training jobs make.

    Args:
        values: Raw factor values (n, d).
        names: Factor names.
        categorical: Categorical factors (left out).
        thresholds: ``(VIF threshold, |r| threshold)``.
        log: Where the VIFs go (the job's ``ctx.log``).
        warn: Where warnings go (the job's ``ctx.warn``).
    """
    result = screen_factors(values, names, categorical, thresholds[0], thresholds[1])
    if result.names:
        vifs = ", ".join(f"{n} {v:.1f}" for n, v in zip(result.names, result.vif, strict=True))
        log(f"Variance inflation factors: {vifs}.")
    for message in result.warnings():
        warn(message)
    return result.to_dict()
