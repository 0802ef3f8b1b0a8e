"""The HTML report of a landslide map evaluation (``evaluatemapping``).

:class:`ReportCollector` rides along the strip loop of
:func:`~slidewise.engine.mapping.evaluate.evaluate_rasters`: it counts the
evaluated pixels' probabilities in bins (so precision, recall and F1 at every
threshold come without a second pass) and keeps a decimated map of hits, misses
and false alarms. :func:`mapping_report` turns the figures into a
:class:`~slidewise.engine.core.report.Report`: summary in plain words, the map,
the precision-recall / F1-threshold curves, the confusion matrix, object
figures and the inputs with their hashes. Shares are in per cent everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slidewise.engine.core.report import (
    Image,
    Report,
    Section,
    Table,
    confusion_image,
    percent,
    pr_threshold_image,
)
from slidewise.engine.imagery.thumbnails import (
    THUMBNAIL_SIDE,
    Overview,
    outcome_codes,
    outcome_thumbnail,
)

#: Probability bins of the threshold curves (edges 0, 0.01, ..., 1).
CURVE_BINS = 100

#: Plain labels of the pixel figures (all shares, shown in per cent).
PIXEL_LABELS = {
    "precision": "Precision (share of mapped landslide pixels that are landslide)",
    "recall": "Recall (share of landslide pixels mapped)",
    "f1": "F1 (harmonic mean of precision and recall)",
    "iou": "IoU (intersection over union of mapped and reference landslides)",
    "accuracy": "Accuracy (share of pixels classed right)",
}
#: Plain labels of the object figures; the rates are shares (per cent).
OBJECT_LABELS = {
    "reference_objects": "Reference landslides (connected areas)",
    "reference_objects_hit": "Reference landslides touched by the map",
    "object_hit_rate": "Object hit rate (share of reference landslides the map touches)",
    "predicted_objects": "Mapped landslides (connected areas)",
    "predicted_objects_hit": "Mapped landslides that touch a reference landslide",
    "predicted_object_precision": "Object precision (share of mapped landslides that hit one)",
    "landslide_blobs": "Labelled landslide blobs",
    "landslide_blobs_hit": "Landslide blobs with a mapped pixel",
    "hit_rate": "Hit rate (share of landslide blobs with a mapped pixel)",
    "non_landslide_blobs": "Labelled non-landslide blobs",
    "non_landslide_blobs_hit": "Non-landslide blobs with a mapped pixel",
    "false_alarm_rate": "False-alarm rate (share of non-landslide blobs with a mapped pixel)",
}
RATES = {
    "object_hit_rate",
    "predicted_object_precision",
    "hit_rate",
    "false_alarm_rate",
}


@dataclass
class ReportCollector:
    """Histograms of the evaluated probabilities and a decimated outcome map.

    Attributes:
        width: Raster width (pixels).
        height: Raster height (pixels).
        threshold: The evaluated threshold (landslide where >= it).
        slides: Counts of landslide pixels per probability bin.
        others: Counts of non-landslide pixels per probability bin.
        rows: Decimated outcome rows (see :func:`outcome_codes`).
        binary: Whether every evaluated value was 0 or 1 (a mask, not probabilities).
    """

    width: int
    height: int
    threshold: float
    slides: np.ndarray = field(default_factory=lambda: np.zeros(CURVE_BINS, np.int64))
    others: np.ndarray = field(default_factory=lambda: np.zeros(CURVE_BINS, np.int64))
    rows: list[np.ndarray] = field(default_factory=list)
    binary: bool = True

    @property
    def step(self) -> int:
        """Decimation step of the outcome map."""
        return max(1, int(np.ceil(max(self.width, self.height) / THUMBNAIL_SIDE)))

    def add(self, top: int, values: np.ndarray, slide: np.ndarray, evaluated: np.ndarray) -> None:
        """Count one strip starting at row ``top`` (``values``: prediction band)."""
        v = values[evaluated]
        if self.binary:
            self.binary = bool(np.all((v == 0) | (v == 1)))
        bins = np.clip(v * CURVE_BINS, 0, CURVE_BINS - 1).astype(np.int64)
        bins += CURVE_BINS * slide[evaluated]  # one pass: landslide pixels in the upper half
        counts = np.bincount(bins, minlength=2 * CURVE_BINS)
        self.others += counts[:CURVE_BINS]
        self.slides += counts[CURVE_BINS:]
        first, step = (-top) % self.step, self.step
        rows = (slice(first, None, step), slice(None, None, step))
        with np.errstate(invalid="ignore"):
            predicted = evaluated[rows] & (values[rows] >= self.threshold)
        self.rows.extend(outcome_codes(predicted, slide[rows], evaluated[rows]))

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(thresholds, precision, recall)`` at the bin edges 0 .. 0.99."""
        tp = np.cumsum(self.slides[::-1])[::-1].astype(np.float64)
        fp = np.cumsum(self.others[::-1])[::-1].astype(np.float64)
        total = max(1.0, float(self.slides.sum()))
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)  # nothing mapped
        return np.arange(CURVE_BINS) / CURVE_BINS, precision, tp / total

    def best_threshold(self) -> tuple[float, float] | None:
        """The threshold (a bin edge) with the best pixel F1 on this reference, and that F1.

        ``None`` for a 0/1 map or a reference without landslide pixels. On a few
        labelled images of a new region it is the threshold to map that region with:
        a model's stored threshold was tuned on its own validation images.
        """
        if self.binary or not self.slides.sum():
            return None
        thresholds, precision, recall = self.curve()
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
        best = int(np.argmax(f1))
        return float(thresholds[best]), float(f1[best])

    def overview(self, transform: Any, crs: str) -> Overview:
        """The decimated outcome codes with their grid."""
        codes = np.ma.masked_equal(np.asarray(self.rows, dtype=np.uint8), 255)
        grid = transform @ transform.scale(self.step, self.step)
        left, top = transform.c, transform.f
        right = left + transform.a * self.width
        bottom = top + transform.e * self.height
        size = (abs(grid.a), abs(grid.e))
        return Overview(codes, size, (left, right, bottom, top), crs, grid)


