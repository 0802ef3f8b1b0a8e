"""The validation report of a trained detector (``traindetection`` ``OUTPUT_REPORT``).

Why at training: the validation images are the one place where a detector meets
reference boxes it was not fitted on, and the user who trains a detector asks how
good it is and at which score to cut. The report runs the selected model on the
validation images once and shows: the key figures (mAP, and precision, recall and F1
of boxes at the score threshold detection uses by default), the method and training
from the model file, a validation image with its reference and detected boxes, the
precision-recall and F1-threshold curves (a detection matches a reference box at IoU
>= 0.5, greedily by score, as in VOC/COCO), the box counts and the training curve.
Shares are in per cent, as in every Slidewise report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.engine.core.report import (
    Image,
    Report,
    Section,
    Table,
    figure_png,
    new_figure,
    percent,
    pr_threshold_image,
)

#: The score threshold of detectlandslides' detector mode (its SCORE_THRESHOLD default).
SCORE_THRESHOLD = 0.5
MATCH_IOU = 0.5
CURVE_THRESHOLDS = np.arange(100) / 100


@dataclass
class Matches:
    """Detections matched to reference boxes over all validation images.

    Attributes:
        scores: Score of every detection.
        hits: Whether each detection matched a reference box (IoU >= 0.5).
        n_reference: Number of reference boxes.
    """

    scores: np.ndarray
    hits: np.ndarray
    n_reference: int

    def at(self, threshold: float) -> tuple[int, int, int]:
        """``(tp, fp, fn)`` boxes when detections scoring below ``threshold`` are dropped."""
        kept = self.scores >= threshold
        tp = int(np.sum(self.hits & kept))
        return tp, int(np.sum(~self.hits & kept)), self.n_reference - tp

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(thresholds, precision, recall)`` on :data:`CURVE_THRESHOLDS`."""
        precision, recall = [], []
        for t in CURVE_THRESHOLDS:
            tp, fp, _ = self.at(float(t))
            precision.append(tp / (tp + fp) if tp + fp else np.nan)  # nothing detected
            recall.append(tp / self.n_reference if self.n_reference else 0.0)
        return CURVE_THRESHOLDS, np.asarray(precision), np.asarray(recall)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a`` (N, 4) and ``b`` (M, 4), ``x1, y1, x2, y2``."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_boxes(
    references: list[np.ndarray], predictions: list[tuple[np.ndarray, np.ndarray]]
) -> Matches:
    """Match detections to reference boxes image by image, greedily by decreasing score."""
    scores, hits = [], []
    for ref, (boxes, score) in zip(references, predictions, strict=True):
        order = np.argsort(-score, kind="stable")
        iou = box_iou(boxes[order], ref)
        free = np.ones(len(ref), dtype=bool)
        for row in range(len(order)):
            candidates = np.where(free, iou[row], -1.0) if len(ref) else np.zeros(0)
            best = int(np.argmax(candidates)) if candidates.size else -1
            hit = best >= 0 and candidates[best] >= MATCH_IOU
            if hit:
                free[best] = False
            hits.append(hit)
        scores.extend(score[order].tolist())
    n_ref = int(sum(len(r) for r in references))
    return Matches(np.asarray(scores, np.float64), np.asarray(hits, bool), n_ref)


def history_image(history: list[dict[str, Any]]) -> Image | None:
    """Training loss and validation mAP@0.5 (per cent) per epoch."""
    if not history:
        return None
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    loss = [h["train_loss"] for h in history]
    map50 = [percent(h.get("map50"), 2) for h in history]
    fig = new_figure(7.0, 3.5)
    left, right = fig.subplots(1, 2)
    left.plot(epochs, loss, "o-", color="C0")
    left.set(xlabel="Epoch", ylabel="Training loss", title="Training loss")
    right.plot(epochs, [np.nan if v is None else v for v in map50], "o-", color="C2")
    right.set(xlabel="Epoch", ylabel="%", title="Validation mAP at IoU 0.5", ylim=(0, 100))
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    data = {"epoch": epochs, "train_loss": loss, "valid_map50_percent": map50}
    return Image(figure_png(fig), "Training curve", key="training_curve", data=data)


