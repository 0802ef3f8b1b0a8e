"""Augmentation on tensors: dihedral (D4) transforms of image and mask, photometric noise.

The dihedral group D4 holds the eight symmetries of a square: four rotations by
multiples of 90 degrees, each with or without a mirror. Overhead imagery has no
preferred orientation for landslides, so all eight are equally plausible
views. The transforms work on the last two dimensions, so one call handles an
image ``(C, H, W)`` and its mask ``(H, W)`` alike.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Photometric:
    """Strength of the photometric augmentation (on normalised bands, in std units).

    Images of another sensor, season or region differ from the training images
    in brightness, contrast, colour balance and sharpness far more than in
    geometry; these perturbations make a model rely less on the absolute band
    values of its training region.

    Attributes:
        brightness: Std of a per-image offset added to every band.
        contrast: Largest relative change of the contrast (scale about the image mean).
        color: Std of a per-band offset (colour balance / hue shift).
        blur: Probability of a Gaussian blur (sigma 0.5-1.5 pixels).
        noise: Std of added Gaussian noise.
    """

    brightness: float = 0.25
    contrast: float = 0.3
    color: float = 0.1
    blur: float = 0.25
    noise: float = 0.03


def random_photometric(
    image: torch.Tensor,
    generator: torch.Generator | None = None,
    strength: Photometric | None = None,
) -> torch.Tensor:
    """Random brightness, contrast, colour balance, blur and noise, drawn per sample.

    Args:
        image: Normalised images ``(B, C, H, W)``.
        generator: Random generator (for reproducible runs).
        strength: How strong each perturbation is (default :class:`Photometric`).

    Returns:
        The perturbed images (a new tensor); masks are unchanged by these transforms.
    """
    s = strength or Photometric()
    b, c = image.shape[:2]

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(image)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(image)

    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    scale = 1.0 + s.contrast * (2.0 * uniform(b, 1, 1, 1) - 1.0)
    out = (image - mean) * scale + mean
    out = out + s.brightness * draw(b, 1, 1, 1) + s.color * draw(b, c, 1, 1)
    blur = uniform(b) < s.blur
    if bool(blur.any()):
        sigma = 0.5 + uniform(1).item()
        out[blur] = gaussian_blur(out[blur], sigma)
    return out + s.noise * draw(*image.shape)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` images (reflect padding)."""
    radius = max(1, round(2 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = image.shape[1]
    pad = torch.nn.functional.pad(image, (radius, radius, radius, radius), mode="reflect")
    out = torch.nn.functional.conv2d(pad, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return torch.nn.functional.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
