"""Dihedral (D4) augmentation on tensors: the same transform on image and mask.

The dihedral group D4 holds the eight symmetries of a square: four rotations by
multiples of 90 degrees, each with or without a mirror. Overhead imagery has no
preferred orientation for landslides, so all eight are equally plausible
views. The transforms work on the last two dimensions, so one call handles an
image ``(C, H, W)`` and its mask ``(H, W)`` alike.
"""

from __future__ import annotations

import torch

#: Transform numbers that keep a non-square array's shape (identity, both flips, 180 degrees).
SHAPE_PRESERVING = (0, 2, 4, 6)


def d4_transform(x: torch.Tensor, k: int) -> torch.Tensor:
    """Apply dihedral transform ``k`` (0-7) to the last two dimensions.

    ``k % 4`` quarter turns counter-clockwise, then a left-right mirror when
    ``k >= 4``. ``k = 0`` is the identity.

    Args:
        x: Tensor with at least two dimensions.
        k: Transform number in ``0..7``.

    Returns:
        The transformed tensor (a new tensor; ``x`` is unchanged).
    """
    if not 0 <= k < 8:
        raise ValueError(f"D4 transform number must be in 0..7, got {k}")
    out = torch.rot90(x, k % 4, dims=(-2, -1))
    if k >= 4:
        out = torch.flip(out, dims=(-1,))
    return out


def d4_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`d4_transform` with the same ``k`` (for test-time augmentation)."""
    if not 0 <= k < 8:
        raise ValueError(f"D4 transform number must be in 0..7, got {k}")
    out = torch.flip(x, dims=(-1,)) if k >= 4 else x
    return torch.rot90(out, -(k % 4), dims=(-2, -1))


def random_d4(
    image: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one random D4 transform to a batch, drawn per sample.

    Args:
        image: Images ``(B, C, H, W)``.
        mask: Masks ``(B, H, W)`` (any dtype); sample ``i`` gets the same
            transform as image ``i``.
        generator: Random generator (for reproducible runs).

    Returns:
        ``(image, mask)`` transformed. Non-square chips only get the four
        transforms that keep their shape.
    """
    if image.shape[0] != mask.shape[0] or image.shape[-2:] != mask.shape[-2:]:
        raise ValueError(f"image {tuple(image.shape)} and mask {tuple(mask.shape)} do not match")
    square = image.shape[-1] == image.shape[-2]
    choices = torch.arange(8) if square else torch.tensor(SHAPE_PRESERVING)
    picks = choices[torch.randint(len(choices), (image.shape[0],), generator=generator)]
    images = []
    masks = []
    for i, k in enumerate(picks.tolist()):
        images.append(d4_transform(image[i], k))
        masks.append(d4_transform(mask[i], k))
    return torch.stack(images), torch.stack(masks)
