"""Calibrated landslide probabilities: Platt scaling fitted on validation pixels.

A segmentation network trained with Dice, a positive-class weight and
oversampled landslide chips outputs scores, not probabilities: on the
validation images of a mapping model the pixels scored 0.9 are landslide far
less often than 90 % of the time, so a threshold tuned on a few images swings
far from 0.5 and does not carry to new images. Platt scaling (Platt 1999) fits
``p = sigmoid(a * logit + b)`` on held-out pixels; :func:`fold_platt` writes
``a`` and ``b`` into the model's 1x1 output convolution, so every consumer of
the model (maplandslides, test-time augmentation, ONNX export) gets calibrated
probabilities without knowing about calibration. The expected calibration
error (ECE, 15 equal-width bins) is measured before and after.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from slidewise.engine.imagery.labels import IGNORE
from slidewise.engine.imagery.tiling import TilingOptions
from slidewise.engine.mapping.validation import validation_outputs

#: Bins of the expected calibration error.
ECE_BINS = 15
#: Most validation pixels the calibration is fitted on (a random sample).
MAX_PIXELS = 400_000
#: Fewest landslide and other pixels needed to fit a calibration.
MIN_PIXELS = 200


@dataclass(frozen=True)
class Calibration:
    """A fitted Platt scaling and what it changed.

    Attributes:
        method: ``platt`` (``p = sigmoid(a * logit + b)``).
        a: Slope on the logit (< 1 softens an overconfident model).
        b: Offset on the logit.
        pixels: Validation pixels it was fitted on.
        ece_before: Expected calibration error of the raw model on them.
        ece_after: The same after calibration.
        brier_before: Brier score of the raw model.
        brier_after: Brier score after calibration.
    """

    method: str
    a: float
    b: float
    pixels: int
    ece_before: float
    ece_after: float
    brier_before: float
    brier_after: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (stored in the model file and the job figures)."""
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def validation_logits(
    model: nn.Module,
    data: Any,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
    tiling: TilingOptions | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and 0/1 targets of the labelled validation pixels (at most :data:`MAX_PIXELS`).

    ``tiling``: predict each validation scene with the mapping job's tile layout
    instead of chip by chip (:func:`slidewise.engine.mapping.validation.validation_tiling`;
    models that standardise each tile), so that the calibration is fitted on the
    probabilities the mapping will produce.
    """
    logits, targets = [], []
    with torch.no_grad():
        for out, masks in validation_outputs(model, data, batch_size, device, tiling):
            valid = masks != IGNORE
            logits.append(out[valid])
            targets.append((masks[valid] == 1).float())
    z = torch.cat(logits) if logits else torch.zeros(0)
    y = torch.cat(targets) if targets else torch.zeros(0)
    if len(z) > MAX_PIXELS:
        keep = torch.randperm(len(z), generator=torch.Generator().manual_seed(seed))[:MAX_PIXELS]
        z, y = z[keep], y[keep]
    return z, y


def expected_calibration_error(prob: torch.Tensor, target: torch.Tensor) -> float:
    """ECE: the pixel-weighted mean gap between confidence and frequency per bin."""
    if len(prob) == 0:
        return float("nan")
    bins = (prob * ECE_BINS).long().clamp_(0, ECE_BINS - 1)
    count = torch.bincount(bins, minlength=ECE_BINS).double()
    conf = torch.bincount(bins, weights=prob.double(), minlength=ECE_BINS)
    freq = torch.bincount(bins, weights=target.double(), minlength=ECE_BINS)
    return float((conf - freq).abs().sum() / count.sum())


def fit_platt(logits: torch.Tensor, target: torch.Tensor) -> Calibration | None:
    """Fit ``sigmoid(a * logit + b)`` to the targets by maximum likelihood (L-BFGS).

    Returns:
        The calibration, or ``None`` with fewer than :data:`MIN_PIXELS` pixels of
        either class (nothing reliable to fit).
    """
    positives = int(target.sum())
    if positives < MIN_PIXELS or len(target) - positives < MIN_PIXELS:
        return None
    z = logits.double().clamp(-30, 30)
    y = target.double()
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(params[0] * z + params[1], y)
        loss.backward()
        return loss

    opt.step(closure)
    a, b = (float(v) for v in params.detach())
    if not (np.isfinite(a) and np.isfinite(b)) or a <= 0:
        return None
    before, after = torch.sigmoid(z), torch.sigmoid(a * z + b)
    return Calibration(
        method="platt",
        a=a,
        b=b,
        pixels=len(y),
        ece_before=expected_calibration_error(before, y),
        ece_after=expected_calibration_error(after, y),
        brier_before=float(((before - y) ** 2).mean()),
        brier_after=float(((after - y) ** 2).mean()),
    )


def output_layer(model: nn.Module) -> nn.Conv2d | None:
    """The convolution that produces the landslide logit of a mapping model.

    smp models: ``segmentation_head[0]``; the residual U-Net: ``head``. ``None``
    for a model of another shape.
    """
    head = getattr(model, "segmentation_head", None)
    layer = head[0] if isinstance(head, nn.Sequential) and len(head) else None
    layer = layer if layer is not None else getattr(model, "head", None)
    if isinstance(layer, nn.Conv2d) and layer.out_channels == 1:
        return layer
    return None


def fold_platt(model: nn.Module, calibration: Calibration) -> bool:
    """Write ``a`` and ``b`` into the model's output layer (``logit' = a * logit + b``).

    Returns:
        False when the model has no single-logit output convolution (nothing changed).
    """
    layer = output_layer(model)
    if layer is None:
        return False
    with torch.no_grad():
        layer.weight.mul_(calibration.a)
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(1, device=layer.weight.device))
        else:
            layer.bias.mul_(calibration.a)
        layer.bias.add_(calibration.b)
    return True


def calibrate_model(
    model: nn.Module,
    data: Any,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
    tiling: TilingOptions | None = None,
) -> Calibration | None:
    """Fit Platt scaling on the validation pixels and fold it into ``model``.

    ``tiling``: as in :func:`validation_logits`.

    Returns:
        The calibration, or ``None`` when there were too few validation pixels of
        a class or the model's output layer cannot hold it (the model is unchanged).
    """
    logits, target = validation_logits(model, data, batch_size, device, seed, tiling)
    calibration = fit_platt(logits, target)
    if calibration is None or not fold_platt(model, calibration):
        return None
    return calibration
