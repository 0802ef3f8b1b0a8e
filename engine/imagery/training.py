"""Pieces of a training loop shared by the mapping, detection and pre-training jobs."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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


#: Called after every batch of a pass (progress).
OnBatch = Callable[[], None]

#: A validation batch (forward pass only) costs about a third of a training step.
VALID_BATCH_WEIGHT = 1 / 3


def validation_work(n_items: int, batch_size: int) -> float:
    """The weight of one validation pass over ``n_items`` in batches of ``batch_size``."""
    return math.ceil(n_items / max(1, batch_size)) * VALID_BATCH_WEIGHT


@dataclass
class StepCounter:
    """Reports the fraction of a training run done after every batch.

    Training batches count 1, validation batches :data:`VALID_BATCH_WEIGHT`; the
    protocol writer skips changes under 0.1 %, so reporting every batch is cheap.

    Attributes:
        total: Weighted batches of the whole run (more than 0).
        progress: Receives the fraction done in [0, 1]; ``None``: nothing is reported.
        done: Weighted batches done so far.
    """

    total: float
    progress: Callable[[float], None] | None = None
    done: float = 0.0

    def step(self, weight: float = 1.0) -> None:
        """One more batch (of ``weight`` training steps)."""
        self.done += weight
        if self.progress is not None:
            self.progress(min(1.0, self.done / self.total))

    def valid_step(self) -> None:
        """One more validation batch."""
        self.step(VALID_BATCH_WEIGHT)

    def finish(self) -> None:
        """The run ended (early stop, or batches of one chip skipped): report 1."""
        self.done = self.total
        if self.progress is not None:
            self.progress(1.0)
