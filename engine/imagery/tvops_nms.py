"""Pure-PyTorch ``torchvision::nms``: torchvision's exact semantics, vectorised in blocks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# nms resolves the greedy order in blocks of this many boxes.
_NMS_BLOCK = 512
# IoU entries computed at once when a block suppresses later boxes.
_NMS_TILE = 1 << 22


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` (torchvision's argument checks).

    Raises:
        ValueError: ``condition`` is false.
    """
    if not condition:
        raise ValueError(message)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression with torchvision's exact semantics.

    Boxes are visited by decreasing score (ties: lower index first); a box is
    kept unless a kept box before it overlaps it with IoU > ``iou_threshold``.
    The IoU is computed in the boxes' dtype with the same arithmetic as
    torchvision's CPU kernel and compared with the threshold as a double. The
    greedy pass resolves blocks of boxes with vectorised IoU matrices, and only
    the kept boxes of a block are compared with the boxes still in play after it.

    Args:
        boxes: ``Tensor[N, 4]`` in ``(x1, y1, x2, y2)`` format.
        scores: ``Tensor[N]`` of the same dtype.
        iou_threshold: Boxes whose IoU with a kept box exceeds it are dropped.

    Returns:
        ``int64`` indices of the kept boxes, by decreasing score.

    Raises:
        ValueError: Shapes or dtypes do not fit.
    """
    require(
        boxes.dim() == 2 and boxes.shape[1] == 4,
        f"boxes should be a Tensor[N, 4], got shape {tuple(boxes.shape)}",
    )
    require(scores.dim() == 1, f"scores should be a 1d tensor, got {scores.dim()}D")
    require(
        boxes.shape[0] == scores.shape[0],
        f"boxes and scores should have the same length, got {boxes.shape[0]} and {scores.shape[0]}",
    )
    require(boxes.dtype == scores.dtype, "boxes should have the same dtype as scores")
    require(boxes.is_floating_point(), f"boxes should be floating point, got {boxes.dtype}")
    count = boxes.shape[0]
    device = boxes.device
    if count == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    order = torch.sort(scores, dim=0, descending=True, stable=True).indices
    ordered = boxes.index_select(0, order)
    x1, y1, x2, y2 = (ordered[:, k].contiguous() for k in range(4))
    # [5, N]: x1, y1, x2, y2, area of the boxes in score order.
    table = torch.stack([x1, y1, x2, y2, (x2 - x1) * (y2 - y1)])
    threshold, compare_dtype = _comparable_threshold(iou_threshold, boxes.dtype)

    removed = np.zeros(count, dtype=bool)
    kept: list[int] = []
    for start in range(0, count, _NMS_BLOCK):
        stop = min(start + _NMS_BLOCK, count)
        block = table[:, start:stop]
        over = _iou_above(block, block, threshold, compare_dtype).cpu().numpy()
        local_removed = removed[start:stop]  # a view: updates land in `removed`
        newly: list[int] = []
        for i in range(stop - start):
            if local_removed[i]:
                continue
            newly.append(start + i)
            local_removed[i + 1 :] |= over[i, i + 1 :]
        kept.extend(newly)
        alive = np.flatnonzero(~removed[stop:]) + stop
        if not newly or alive.size == 0:
            continue
        rows = table[:, torch.tensor(newly, dtype=torch.int64, device=device)]
        tile = max(1, _NMS_TILE // len(newly))
        for first in range(0, alive.size, tile):
            cols = alive[first : first + tile]
            cols_t = torch.from_numpy(cols).to(device)
            hit = _iou_above(rows, table[:, cols_t], threshold, compare_dtype).any(dim=0)
            removed[cols[hit.cpu().numpy()]] = True
    keep = torch.tensor(kept, dtype=torch.int64, device=device)
    return order.index_select(0, keep)


def _comparable_threshold(iou_threshold: float, dtype: torch.dtype) -> tuple[float, torch.dtype]:
    """A threshold ``f`` and dtype with ``iou > f`` equal to torchvision's comparison.

    torchvision compares the IoU (in the boxes' dtype) with a double threshold.
    For float32/float16 IoUs, ``x > t`` equals ``x > f`` where ``f`` is the
    largest value of that dtype not above ``t``, so no float64 copy is needed.

    Returns:
        ``(f, dtype)``: compare an IoU cast to ``dtype`` with ``f``.
    """
    numpy_types: dict[torch.dtype, type[np.floating[Any]]] = {
        torch.float32: np.float32,
        torch.float16: np.float16,
    }
    numpy_type = numpy_types.get(dtype)
    if numpy_type is None or not np.isfinite(iou_threshold):
        return float(iou_threshold), torch.float64
    value = np.asarray(iou_threshold, dtype=numpy_type)
    if float(value) > iou_threshold:
        value = np.nextafter(value, np.asarray(-np.inf, dtype=numpy_type))
    return float(value), dtype


def _iou_above(
    rows: torch.Tensor, cols: torch.Tensor, threshold: float, compare_dtype: torch.dtype
) -> torch.Tensor:
    """``IoU(rows[:, i], cols[:, j]) > threshold`` as in torchvision's CPU kernel.

    Args:
        rows: ``[5, R]`` x1, y1, x2, y2, area.
        cols: ``[5, C]`` x1, y1, x2, y2, area.
        threshold: From :func:`_comparable_threshold`.
        compare_dtype: From :func:`_comparable_threshold`.

    Returns:
        ``[R, C]`` bool.
    """
    ax1, ay1, ax2, ay2, area_a = (v[:, None] for v in rows)
    bx1, by1, bx2, by2, area_b = (v[None, :] for v in cols)
    inter = torch.minimum(ax2, bx2).sub_(torch.maximum(ax1, bx1)).clamp_(min=0)
    inter.mul_(torch.minimum(ay2, by2).sub_(torch.maximum(ay1, by1)).clamp_(min=0))
    union = (area_a + area_b).sub_(inter)
    iou = inter.div_(union)
    return iou.to(compare_dtype) > threshold