def example_image(
    sample: Any, prediction: tuple[np.ndarray, np.ndarray], bands: list[int]
) -> Image:
    """The validation image with its reference boxes and detections >= the score threshold."""
    from slidewise.engine.detection.data import read_image
    from slidewise.engine.imagery.thumbnails import boxes_thumbnail

    pixels = read_image(sample.image, bands[:3] if len(bands) >= 3 else bands[:1])
    low, high = np.nanpercentile(pixels, [2, 98])
    shown = np.clip((np.nan_to_num(pixels, nan=low) - low) / max(high - low, 1e-9), 0, 1)
    shown = np.moveaxis(shown, 0, -1) if shown.shape[0] == 3 else shown[0]
    boxes, scores = prediction
    keep = scores >= SCORE_THRESHOLD
    title = f"{sample.name}: {len(sample.boxes)} reference, {int(keep.sum())} detected"
    png = boxes_thumbnail(shown, boxes[keep], scores[keep], sample.boxes, title)
    data = {
        "image": sample.name,
        "reference_boxes": np.asarray(sample.boxes).tolist(),
        "detected_boxes": boxes[keep].tolist(),
        "scores": scores[keep].tolist(),
    }
    return Image(png, f"Validation image {sample.name}", key="example", data=data)


def example_rank(sample: Any, prediction: tuple[np.ndarray, np.ndarray]) -> tuple[int, int, int]:
    """Prefer an image with hits, then with detections, then with many reference boxes."""
    boxes, scores = prediction
    kept = boxes[scores >= SCORE_THRESHOLD]
    hits = int(np.sum(box_iou(kept, sample.boxes).max(axis=1, initial=0) >= MATCH_IOU))
    return hits, min(len(kept), len(sample.boxes)), len(sample.boxes)


def detection_report(
    samples: list[Any],
    predictions: list[tuple[np.ndarray, np.ndarray]],
    bands: list[int],
    training: dict[str, Any],
) -> Report:
    """The report of a detector's validation.

    Args:
        samples: Validation samples (:class:`~.data.DetectionSample`).
        predictions: Per sample ``(boxes, scores)`` of the selected model.
        bands: 0-based bands the model reads.
        training: ``metrics`` (mAP), ``history``, ``method`` rows and ``provenance``.
    """
    matches = match_boxes([s.boxes for s in samples], predictions)
    tp, fp, fn = matches.at(SCORE_THRESHOLD)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / matches.n_reference if matches.n_reference else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    metrics = training.get("metrics") or {}
    report = Report(
        "Landslide detector validation",
        summary=[
            ("Validation mAP at IoU 0.5 (%)", percent(metrics.get("map50"), 2)),
            ("Validation mAP at IoU 0.5:0.95 (%)", percent(metrics.get("map"), 2)),
            (f"Precision at score >= {SCORE_THRESHOLD:g} (%)", percent(precision, 2)),
            (f"Recall at score >= {SCORE_THRESHOLD:g} (%)", percent(recall, 2)),
            (f"F1 at score >= {SCORE_THRESHOLD:g} (%)", percent(f1, 2)),
            ("Validation images / reference boxes", f"{len(samples)} / {matches.n_reference}"),
        ],
        method=training.get("method") or [],
        provenance=training.get("provenance"),
        notes=[
            f"A detection is a hit when it overlaps an unmatched reference box with IoU >= "
            f"{MATCH_IOU:g} (greedy by score); the score threshold {SCORE_THRESHOLD:g} is the "
            "default of Detect landslides."
        ],
    )
    best = max(range(len(samples)), key=lambda i: example_rank(samples[i], predictions[i]))
    report.add(Section("Example", images=[example_image(samples[best], predictions[best], bands)]))
    t, p, r = matches.curve()
    boxes = Table(
        ["Boxes", "Count"],
        [
            ["Hits (detections matching a reference landslide)", tp],
            ["False alarms (detections matching none)", fp],
            ["Misses (reference landslides not detected)", fn],
        ],
        caption=f"At score >= {SCORE_THRESHOLD:g} (no true negatives exist for boxes)",
    )
    curve = pr_threshold_image(t, p, r, SCORE_THRESHOLD, score_name="detection score")
    report.add(Section("Boxes", tables=[boxes], images=[curve], key="metrics"))
    history = history_image(training.get("history") or [])
    if history is not None:
        report.add(Section("Training", images=[history], key="training"))
    return report


def write_detection_report(path: str, report: Report) -> None:
    """Write the HTML and the JSON of the figures next to it (``.json``)."""
    from slidewise.engine.core.report import write_report

    write_report(path, report.html(), report.figures(), Path(path).with_suffix(".json"))
