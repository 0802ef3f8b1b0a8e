"""Masked-autoencoder pre-training of a CNN encoder (SparK-like, simplified).

Each chip is cut into square patches (``PATCH_SIZE``, 16 px by default; 32 px
is the encoder's output stride), a share ``MASK_RATIO`` (0.75) of them is
drawn at random per chip and set to 0 in the normalised input (the band
mean). SparK (Tian et al. 2023, "Designing BERT for convolutional networks")
runs sparse convolutions so that masked patches never leak into the
features; here the zeros pass through ordinary convolutions (the
simplification). A light decoder (two 3x3 convolutions on the deepest
features and a per-cell linear projection to the pixels of the stride-32
cell, like MAE's per-patch linear head) reconstructs the image; the loss is
the mean squared error on the masked patches only, against the normalised
pixels. ``NORM_PIX`` switches to MAE's ``norm_pix_loss`` targets (each patch
normalised to zero mean and unit variance). Predicting zeros is the
baseline: a loss below it means masked pixels are predicted from context.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import Log, Progress
from slidewise.engine.detection.encoders import build_encoder
from slidewise.engine.detection.pretraining import (
    EVAL_CHIPS,
    PretrainResult,
    PretrainSettings,
    fit_encoder,
)
from slidewise.engine.imagery.datasets import ChipDataset
from slidewise.engine.imagery.labels import IGNORE
from slidewise.engine.imagery.training import chip_batches


def random_patch_mask(
    batch: int,
    height: int,
    width: int,
    patch: int,
    ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random patch masks (B, 1, H, W), ``True`` = hidden.

    Exactly ``round(ratio * n)`` of the ``n`` patches of each sample are hidden
    (MAE's shuffle-and-keep sampling).

    Raises:
        ValueError: ``height`` or ``width`` not a multiple of ``patch``.
    """
    if height % patch or width % patch:
        raise ValueError(f"{height} x {width} is not a multiple of the patch size {patch}")
    gh, gw = height // patch, width // patch
    n = gh * gw
    k = round(ratio * n)
    noise = torch.rand(batch, n, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    hidden = (ranks < k).view(batch, 1, gh, gw)
    return hidden.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


def mae_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    valid: torch.Tensor,
    patch: int,
    norm_pix: bool = False,
) -> torch.Tensor:
    """Mean squared error on hidden, fully valid patches.

    Args:
        pred: Reconstruction (B, C, H, W).
        target: Normalised input (B, C, H, W).
        mask: Hidden pixels (B, 1, H, W), constant per patch.
        valid: Valid pixels (B, H, W) (not padding, not nodata).
        patch: Patch side.
        norm_pix: Normalise each target patch (all its pixels and bands) to
            zero mean and unit variance first (MAE).
    """
    p = F.unfold(pred.float(), patch, stride=patch).transpose(1, 2)  # (B, N, C*p*p)
    t = F.unfold(target.float(), patch, stride=patch).transpose(1, 2)
    if norm_pix:
        mean = t.mean(dim=-1, keepdim=True)
        var = t.var(dim=-1, keepdim=True, unbiased=False)
        t = (t - mean) / torch.sqrt(var + 1e-6)
    hidden = mask[:, :, ::patch, ::patch].flatten(1)
    whole = F.unfold(valid[:, None].float(), patch, stride=patch).min(dim=1).values > 0
    weight = (hidden & whole).float()
    per_patch = ((p - t) ** 2).mean(dim=-1)
    return (per_patch * weight).sum() / weight.sum().clamp_min(1.0)


class MaskedAutoencoder(nn.Module):
    """An encoder with a light reconstruction decoder (see the module doc).

    Args:
        encoder: smp encoder (returns features, deepest last).
        in_channels: Bands to reconstruct.
        hidden: Channels of the decoder's convolutions.
    """

    def __init__(self, encoder: nn.Module, in_channels: int, hidden: int = 256) -> None:
        super().__init__()
        self.encoder = encoder
        stride = int(getattr(encoder, "output_stride", 32))
        deepest = int(encoder.out_channels[-1])  # type: ignore[index]
        self.decoder = nn.Sequential(
            nn.Conv2d(deepest, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, in_channels * stride * stride, 1),
            nn.PixelShuffle(stride),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``x`` (B, C, H, W) from its visible patches (``mask`` True = hidden)."""
        features = self.encoder(x.masked_fill(mask, 0.0))
        return self.decoder(features[-1])


def mae_eval_loss(
    model: MaskedAutoencoder,
    dataset: ChipDataset,
    settings: PretrainSettings,
    count: int = EVAL_CHIPS,
    seed: int = 12345,
    zeros: bool = False,
) -> float:
    """MAE loss on the first ``count`` chips with fixed masks (eval mode, no augmentation).

    With ``zeros`` the loss of predicting 0 everywhere (the per-patch mean
    under ``norm_pix``) is returned: the baseline that learning must beat.
    """
    device = torch.device(settings.device)
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    total, weight = 0.0, 0
    with torch.no_grad():
        limit = min(count, len(dataset))
        for images, labels in chip_batches(dataset, range(limit), settings.batch_size):
            x = images.to(device)
            valid = labels.to(device) != IGNORE
            mask = random_patch_mask(
                len(x), x.shape[2], x.shape[3], settings.patch, settings.mask_ratio, generator
            ).to(device)
            pred = torch.zeros_like(x) if zeros else model(x, mask)
            loss = mae_loss(pred, x, mask, valid, settings.patch, settings.norm_pix)
            total += float(loss) * len(x)
            weight += len(x)
    return total / max(weight, 1)


def train_mae(
    dataset: ChipDataset,
    settings: PretrainSettings,
    log: Log = print,
    progress: Progress | None = None,
) -> PretrainResult:
    """Masked-autoencoder pre-training of ``settings.backbone`` on ``dataset``.

    Args:
        dataset: Normalised chips whose labels mark padding and nodata as
            IGNORE (every other label value counts as a valid pixel).
        settings: Settings.
        log: Receives per-epoch lines.
        progress: Receives the fraction done.
    """
    from slidewise.engine.core.runtime import seed_everything

    if not 0.0 < settings.mask_ratio < 1.0:
        raise InputError(f"MASK_RATIO must be between 0 and 1, got {settings.mask_ratio}.")
    seed_everything(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    device = torch.device(settings.device)
    channels = len(dataset.bands)
    model = MaskedAutoencoder(build_encoder(settings.backbone, channels), channels).to(device)
    before = mae_eval_loss(model, dataset, settings)
    baseline = mae_eval_loss(model, dataset, settings, zeros=True)
    log(
        f"MAE loss on {min(EVAL_CHIPS, len(dataset))} chips with fixed masks before training: "
        f"{before:.4f} (predicting zeros: {baseline:.4f})."
    )

    def batch_loss(
        x: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        mask = random_patch_mask(
            x.shape[0], x.shape[2], x.shape[3], settings.patch, settings.mask_ratio, gen
        ).to(x.device)
        pred = model(x, mask)
        return mae_loss(pred, x, mask, labels != IGNORE, settings.patch, settings.norm_pix), {}

    history = fit_encoder(model, dataset, settings, batch_loss, log, progress, generator)
    after = mae_eval_loss(model, dataset, settings)
    log(f"MAE loss with the same fixed masks after training: {after:.4f} (before {before:.4f}).")
    encoder = {k: v.detach().cpu().clone() for k, v in model.encoder.state_dict().items()}
    return PretrainResult(
        encoder,
        history,
        {"eval_loss_before": before, "eval_loss_after": after, "zeros_loss": baseline},
    )
