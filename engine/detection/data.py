"""Landslide detection data: images with boxes, and their torch dataset.

A :class:`DetectionSet` is a list of :class:`DetectionSample`, each an image
path with ``(N, 4)`` boxes ``x1, y1, x2, y2`` in image pixels, corners on
pixel edges (a box around pixel column 0 only is ``0..1``); the readers of
Pascal VOC, COCO, mask and polygon datasets are in
:mod:`slidewise.engine.detection.annotations`. :class:`DetectionDataset`
serves the images (raw units, nodata set to the band mean) with their boxes
to a torchvision detector, optionally D4-augmented, and
:func:`fit_band_stats` fits the per-band normalisation of a detector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from slidewise.engine.core.errors import InputError

#: Class names of every detection model (index = label value; 1 = landslide).
CLASS_NAMES = ["background", "landslide"]


@dataclass
class DetectionSample:
    """One image with its landslide boxes.

    Attributes:
        image: Image file.
        boxes: ``(N, 4)`` float32 ``x1, y1, x2, y2`` in image pixels (N may be 0).
        width: Image columns (from the image file).
        height: Image rows (from the image file).
    """

    image: Path
    boxes: np.ndarray
    width: int
    height: int

    @property
    def name(self) -> str:
        """The image file name."""
        return self.image.name


@dataclass
class DetectionSet:
    """Images with boxes, and what the reader found on the way.

    Attributes:
        samples: The images (sorted by file name).
        band_names: Names of the image bands.
        source: Folder or file the set was read from.
        format: ``voc``, ``coco``, ``masks`` or ``polygons``.
        notes: What the reader decided or repaired (box frame, clipping, negatives).
    """

    samples: list[DetectionSample]
    band_names: list[str]
    source: str
    format: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def n_boxes(self) -> int:
        """Number of boxes."""
        return int(sum(len(s.boxes) for s in self.samples))

    @property
    def n_negatives(self) -> int:
        """Images without any box."""
        return sum(1 for s in self.samples if len(s.boxes) == 0)

    def subset(self, indices: Sequence[int]) -> DetectionSet:
        """A set with the samples at ``indices`` (same notes)."""
        return DetectionSet(
            [self.samples[i] for i in indices],
            self.band_names,
            self.source,
            self.format,
            list(self.notes),
        )


# --------------------------------------------------------------------------- images


def image_size(path: Path) -> tuple[int, int, int]:
    """``(height, width, bands)`` of an image file, from its header."""
    from slidewise.engine.imagery.scenes import picture_size

    return picture_size(path, "image")


def read_image(path: Path, bands: Sequence[int] | None = None) -> np.ndarray:
    """Read an image as float32 ``(C, H, W)`` in its own units; NaN = nodata.

    Args:
        path: JPEG/PNG/BMP (Pillow) or TIFF (rasterio) file.
        bands: 0-based bands to keep (all when ``None``).
    """
    from slidewise.engine.imagery.scenes import read_picture

    a = read_picture(Path(path), "image")
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] == 4 and Path(path).suffix.lower() not in (".tif", ".tiff"):
        rgba = a.astype(np.float32)
        rgba[rgba[..., 3] == 0, :3] = np.nan  # transparent = nodata
        a = rgba[..., :3]
    out = np.moveaxis(np.asarray(a, dtype=np.float32), -1, 0)
    if bands is not None:
        out = out[list(bands)]
    return np.ascontiguousarray(out)


def band_names(count: int) -> list[str]:
    """Names of ``count`` image bands: grey, red/green/blue, or band_1, band_2 ..."""
    return {1: ["grey"], 3: ["red", "green", "blue"]}.get(count) or [
        f"band_{i + 1}" for i in range(count)
    ]


# --------------------------------------------------------------------------- torch


def d4_boxes(boxes: torch.Tensor, k: int, width: int, height: int) -> torch.Tensor:
    """Transform boxes like :func:`slidewise.engine.imagery.augment.d4_transform` transforms images.

    Args:
        boxes: ``(N, 4)`` ``x1, y1, x2, y2`` on an image of ``width`` x ``height``.
        k: Transform number (0-7): ``k % 4`` counter-clockwise quarter turns,
            then a left-right mirror when ``k >= 4``.
        width: Image columns before the transform.
        height: Image rows before the transform.

    Returns:
        The boxes on the transformed image.
    """
    b = boxes.clone()
    w, h = float(width), float(height)
    for _ in range(k % 4):
        # rot90 counter-clockwise: (x, y) -> (y, w - x); the new width is h.
        b = torch.stack([b[:, 1], w - b[:, 2], b[:, 3], w - b[:, 0]], dim=1)
        w, h = h, w
    if k >= 4:
        b = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
    return b


def fit_band_stats(
    samples: Sequence[DetectionSample], bands: Sequence[int], max_images: int = 200, seed: int = 0
) -> dict[str, Any]:
    """Per-band mean and standard deviation of training images (raw units).

    Args:
        samples: Training samples.
        bands: 0-based bands.
        max_images: Images sampled (seeded) for the statistics.
        seed: Sampling seed.
    """
    rng = np.random.default_rng(seed)
    idx = np.arange(len(samples))
    if len(idx) > max_images:
        idx = np.sort(rng.choice(idx, max_images, replace=False))
    n = 0
    s = np.zeros(len(bands))
    ss = np.zeros(len(bands))
    for i in idx.tolist():
        a = read_image(samples[i].image, bands).reshape(len(bands), -1).astype(np.float64)
        ok = np.all(np.isfinite(a), axis=0)
        a = a[:, ok]
        n += a.shape[1]
        s += a.sum(axis=1)
        ss += (a * a).sum(axis=1)
    if n == 0:
        raise InputError("The training images hold no valid pixels: check the images.")
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0))
    std = np.where(std > 1e-6, std, 1.0)
    return {"kind": "fit", "mean": mean.tolist(), "std": std.tolist(), "images": len(idx)}


class DetectionDataset(Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """Samples as ``(image (C, H, W) float32 raw units, {"boxes", "labels"})``.

    Nodata pixels are set to the band mean (0 after the model's normalisation).
    With ``augment``, one random D4 transform (flips and quarter turns) is
    applied to the image and its boxes (non-square images: flips and 180
    degrees only).
    """

    def __init__(
        self,
        samples: Sequence[DetectionSample],
        bands: Sequence[int],
        fill: Sequence[float],
        augment: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        self.samples = list(samples)
        self.bands = list(bands)
        self.fill = np.asarray(fill, np.float32).reshape(-1, 1, 1)
        self.augment = augment
        self.generator = generator

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from slidewise.engine.imagery.augment import SHAPE_PRESERVING, d4_transform

        s = self.samples[index]
        a = read_image(s.image, self.bands)
        bad = ~np.isfinite(a)
        if bad.any():
            a = np.where(bad, np.broadcast_to(self.fill, a.shape), a)
        image = torch.from_numpy(a)
        boxes = torch.from_numpy(np.asarray(s.boxes, np.float32).reshape(-1, 4))
        if self.augment:
            square = image.shape[-1] == image.shape[-2]
            choices = list(range(8)) if square else list(SHAPE_PRESERVING)
            k = choices[int(torch.randint(len(choices), (1,), generator=self.generator))]
            h, w = image.shape[-2:]
            image = d4_transform(image, k).contiguous()
            boxes = d4_boxes(boxes, k, w, h)
        target = {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64)}
        return image, target