def summary_rows(figures: dict[str, Any]) -> list[tuple[str, Any]]:
    """The key figures, labelled, shares in per cent."""
    rows: list[tuple[str, Any]] = [
        (f"{label.split(' (')[0]} (%)", percent(figures[key], 2))
        for key, label in PIXEL_LABELS.items()
        if key != "accuracy"
    ]
    rows.append(("MCC (Matthews correlation, -1 to 1)", figures["mcc"]))
    for key in ("object_hit_rate", "predicted_object_precision", "hit_rate", "false_alarm_rate"):
        if key in figures:
            rows.append((OBJECT_LABELS[key].split(" (")[0] + " (%)", percent(figures[key], 2)))
    rows.append(("Threshold (landslide where the map is at or above it)", figures["threshold"]))
    if "best_threshold" in figures:
        rows.append(("Best threshold on this reference (F1 at it)", best_text(figures)))
    rows.append(("Evaluated pixels", figures["evaluated_pixels"]))
    return rows


def best_text(figures: dict[str, Any]) -> str:
    """``0.06 (F1 62.1 %)``: the best threshold and its F1."""
    return f"{figures['best_threshold']:.2f} (F1 {100 * figures['best_f1']:.1f} %)"


def _pixel_section(figures: dict[str, Any], collector: ReportCollector | None) -> Section:
    table = Table(
        ["Figure (landslide class, pixels)", "Value (%)"],
        [[label, percent(figures[key], 2)] for key, label in PIXEL_LABELS.items()],
    )
    mcc = Table(["Figure", "Value (-1 to 1)"], [["MCC (Matthews correlation)", figures["mcc"]]])
    images: list[Image] = []
    if collector is not None and not collector.binary:
        t, p, r = collector.curve()
        images.append(pr_threshold_image(t, p, r, figures["threshold"]))
    images.append(confusion_image(figures["confusion_matrix"]["matrix"], what="pixels"))
    text = (
        []
        if images[0].key == "precision_recall"
        else [
            "The map holds 0/1 values only: no threshold curve (give the probability map "
            "for the precision-recall and F1-threshold curves)."
        ]
    )
    if "best_threshold" in figures:
        text.append(
            f"The best threshold on this reference is {best_text(figures)}. A model's stored "
            "threshold was chosen on its own validation images; on a few labelled images of "
            "a new region, this one is the threshold to map the rest of it with (Map "
            "landslides, THRESHOLD)."
        )
    return Section("Pixels", text=text, tables=[table, mcc], images=images, key="pixels")


def _objects_section(figures: dict[str, Any]) -> Section:
    rows = [
        [label, percent(figures[key], 2) if key in RATES else figures[key]]
        for key, label in OBJECT_LABELS.items()
        if key in figures
    ]
    return Section(
        "Objects",
        text=["Objects are 4-connected areas of evaluated pixels; rates are in per cent."],
        tables=[Table(["Figure", "Value"], rows)],
        key="objects",
    )


def _inputs_text(figures: dict[str, Any]) -> list[str]:
    return [
        f"Prediction: {figures['prediction']} (landslide where >= {figures['threshold']}).",
        f"Reference: {figures['reference']} ({figures['reference_kind']}; landslide values "
        f"{figures['landslide_values']}, ignored {figures['ignore_values']}"
        + ("; warped to the prediction grid" if figures["reference_warped"] else "")
        + ").",
    ]


def mapping_report(
    figures: dict[str, Any],
    collector: ReportCollector | None = None,
    map_grid: tuple[Any, str] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Report:
    """The report of a map evaluation.

    Args:
        figures: From :func:`~slidewise.engine.mapping.evaluate.evaluate_rasters`.
        collector: The collector that rode along (``None``: no curves, no map).
        map_grid: ``(transform, crs)`` of the prediction (for the map).
        provenance: From :func:`slidewise.engine.core.report.provenance`.
    """
    report = Report(
        "Landslide map evaluation",
        summary=summary_rows(figures),
        provenance=provenance,
        notes=_inputs_text(figures),
    )
    if collector is not None and map_grid is not None and collector.rows:
        png, data = outcome_thumbnail(collector.overview(*map_grid))
        caption = (
            "Hits (mapped landslide pixels), misses (landslide pixels not mapped) and false "
            f"alarms at threshold {figures['threshold']:g}"
        )
        report.add(Section("Map", images=[Image(png, caption, key="map", data=data)], key="map"))
    report.add(_pixel_section(figures, collector))
    report.add(_objects_section(figures))
    return report
