"""Pieces of a training loop shared by the mapping and pre-training jobs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch


def chip_batches(
    dataset: Any,
    order: torch.Tensor | Sequence[int],
    batch_size: int,
    drop_single: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Stacked ``(images, targets)`` batches of ``dataset[i]`` pairs, ``i`` taken in ``order``.

    Args:
        dataset: Indexable by chip number, giving ``(image, target)`` tensors.
        order: Chip numbers in the order to draw them.
        batch_size: Chips per batch (the last batch may be smaller).
        drop_single: Skip a last batch of one chip (unless it is the only
            batch): in training it adds nothing but batch-norm noise.
    """
    idx = order.tolist() if isinstance(order, torch.Tensor) else list(order)
    for start in range(0, len(idx), batch_size):
        items = [dataset[i] for i in idx[start : start + batch_size]]
        if drop_single and len(items) < 2 and start > 0:
            continue
        yield torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])
