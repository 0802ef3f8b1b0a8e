"""Losses for landslide segmentation, checked against small hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from slidewise.engine.core.errors import InputError
from slidewise.engine.imagery.losses import (
    LOSSES,
    bce_loss,
    dice_loss,
    focal_loss,
    lovasz_grad,
    lovasz_hinge,
    make_loss,
)


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    # One image of four pixels, no ties among the hinge errors.
    logits = torch.tensor([2.0, -1.0, 0.5, -0.25]).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 2, 2)
    return logits, target


def test_lovasz_hinge_hand_computed() -> None:
    logits, target = _case()
    # errors 1 - x*s: [-1, 0, 1.5, 1.25]; sorted desc [1.5 (y0), 1.25 (y1), 0 (y0), -1 (y1)]
    # Jaccard losses of the growing error sets: [1/3, 2/3, 3/4, 1] -> grad [1/3, 1/3, 1/12, 1/4]
    # loss = 1.5/3 + 1.25/3 = 0.91666...
    assert lovasz_hinge(logits, target).item() == pytest.approx(2.75 / 3, abs=1e-6)


def test_lovasz_grad_hand_computed() -> None:
    grad = lovasz_grad(torch.tensor([0.0, 1.0, 0.0, 1.0]))
    expected = torch.tensor([1 / 3, 1 / 3, 1 / 12, 1 / 4])
    assert torch.allclose(grad, expected, atol=1e-6)
    # The gradient sums to the Jaccard loss of predicting everything wrong: 1.
    assert grad.sum().item() == pytest.approx(1.0)


def test_lovasz_zero_for_confident_correct_prediction() -> None:
    target = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 2, 2)
    logits = (4.0 * (2 * target - 1)).unsqueeze(1)
    assert lovasz_hinge(logits, target).item() == 0.0


def test_lovasz_ignores_invalid_pixels_and_averages_images() -> None:
    logits, target = _case()
    extra = torch.tensor([9.0, -9.0, 9.0, -9.0]).view(1, 1, 2, 2)
    both = torch.cat([logits, logits])
    t2 = torch.cat([target, target])
    valid = torch.ones_like(t2, dtype=torch.bool)
    assert lovasz_hinge(both, t2, valid).item() == pytest.approx(2.75 / 3, abs=1e-6)
    # Invalid pixels contribute nothing whatever their logits.
    wide_logits = torch.cat([logits.view(1, 1, 1, 4), extra.view(1, 1, 1, 4)], dim=-1)
    wide_target = torch.cat([target.view(1, 1, 4), torch.ones(1, 1, 4)], dim=-1)
    wide_valid = torch.tensor([[[True] * 4 + [False] * 4]])
    got = lovasz_hinge(wide_logits, wide_target, wide_valid)
    assert got.item() == pytest.approx(2.75 / 3, abs=1e-6)


def test_lovasz_has_gradient() -> None:
    logits, target = _case()
    logits.requires_grad_(True)
    lovasz_hinge(logits, target).backward()
    assert logits.grad is not None and torch.any(logits.grad != 0)


def test_dice_hand_computed() -> None:
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    target = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 2, 2)
    # 1 - (2 * 1 + 1) / (2 + 2 + 1) = 0.4
    assert dice_loss(logits, target).item() == pytest.approx(0.4)
    valid = torch.tensor([True, True, True, False]).view(1, 2, 2)
    # p.v = 1.5, t.v = 1, intersection 0.5: 1 - (1 + 1) / (1.5 + 1 + 1)
    assert dice_loss(logits, target, valid).item() == pytest.approx(1 - 2 / 3.5)


def test_bce_matches_torch_on_valid_pixels() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 4, 4, generator=g)
    target = (torch.rand(2, 4, 4, generator=g) > 0.7).float()
    valid = torch.rand(2, 4, 4, generator=g) > 0.3
    ref = F.binary_cross_entropy_with_logits(logits[:, 0][valid], target[valid])
    assert bce_loss(logits, target, valid).item() == pytest.approx(ref.item(), rel=1e-6)
    pw = torch.tensor(3.0)
    ref_w = F.binary_cross_entropy_with_logits(logits[:, 0][valid], target[valid], pos_weight=pw)
    assert bce_loss(logits, target, valid, 3.0).item() == pytest.approx(ref_w.item(), rel=1e-6)


def test_focal_reduces_to_weighted_bce() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 1, 3, 3, generator=g)
    target = (torch.rand(1, 3, 3, generator=g) > 0.5).float()
    # gamma = 0, alpha = 0.5: half the BCE.
    half = 0.5 * bce_loss(logits, target).item()
    assert focal_loss(logits, target, alpha=0.5, gamma=0.0).item() == pytest.approx(half, rel=1e-6)
    # A confident correct pixel costs far less than under BCE.
    x = torch.tensor([[[[4.0]]]])
    t = torch.ones(1, 1, 1)
    assert focal_loss(x, t).item() < 1e-3 * bce_loss(x, t).item()


def test_make_loss_names_and_errors() -> None:
    logits, target = _case()
    valid = torch.ones_like(target, dtype=torch.bool)
    for name in LOSSES:
        value = make_loss(name, pos_weight=2.0)(logits, target, valid)
        assert math.isfinite(value.item())
    combo = make_loss("dice_bce")(logits, target, valid).item()
    expected = bce_loss(logits, target).item() + dice_loss(logits, target).item()
    assert combo == pytest.approx(expected)
    with pytest.raises(InputError, match="Unknown loss"):
        make_loss("hinge2")
