"""The HTML report of a susceptibility evaluation: plots, tables and the JSON of all numbers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from slidewise.engine.core.report import (
    Image,
    Section,
    Table,
    figure_png,
    html_report,
    new_figure,
)
from slidewise.engine.susceptibility.evaluation_statistics import RateCurve, thin

Roc = tuple[np.ndarray, np.ndarray]

#: Rate-curve styles: colour, line width, opacity. The success curve is drawn wide and
#: pale so that an identical prediction curve shows.
CURVE_STYLES = {"success": ("C2", 4.0, 0.5), "prediction": ("C0", 1.5, 1.0)}
CLASS_COLUMNS = [
    "Class",
    "Name",
    "Upper break",
    "Pixels",
    "Area share",
    "Landslides",
    "Landslide share",
    "Frequency ratio",
]


def roc_png(roc: Roc, auc: float) -> bytes:
    """The ROC curve of the validation samples, as PNG."""
    fig = new_figure(5, 5)
    ax = fig.add_subplot()
    ax.plot(roc[0], roc[1], color="C0", label=f"ROC (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="random")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", xlim=(0, 1), ylim=(0, 1))
    ax.set_aspect("equal")
    ax.legend(loc="lower right")
    return figure_png(fig)


def rates_png(curves: dict[str, RateCurve]) -> bytes:
    """The success- and prediction-rate curves, as PNG."""
    fig = new_figure(5.5, 5)
    ax = fig.add_subplot()
    for name, curve in curves.items():
        color, width, alpha = CURVE_STYLES.get(name, ("C1", 1.5, 1.0))
        ax.plot(
            curve.area_pct,
            curve.landslide_pct,
            color=color,
            lw=width,
            alpha=alpha,
            label=f"{name.capitalize()} rate (AUC = {curve.auc:.3f})",
        )
    ax.plot([0, 100], [0, 100], color="grey", ls="--", lw=1, label="random")
    ax.set(
        xlabel="Cumulative area, by decreasing susceptibility (%)",
        ylabel="Cumulative landslides (%)",
        xlim=(0, 100),
        ylim=(0, 100),
    )
    ax.legend(loc="lower right")
    return figure_png(fig)


def classes_png(classes: list[dict[str, Any]]) -> bytes:
    """Area share and landslide share per class, with the frequency ratios, as PNG."""
    fig = new_figure(6.5, 4)
    ax = fig.add_subplot()
    x = np.arange(len(classes))
    ax.bar(x - 0.2, [100 * c["area_share"] for c in classes], 0.4, label="Area share", color="C7")
    ax.bar(
        x + 0.2,
        [100 * c["landslide_share"] for c in classes],
        0.4,
        label="Landslide share",
        color="C3",
    )
    for xi, c in zip(x, classes, strict=True):
        fr = c["frequency_ratio"]
        top = 100 * max(c["area_share"], c["landslide_share"])
        ax.text(
            xi, top + 1, f"FR {fr:.2f}" if math.isfinite(fr) else "FR –", ha="center", fontsize=8
        )
    ax.set_xticks(x, [c["name"] for c in classes])
    ax.set(ylabel="Share (%)", xlabel="Susceptibility class")
    ax.legend()
    return figure_png(fig)


def _metrics_section(figures: dict[str, Any], roc_image: bytes | None) -> Section:
    m = figures["metrics"]
    return Section(
        "Point metrics",
        text=[
            f"Validation samples: {m['n_positive']} landslide, {m['n_negative']} non-landslide "
            f"({figures['negatives']}). Predicted landslide where probability >= "
            f"{m['threshold']:g}."
        ],
        tables=[
            Table(
                ["Metric", "Value"],
                [
                    ["ROC-AUC", m["roc_auc"]],
                    ["Accuracy", m["accuracy"]],
                    ["Precision", m["precision"]],
                    ["Recall", m["recall"]],
                    ["F1", m["f1"]],
                    ["Cohen's kappa", m["kappa"]],
                ],
                caption="Metrics (scikit-learn)",
            ),
            Table(
                ["", "Predicted landslide", "Predicted not landslide"],
                [
                    ["Landslide", m["true_positive"], m["false_negative"]],
                    ["Not landslide", m["false_positive"], m["true_negative"]],
                ],
                caption="Confusion matrix",
            ),
        ],
        images=[Image(roc_image, "ROC curve of the validation samples")] if roc_image else [],
    )


def _rates_section(curves: dict[str, RateCurve]) -> Section:
    rows = [
        [
            f"{name.capitalize()} rate",
            curve.n_landslides,
            curve.auc,
            curve.landslides_in_top(10),
            curve.landslides_in_top(20),
        ]
        for name, curve in curves.items()
    ]
    return Section(
        "Success and prediction rates",
        text=[
            "Cumulative share of landslides against cumulative share of the area ranked by "
            "decreasing susceptibility; an area under the curve of 0.5 is no better than "
            "random."
        ],
        tables=[
            Table(
                ["Curve", "Landslides", "AUC", "% landslides in top 10 % area", "in top 20 %"],
                rows,
            )
        ],
        images=[Image(rates_png(curves), "Success- and prediction-rate curves")],
    )


def _classes_section(figures: dict[str, Any]) -> Section:
    classes = figures["classes"]
    rows = [
        [
            c["class"],
            c["name"],
            c.get("upper_break"),
            c["pixels"],
            c["area_share"],
            c["landslides"],
            c["landslide_share"],
            c["frequency_ratio"],
        ]
        for c in classes
    ]
    return Section(
        "Susceptibility classes",
        text=[figures["classing"]],
        tables=[Table(CLASS_COLUMNS, rows)],
        images=[Image(classes_png(classes), "Area share and landslide share per class")],
    )


def build_report(figures: dict[str, Any], curves: dict[str, RateCurve], roc: Roc | None) -> str:
    """The HTML report of an evaluation (see :func:`~.evaluate.run_evaluate`).

    Args:
        figures: The evaluation's figures (inputs, notes, metrics, classes...).
        curves: Rate curves by name (``success``, ``prediction``).
        roc: ROC curve points, or ``None`` when the samples hold one class only.
    """
    roc_image = roc_png(roc, figures["metrics"]["roc_auc"]) if roc is not None else None
    inputs = Section(
        "Inputs",
        text=figures["notes"],
        tables=[Table(["Item", "Value"], [[k, v] for k, v in figures["inputs"].items()])],
    )
    sections = [
        inputs,
        _metrics_section(figures, roc_image),
        _rates_section(curves),
        _classes_section(figures),
    ]
    return html_report("Landslide susceptibility evaluation", sections, footer="Slidewise")


def report_json(
    figures: dict[str, Any],
    curves: dict[str, RateCurve],
    roc: Roc | None,
    histogram: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """Every number of the evaluation: the figures, the curves and the raster histogram.

    Args:
        figures: The evaluation's figures.
        curves: Rate curves by name.
        roc: ROC curve points (thinned to about 2000), or ``None``.
        histogram: ``(edges, counts)`` of the probability raster.
    """
    full = dict(figures)
    full["curves"] = {name: c.as_json() for name, c in curves.items()}
    if roc is not None:
        x, y = thin(roc[0], roc[1])
        full["roc_curve"] = {"fpr": x, "tpr": y}
    full["histogram"] = {"edges": histogram[0].tolist(), "counts": histogram[1].tolist()}
    return full
