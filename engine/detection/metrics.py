"""COCO-style detection metrics for landslide boxes, computed by pycocotools.

:func:`detection_map` returns the COCO mean average precision over IoU
thresholds 0.50:0.05:0.95 (``map``) and at IoU 0.5 (``map50``), with COCO's
101-point interpolated precision, up to 100 detections per image and every
box size. There is one class (landslide), so the means run over IoU
thresholds only. Images without ground-truth boxes take part: their
detections are false positives.

The ground truth and the detections are handed to pycocotools in memory
(boxes ``x1, y1, x2, y2`` in pixels are converted to COCO's ``x, y, w, h``);
its console output is suppressed.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_DETECTIONS = 100


def _xywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def detection_map(
    gt_boxes: Sequence[np.ndarray],
    det_boxes: Sequence[np.ndarray],
    det_scores: Sequence[np.ndarray],
    sizes: Sequence[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """COCO mAP (IoU 0.50:0.95) and mAP@0.5 of single-class detections.

    Args:
        gt_boxes: Per image, ``(N, 4)`` true boxes ``x1, y1, x2, y2``.
        det_boxes: Per image, ``(M, 4)`` detected boxes.
        det_scores: Per image, ``(M,)`` detection scores.
        sizes: Per image ``(width, height)`` (only recorded; optional).

    Returns:
        ``{"map", "map50", "map75", "mar100", "images", "gt_boxes", "detections"}``;
        the precisions are NaN when there is no ground-truth box at all, and
        0 when there are boxes but no detections.
    """
    if not (len(gt_boxes) == len(det_boxes) == len(det_scores)):
        raise ValueError("gt_boxes, det_boxes and det_scores need one entry per image")
    coco = _coco_records(gt_boxes, det_boxes, det_scores, sizes)
    out: dict[str, Any] = {
        "images": len(coco.images),
        "gt_boxes": len(coco.annotations),
        "detections": len(coco.results),
    }
    if not coco.annotations:
        return {**out, "map": math.nan, "map50": math.nan, "map75": math.nan, "mar100": math.nan}
    if not coco.results:
        return {**out, "map": 0.0, "map50": 0.0, "map75": 0.0, "mar100": 0.0}
    stats = _coco_stats(coco)

    def clean(v: float) -> float:
        return math.nan if v < 0 else v

    return {
        **out,
        "map": clean(stats[0]),
        "map50": clean(stats[1]),
        "map75": clean(stats[2]),
        "mar100": clean(stats[8]),
    }


@dataclass
class _CocoRecords:
    """Images, ground-truth annotations and detection results in COCO's format."""

    images: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)


def _coco_records(
    gt_boxes: Sequence[np.ndarray],
    det_boxes: Sequence[np.ndarray],
    det_scores: Sequence[np.ndarray],
    sizes: Sequence[tuple[int, int]] | None,
) -> _CocoRecords:
    """The boxes of :func:`detection_map` as COCO records (``x, y, w, h``; ids from 1).

    Raises:
        ValueError: an image with another number of boxes than scores.
    """
    coco = _CocoRecords()
    for i, gt in enumerate(gt_boxes):
        w, h = sizes[i] if sizes is not None else (0, 0)
        coco.images.append({"id": i + 1, "width": int(w), "height": int(h)})
        for x, y, bw, bh in _xywh(gt):
            coco.annotations.append(
                {
                    # ids start at 1: pycocotools treats id 0 as "unmatched"
                    "id": len(coco.annotations) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
        scores = np.asarray(det_scores[i], np.float64).reshape(-1)
        dets = _xywh(det_boxes[i])
        if len(scores) != len(dets):
            raise ValueError(f"image {i}: {len(dets)} boxes but {len(scores)} scores")
        for (x, y, bw, bh), s in zip(dets, scores, strict=True):
            coco.results.append(
                {"image_id": i + 1, "category_id": 1, "bbox": [x, y, bw, bh], "score": float(s)}
            )
    return coco


def _coco_stats(coco: _CocoRecords) -> list[float]:
    """pycocotools' twelve summary figures (its console output suppressed)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": coco.images,
            "annotations": coco.annotations,
            "categories": [{"id": 1, "name": "landslide"}],
        }
        gt.createIndex()
        dt = gt.loadRes(coco.results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.maxDets = [1, 10, MAX_DETECTIONS]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]
