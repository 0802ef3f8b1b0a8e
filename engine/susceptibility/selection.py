"""Choosing a susceptibility method by leave-blocks-out cross-validation (``auto``).

The ``auto`` method of ``trainsusceptibility`` runs the leave-blocks-out
few-shot cross-validation of :mod:`.crossval` for every candidate method on the
training data only, keeps the method with the best mean AUC, and records the
comparison (method, AUC mean, standard deviation, folds) in the model file and
the run's figures. When a block-wise method is forced but a global model scores
better, or when a global model wins the automatic choice, the log says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from slidewise.contract.specs.trainsusceptibility import BLOCKWISE_METHODS

#: Candidates of ``auto``: the block-wise methods, then the global models.
#: (Frequency ratio is a relative index, kept for comparison studies only.)
AUTO_CANDIDATES = ("hybrid", "meta", "gbm", "rf", "lr", "svm", "mlp")
#: Global candidates compared with a forced block-wise method.
GLOBAL_REFERENCES = ("gbm", "rf", "lr")


@dataclass(frozen=True)
class MethodScore:
    """Cross-validated AUC of one method.

    Attributes:
        method: The method word.
        auc_mean: Mean AUC over the scored folds.
        auc_sd: Standard deviation of the fold AUCs.
        folds: Folds scored.
    """

    method: str
    auc_mean: float
    auc_sd: float
    folds: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe row of the comparison table."""
        return {
            "method": self.method,
            "auc_mean": round(self.auc_mean, 4),
            "auc_sd": round(self.auc_sd, 4),
            "folds": self.folds,
        }


def compared_methods(method: str) -> tuple[str, ...]:
    """The methods the cross-validation scores for a requested ``method``.

    ``auto``: every candidate; a block-wise method: itself and the global
    references (so that a loss to a global model is seen); a global method: itself.
    """
    if method == "auto":
        return AUTO_CANDIDATES
    if method in BLOCKWISE_METHODS:
        return (method, *GLOBAL_REFERENCES)
    return (method,)


def comparison(records: list[dict[str, Any]], methods: Sequence[str]) -> list[MethodScore]:
    """Per-method AUC mean and sd over fold records, best first (NaN folds ignored)."""
    rows = []
    for m in methods:
        auc = np.array([r[m]["auc"] for r in records if m in r], dtype=float)
        auc = auc[np.isfinite(auc)]
        if auc.size:
            rows.append(MethodScore(m, float(auc.mean()), float(auc.std()), int(auc.size)))
    return sorted(rows, key=lambda s: -s.auc_mean)


def choose(method: str, table: list[MethodScore]) -> tuple[str, list[str], list[str]]:
    """The method to fit, log lines and warnings, from the comparison ``table``.

    Args:
        method: The requested method (``auto`` chooses the first row).
        table: :func:`comparison` rows, best first.

    Returns:
        ``(method, log lines, warnings)``.
    """
    if not table:
        return method, [], []
    best = table[0]
    chosen = best.method if method == "auto" else method
    row = next((s for s in table if s.method == chosen), None)
    lines = ["Leave-blocks-out AUC by method: " + describe(table) + "."]
    warnings: list[str] = []
    if row is None:
        return chosen, lines, warnings
    runner = next((s for s in table if s.method != chosen), None)
    if method == "auto":
        lead = f" by {row.auc_mean - runner.auc_mean:.3f} over {runner.method}" if runner else ""
        lines.append(f"auto chose {chosen} (AUC {row.auc_mean:.3f} ± {row.auc_sd:.3f}){lead}.")
        if chosen not in BLOCKWISE_METHODS:
            blockwise = [s for s in table if s.method in BLOCKWISE_METHODS]
            if blockwise:
                warnings.append(
                    f"A global model ({chosen}) beat block-wise adaptation here "
                    f"({blockwise[0].method} AUC {blockwise[0].auc_mean:.3f} vs "
                    f"{row.auc_mean:.3f}): the map uses one model for the whole area."
                )
    elif chosen in BLOCKWISE_METHODS and best.method != chosen:
        warnings.append(
            f"{chosen} was asked for, but {best.method} scored better on held-out blocks "
            f"(AUC {best.auc_mean:.3f} vs {row.auc_mean:.3f}): this map may be worse than "
            f"the {best.method} map; METHOD auto would have chosen {best.method}."
        )
    return chosen, lines, warnings


def describe(table: list[MethodScore]) -> str:
    """``hybrid 0.912 ± 0.020, rf 0.903 ± 0.015`` (best first)."""
    return ", ".join(f"{s.method} {s.auc_mean:.3f} ± {s.auc_sd:.3f}" for s in table)


def comparison_section(rows: list[dict[str, Any]], chosen: str) -> Any:
    """A report section (:class:`slidewise.engine.core.report.Section`) of the comparison."""
    from slidewise.engine.core.report import Section, Table

    table = Table(
        ["method", "AUC mean", "AUC sd", "folds"],
        [[r["method"], r["auc_mean"], r["auc_sd"], r["folds"]] for r in rows],
        caption="Leave-blocks-out cross-validation on the training data",
    )
    text = [f"The model uses {chosen}."] if chosen else []
    return Section("Method comparison", text=text, tables=[table])
