"""Losses for binary landslide segmentation with ignored pixels.

Every loss takes ``logits`` (B, 1, H, W) or (B, H, W), a ``target`` of the same
spatial shape with 1 = landslide and 0 = not landslide, and a boolean
``valid`` mask (False = ignored pixel: unlabelled or nodata). Ignored pixels
contribute nothing.

* ``bce``: binary cross-entropy, optionally with a positive-class weight. With
  one logit per pixel it equals the two-class cross-entropy of the
  Landslide4Sense baseline (``ce`` is accepted as an alias).
* ``dice``: soft Dice loss on the sigmoid probabilities of the whole batch.
* ``dice_bce``: Dice + BCE (the engine default).
* ``focal``: the alpha-balanced focal loss of Lin et al. (2017).
* ``lovasz``: the Lovász hinge of Berman, Rannen Triki and Blaschko (2018),
  "The Lovász-Softmax loss: a tractable surrogate for the optimization of the
  intersection-over-union measure in neural networks", CVPR, Algorithm 1 and
  Eq. 9 (binary case), computed per image. Written here from the paper.
* ``lovasz_bce``: Lovász hinge + BCE.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812

from slidewise.engine.core.errors import InputError

LOSSES = ("dice_bce", "bce", "ce", "dice", "focal", "lovasz", "lovasz_bce")

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _flat(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bring logits, target and valid to (B, N) float/bool tensors."""
    if logits.dim() == 4:
        logits = logits[:, 0]
    b = logits.shape[0]
    x = logits.reshape(b, -1).float()
    t = target.reshape(b, -1).to(x.dtype)
    v = torch.ones_like(t, dtype=torch.bool) if valid is None else valid.reshape(b, -1).bool()
    if x.shape != t.shape or x.shape != v.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, target {tuple(target.shape)} "
            "and valid must cover the same pixels"
        )
    return x, t, v


def bce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    pos_weight: float | None = None,
) -> torch.Tensor:
    """Mean binary cross-entropy over valid pixels.

    Args:
        logits: Raw scores.
        target: 1 = landslide, 0 = not landslide.
        valid: Pixels that count (all when ``None``).
        pos_weight: Weight of landslide pixels (class-imbalance handling).
    """
    x, t, v = _flat(logits, target, valid)
    pw = None if pos_weight is None else torch.tensor(float(pos_weight), device=x.device)
    per_pixel = F.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction="none")
    n = v.sum()
    return (per_pixel * v).sum() / n.clamp_min(1)


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Soft Dice loss ``1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)`` over the batch.

    Args:
        logits: Raw scores (``p = sigmoid(logits)``).
        target: 1 = landslide, 0 = not landslide.
        valid: Pixels that count (all when ``None``).
        smooth: Additive smoothing ``s`` (keeps the loss defined without landslides).
    """
    x, t, v = _flat(logits, target, valid)
    p = torch.sigmoid(x) * v
    t = t * v
    inter = (p * t).sum()
    return 1.0 - (2.0 * inter + smooth) / (p.sum() + t.sum() + smooth)


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Alpha-balanced focal loss ``-a_t (1 - p_t)^gamma log(p_t)``, mean over valid pixels."""
    x, t, v = _flat(logits, target, valid)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p = torch.sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    a_t = alpha * t + (1 - alpha) * (1 - t)
    per_pixel = a_t * (1 - p_t) ** gamma * ce
    return (per_pixel * v).sum() / v.sum().clamp_min(1)


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss (Berman et al. 2018, Eq. 8).

    Args:
        gt_sorted: Ground truth (0/1 floats) ordered by decreasing error.

    Returns:
        ``g_i = J(first i errors) - J(first i-1 errors)``, where ``J`` is the
        Jaccard loss of the set of mispredicted pixels.
    """
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def lovasz_hinge(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    per_image: bool = True,
) -> torch.Tensor:
    """Binary Lovász hinge loss (Berman, Rannen Triki and Blaschko, CVPR 2018).

    With signs ``s = 2 y - 1`` and hinge errors ``e = 1 - logit * s``, the loss is
    the dot product of ``relu(e)`` sorted in decreasing order with
    :func:`lovasz_grad` of the correspondingly sorted ground truth: the
    Lovász extension of the Jaccard (IoU) loss.

    Args:
        logits: Raw scores.
        target: 1 = landslide, 0 = not landslide.
        valid: Pixels that count (all when ``None``).
        per_image: Average the loss of each image (the paper's choice) instead
            of one loss over all pixels of the batch.
    """
    x, t, v = _flat(logits, target, valid)
    if not per_image:
        x, t, v = x.reshape(1, -1), t.reshape(1, -1), v.reshape(1, -1)
    losses = []
    for xi, ti, vi in zip(x, t, v, strict=True):
        xi, ti = xi[vi], ti[vi]
        if xi.numel() == 0:
            continue
        errors = 1.0 - xi * (2.0 * ti - 1.0)
        errors_sorted, perm = torch.sort(errors, descending=True)
        grad = lovasz_grad(ti[perm])
        losses.append(torch.dot(F.relu(errors_sorted), grad))
    if not losses:
        return logits.sum() * 0.0
    return torch.stack(losses).mean()


def make_loss(name: str = "dice_bce", pos_weight: float | None = None) -> LossFn:
    """Return the loss ``fn(logits, target, valid)`` called ``name``.

    Args:
        name: One of :data:`LOSSES`.
        pos_weight: Landslide-pixel weight for the BCE part (``bce``, ``ce``,
            ``dice_bce``, ``lovasz_bce``); ignored by the others.

    Raises:
        InputError: unknown loss name.
    """
    key = (name or "dice_bce").strip().lower().replace("+", "_").replace("-", "_")
    if key not in LOSSES:
        raise InputError(f"Unknown loss '{name}': use one of {', '.join(LOSSES)}.")

    def loss(
        logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None
    ) -> torch.Tensor:
        if key in ("bce", "ce"):
            return bce_loss(logits, target, valid, pos_weight)
        if key == "dice":
            return dice_loss(logits, target, valid)
        if key == "dice_bce":
            return bce_loss(logits, target, valid, pos_weight) + dice_loss(logits, target, valid)
        if key == "focal":
            return focal_loss(logits, target, valid)
        if key == "lovasz":
            return lovasz_hinge(logits, target, valid)
        return bce_loss(logits, target, valid, pos_weight) + lovasz_hinge(logits, target, valid)

    return loss
