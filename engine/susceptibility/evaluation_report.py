"""The HTML report of a susceptibility evaluation: plots, tables and the JSON of all numbers.

:func:`build_evaluation_report` returns a :class:`~slidewise.engine.core.report.Report`:
summary (key figures and, with a model file, the method and its training), a map of
the classes over a hillshade, point metrics with the precision-recall / F1-threshold
curves and the confusion matrix, ROC, rate curves, classes, then the inputs with their
hashes. Shares are in per cent everywhere. Other figures (calibration, factor
importance) are added with ``report.add(section, after="metrics")`` before writing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slidewise.engine.core.report import (
    Image,
    Percent,
    Report,
    Section,
    Table,
    confusion_image,
    figure_png,
    new_figure,
    percent,
    pr_threshold_image,
)
from slidewise.engine.susceptibility.evaluation_statistics import RateCurve, thin

Roc = tuple[np.ndarray, np.ndarray]

#: Rate-curve styles: colour, line width, opacity. The success curve is drawn wide and
#: pale so that an identical prediction curve shows.
CURVE_STYLES = {"success": ("C2", 4.0, 0.5), "prediction": ("C0", 1.5, 1.0)}
CLASS_COLUMNS = [
    "Class",
    "Name",
    "Upper break (probability)",
    "Pixels",
    "Area share (%)",
    "Landslides",
    "Landslide share (%)",
    "Frequency ratio",
]


def roc_png(roc: Roc, auc: float) -> bytes:
    """The ROC curve of the validation samples, as PNG."""
    fig = new_figure(5, 5)
    ax = fig.add_subplot()
    ax.plot(100 * roc[0], 100 * roc[1], color="C0", label=f"ROC (AUC = {auc:.3f})")
    ax.plot([0, 100], [0, 100], color="grey", ls="--", lw=1, label="random")
    ax.set(
        xlabel="False positive rate (%)",
        ylabel="True positive rate (%)",
        xlim=(0, 100),
        ylim=(0, 100),
    )
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
            float(xi),
            top + 1,
            f"FR {fr:.2f}" if math.isfinite(fr) else "FR –",
            ha="center",
            fontsize=8,
        )
    ax.set_xticks(x, [c["name"] for c in classes])
    ax.set(ylabel="Share (%)", xlabel="Susceptibility class")
    ax.legend()
    return figure_png(fig)


def _metrics_section(figures: dict[str, Any], extra: list[Image]) -> Section:
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
                    ["ROC-AUC (0 to 1)", m["roc_auc"]],
                    ["Accuracy (%)", percent(m["accuracy"], 2)],
                    [
                        "Precision (%): share of predicted landslides that are landslides",
                        percent(m["precision"], 2),
                    ],
                    ["Recall (%): share of landslides predicted", percent(m["recall"], 2)],
                    ["F1 (%)", percent(m["f1"], 2)],
                    ["Cohen's kappa (-1 to 1)", m["kappa"]],
                ],
                caption="Metrics (scikit-learn)",
            ),
        ],
        images=extra,
        key="metrics",
    )


def sample_curve_images(
    figures: dict[str, Any], y_true: np.ndarray | None, scores: np.ndarray | None
) -> list[Image]:
    """Precision-recall / F1-threshold curves and the confusion matrix of the samples."""
    m = figures["metrics"]
    matrix = [[m["true_negative"], m["false_positive"]], [m["false_negative"], m["true_positive"]]]
    images = [confusion_image(matrix, what="validation samples")]
    if y_true is not None and scores is not None and 0 < int(np.sum(y_true)) < y_true.size:
        from sklearn.metrics import precision_recall_curve

        precision, recall, thresholds = precision_recall_curve(y_true, scores)
        keep = thin_index(thresholds.size)
        images.insert(
            0,
            pr_threshold_image(
                thresholds[keep], precision[:-1][keep], recall[:-1][keep], m["threshold"]
            ),
        )
    return images


def thin_index(n: int, target: int = 400) -> np.ndarray:
    """Indices of at most about ``target`` evenly spread points of ``n`` (ends kept)."""
    if n <= target:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, target).round().astype(int))


def _rates_section(curves: dict[str, RateCurve]) -> Section:
    rows = [
        [
            f"{name.capitalize()} rate",
            curve.n_landslides,
            curve.auc,
            Percent(curve.landslides_in_top(10), 1),
            Percent(curve.landslides_in_top(20), 1),
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
                [
                    "Curve",
                    "Landslides",
                    "AUC (0 to 1)",
                    "Landslides in top 10 % of area (%)",
                    "in top 20 % (%)",
                ],
                rows,
            )
        ],
        images=[
            Image(
                rates_png(curves),
                "Success- and prediction-rate curves",
                key="rate_curves",
                data={name: c.as_json() for name, c in curves.items()},
            )
        ],
        key="rates",
    )


def _classes_section(figures: dict[str, Any]) -> Section:
    classes = figures["classes"]
    rows = [
        [
            c["class"],
            c["name"],
            c.get("upper_break"),
            c["pixels"],
            percent(c["area_share"], 2),
            c["landslides"],
            percent(c["landslide_share"], 2),
            c["frequency_ratio"],
        ]
        for c in classes
    ]
    return Section(
        "Susceptibility classes",
        text=[figures["classing"]],
        tables=[Table(CLASS_COLUMNS, rows)],
        images=[
            Image(
                classes_png(classes),
                "Area share and landslide share per class",
                key="classes",
                data=[
                    {
                        "class": c["name"],
                        "area_percent": percent(c["area_share"], 3),
                        "landslide_percent": percent(c["landslide_share"], 3),
                        "frequency_ratio": c["frequency_ratio"],
                    }
                    for c in classes
                ],
            )
        ],
        key="classes",
    )


@dataclass
class ReportInputs:
    """What the report draws besides the figures.

    Attributes:
        y_true: Validation labels (1 = landslide) of the point metrics.
        scores: Probability at each validation sample.
        map_image: The map thumbnail (see :mod:`.evaluation_map`), or ``None``.
        model_rows: Method and training summary from the model file (may be empty).
        provenance: From :func:`slidewise.engine.core.report.provenance`.
    """

    y_true: np.ndarray | None = None
    scores: np.ndarray | None = None
    map_image: Image | None = None
    model_rows: list[tuple[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] | None = None


def summary_rows(figures: dict[str, Any], curves: dict[str, RateCurve]) -> list[tuple[str, Any]]:
    """The key figures of the evaluation, labelled, shares in per cent."""
    m = figures["metrics"]
    top10 = Percent(curves["prediction"].landslides_in_top(10), 1)
    return [
        ("ROC-AUC of the validation samples (0 to 1)", m["roc_auc"]),
        ("Prediction-rate AUC (0 to 1)", figures.get("prediction_rate_auc")),
        ("Success-rate AUC (0 to 1)", figures.get("success_rate_auc")),
        ("Validation landslides in the top 10 % of the area (%)", top10),
        (f"F1 at probability >= {m['threshold']:g} (%)", percent(m["f1"], 2)),
        (
            "Validation samples (landslide / non-landslide)",
            f"{m['n_positive']} / {m['n_negative']}",
        ),
    ]


def build_evaluation_report(
    figures: dict[str, Any],
    curves: dict[str, RateCurve],
    roc: Roc | None,
    extra: ReportInputs | None = None,
) -> Report:
    """The report of an evaluation (see :func:`~.evaluate.run_evaluate`).

    Args:
        figures: The evaluation's figures (inputs, notes, metrics, classes...).
        curves: Rate curves by name (``success``, ``prediction``).
        roc: ROC curve points, or ``None`` when the samples hold one class only.
        extra: Samples, map thumbnail, model summary and provenance.
    """
    extra = extra or ReportInputs()
    report = Report(
        "Landslide susceptibility evaluation",
        summary=summary_rows(figures, curves),
        method=extra.model_rows,
        provenance=extra.provenance,
    )
    if extra.map_image is not None:
        report.add(Section("Map", images=[extra.map_image], key="map"))
    images = sample_curve_images(figures, extra.y_true, extra.scores)
    if roc is not None:
        auc = figures["metrics"]["roc_auc"]
        x, y = thin(roc[0], roc[1])
        images.append(
            Image(
                roc_png(roc, auc),
                "ROC curve of the validation samples",
                key="roc",
                data={"fpr_percent": 100 * np.asarray(x), "tpr_percent": 100 * np.asarray(y)},
            )
        )
    report.add(_metrics_section(figures, images))
    report.add(_rates_section(curves))
    report.add(_classes_section(figures))
    report.add(
        Section(
            "Notes on the inputs",
            text=figures["notes"],
            tables=[Table(["Item", "Value"], [[k, v] for k, v in figures["inputs"].items()])],
            key="notes",
        )
    )
    return report


def build_report(figures: dict[str, Any], curves: dict[str, RateCurve], roc: Roc | None) -> str:
    """The HTML of :func:`build_evaluation_report` without samples, map or model."""
    return build_evaluation_report(figures, curves, roc).html()


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
