"""The training loop shared by the encoder pre-trainings (MAE and distillation).

:class:`PretrainSettings` holds the settings of both, :func:`fit_encoder`
runs AdamW with a cosine decay per step and D4 augmentation over a
:class:`~slidewise.engine.imagery.datasets.ChipDataset`, with the loss of a
batch given by the caller.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from slidewise.engine.core.distributed import (
    batch_share,
    check_in_step,
    check_share,
    process_generator,
    share_gradients,
)
from slidewise.engine.core.job import Log, Progress
from slidewise.engine.imagery.augment import random_d4
from slidewise.engine.imagery.datasets import ChipDataset
from slidewise.engine.imagery.training import chip_batches

#: Chips measured before and after training (fixed masks, agreement).
EVAL_CHIPS = 32


@dataclass
class PretrainSettings:
    """Pre-training settings.

    Attributes:
        backbone: smp encoder name.
        mode: ``mae`` or ``distill``.
        epochs: Epochs.
        batch_size: Chips per batch.
        lr: Peak AdamW learning rate (cosine decay over all steps).
        weight_decay: AdamW weight decay.
        mask_ratio: Share of hidden patches (MAE).
        patch: Patch side in pixels (MAE).
        norm_pix: Per-patch normalised targets (MAE's ``norm_pix_loss``).
        temperature: Distillation temperature.
        distill_lambda: Weight of the distillation term (the rest: the hard loss).
        augment: Random D4 flips and rotations.
        chips_per_epoch: Chips drawn per epoch (0 = all).
        seed: Seed of weights, sampling, masks and augmentation.
        device: Torch device.
    """

    backbone: str = "resnet18"
    mode: str = "mae"
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    mask_ratio: float = 0.75
    patch: int = 16
    norm_pix: bool = False
    temperature: float = 5.0
    distill_lambda: float = 0.9
    augment: bool = True
    chips_per_epoch: int = 0
    seed: int = 0
    device: str = "cpu"


@dataclass
class PretrainResult:
    """What pre-training returns.

    Attributes:
        encoder: The encoder's state dict (CPU tensors, smp/torchvision keys, no prefix).
        history: Per-epoch records (mean losses, seconds).
        metrics: Summary figures (MAE: fixed-mask loss before and after, and the
            loss of predicting zeros).
    """

    encoder: dict[str, torch.Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


BatchLoss = Callable[
    [torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, dict[str, float]]
]


def fit_encoder(
    model: nn.Module,
    dataset: ChipDataset,
    settings: PretrainSettings,
    batch_loss: BatchLoss,
    log: Log,
    progress: Progress | None,
    generator: torch.Generator,
) -> list[dict[str, Any]]:
    """The shared loop: AdamW, cosine decay per step, D4 augmentation."""
    device = torch.device(settings.device)
    check_share(settings.batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    n = len(dataset)
    n_draw = settings.chips_per_epoch or n
    steps = max(1, settings.epochs * math.ceil(n_draw / settings.batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=steps, eta_min=settings.lr * 0.01
    )
    history: list[dict[str, Any]] = []
    done = 0
    for epoch in range(settings.epochs):
        t0 = time.time()
        model.train()
        perm = torch.randperm(n, generator=generator)
        if n_draw > n:
            perm = torch.cat([perm, torch.randint(n, (n_draw - n,), generator=generator)])
        order = perm[:n_draw].tolist()
        sums: dict[str, float] = {}
        seen = 0
        for images, labels in chip_batches(dataset, order, settings.batch_size, drop_single=True):
            if settings.augment:
                images, labels = random_d4(images, labels, generator)
            share = batch_share(len(images))
            loss, parts = batch_loss(
                images[share].to(device), labels[share].to(device), process_generator(generator)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            share_gradients(params)
            optimizer.step()
            schedule.step()
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v * len(images)
            seen += len(images)
            done += 1
            if progress is not None:
                progress(min(1.0, done / steps))
        record = {"epoch": epoch + 1, **{k: v / max(seen, 1) for k, v in sums.items()}}
        record["seconds"] = round(time.time() - t0, 2)
        history.append(record)
        parts_text = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in ("epoch",))
        log(f"epoch {epoch + 1}/{settings.epochs}: {parts_text}")
    if progress is not None:
        progress(1.0)  # also when batches of one chip were skipped
    check_in_step(model)
    model.eval()
    return history
