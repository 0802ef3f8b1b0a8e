"""Chips: square windows of scenes, their label counts, normalisation and torch dataset.

Normalisation is either fitted per band on training chips only, or the
Landslide4Sense constants (:data:`L4S_MEAN`, :data:`L4S_STD`), and is stored in
the model file so inference re-applies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from slidewise.engine.core.errors import InputError
from slidewise.engine.imagery.labels import IGNORE
from slidewise.engine.imagery.scenes import Chip, Scene

#: Per-band means of the Landslide4Sense baseline data loader
#: (iarai/Landslide4Sense-2022, ``dataset/landslide_dataset.py``).
L4S_MEAN = (
    -0.4914, -0.3074, -0.1277, -0.0625, 0.0439, 0.0803, 0.0644,
    0.0802, 0.3000, 0.4082, 0.0823, 0.0516, 0.3338, 0.7819,
)  # fmt: skip
#: Per-band standard deviations of the same data loader.
L4S_STD = (
    0.9325, 0.8775, 0.8860, 0.8869, 0.8857, 0.8418, 0.8354,
    0.8491, 0.9061, 1.6072, 0.8848, 0.9232, 0.9018, 1.2913,
)  # fmt: skip


def chip_grid(height: int, width: int, size: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Windows ``(row, col, h, w)`` of side ``size`` covering a raster.

    Windows start every ``stride`` pixels; the last row and column are shifted
    to end at the edge, so every pixel is covered and no window leaves the
    raster. Rasters smaller than ``size`` give one window of their own size.
    """
    if size < 1 or stride < 1:
        raise InputError(f"CHIP_SIZE and the stride must be positive (got {size}, {stride}).")

    def starts(n: int) -> list[int]:
        if n <= size:
            return [0]
        out = list(range(0, n - size + 1, stride))
        if out[-1] != n - size:
            out.append(n - size)
        return out

    h, w = min(size, height), min(size, width)
    return [(r, c, h, w) for r in starts(height) for c in starts(width)]


def make_chips(
    scenes: Sequence[Scene], size: int, stride: int, exclusive: bool = False
) -> list[Chip]:
    """Chips of every scene (see :func:`chip_grid`).

    Args:
        scenes: The scenes.
        size: Chip side.
        stride: Step between chips.
        exclusive: Count every pixel in one chip only (for validation; needs
            ``stride == size``): the edge chips' overlap with their neighbours
            gets ``own_row`` / ``own_col`` offsets.
    """
    if exclusive and stride != size:
        raise ValueError("exclusive chips need stride == size")
    chips = []
    for i, s in enumerate(scenes):
        for r, c, h, w in chip_grid(s.height, s.width, size, stride):
            own_r = own_c = 0
            if exclusive:
                # An edge chip starts at n - size; its neighbour covers up to
                # the multiple of size just before it.
                own_r = ((r + size - 1) // size) * size - r if r % size else 0
                own_c = ((c + size - 1) // size) * size - c if c % size else 0
            chips.append(Chip(i, r, c, h, w, own_r, own_c))
    return chips


def chip_label_stats(scenes: Sequence[Scene], chips: Sequence[Chip]) -> np.ndarray:
    """Per chip: ``[landslide pixels, labelled pixels]`` it counts (int64, shape (n, 2))."""
    out = np.zeros((len(chips), 2), dtype=np.int64)
    for k, chip in enumerate(chips):
        lab = scenes[chip.scene].read_label(chip)[chip.own_row :, chip.own_col :]
        out[k, 0] = int(np.count_nonzero(lab == 1))
        out[k, 1] = int(np.count_nonzero(lab != IGNORE))
    return out


# --------------------------------------------------------------------------- normalisation


def l4s_normalisation(bands: Sequence[int], n_bands: int) -> dict[str, Any]:
    """The Landslide4Sense constants for the selected bands (0-based).

    Raises:
        InputError: the images do not have the 14 L4S bands.
    """
    if n_bands != len(L4S_MEAN):
        raise InputError(
            f"NORMALISATION 'l4s' needs the 14 Landslide4Sense bands but the images have "
            f"{n_bands}: use NORMALISATION 'fit'."
        )
    return {
        "kind": "l4s",
        "mean": [L4S_MEAN[b] for b in bands],
        "std": [L4S_STD[b] for b in bands],
    }


def fit_normalisation(
    scenes: Sequence[Scene],
    chips: Sequence[Chip],
    bands: Sequence[int],
    max_chips: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-band mean and standard deviation of (a sample of) training chips.

    Only the chips given are read: pass training chips only. Nodata (NaN) pixels
    are skipped; a band without spread gets std 1.
    """
    rng = np.random.default_rng(seed)
    idx = np.arange(len(chips))
    if len(idx) > max_chips:
        idx = np.sort(rng.choice(idx, max_chips, replace=False))
    n = np.zeros(len(bands))
    s = np.zeros(len(bands))
    ss = np.zeros(len(bands))
    for k in idx:
        chip = chips[int(k)]
        a = scenes[chip.scene].read_image(chip, bands).reshape(len(bands), -1).astype(np.float64)
        ok = np.isfinite(a)
        n += ok.sum(axis=1)
        a = np.where(ok, a, 0.0)
        s += a.sum(axis=1)
        ss += (a * a).sum(axis=1)
    mean = s / np.maximum(n, 1)
    std = np.sqrt(np.maximum(ss / np.maximum(n, 1) - mean**2, 0.0))
    std[std < 1e-8] = 1.0
    return {
        "kind": "fit",
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "chips": len(idx),
    }


# --------------------------------------------------------------------------- torch dataset


class ChipDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Chips as ``(image (C, S, S) float32, mask (S, S) uint8)`` tensors.

    Images are normalised with the stored per-band mean and std; nodata
    becomes 0 (the band mean) and its label :data:`IGNORE`. Chips smaller than
    ``size`` (small scenes) are padded: image 0, label :data:`IGNORE`.
    """

    def __init__(
        self,
        scenes: Sequence[Scene],
        chips: Sequence[Chip],
        bands: Sequence[int],
        normalisation: dict[str, Any],
        size: int,
    ) -> None:
        self.scenes = list(scenes)
        self.chips = list(chips)
        self.bands = list(bands)
        self.size = int(size)
        self.normalisation = normalisation
        if normalisation:
            self.mean = np.asarray(normalisation["mean"], np.float32).reshape(-1, 1, 1)
            self.std = np.maximum(np.asarray(normalisation["std"], np.float32), 1e-12).reshape(
                -1, 1, 1
            )
        else:
            self.mean = np.zeros((len(self.bands), 1, 1), np.float32)
            self.std = np.ones((len(self.bands), 1, 1), np.float32)

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        chip = self.chips[index]
        scene = self.scenes[chip.scene]
        image: np.ndarray = (scene.read_image(chip, self.bands) - self.mean) / self.std
        label = scene.read_label(chip).copy()
        if chip.own_row or chip.own_col:
            label[: chip.own_row] = IGNORE
            label[:, : chip.own_col] = IGNORE
        bad = ~np.all(np.isfinite(image), axis=0)
        if bad.any():
            image[:, bad] = 0.0
            label[bad] = IGNORE
        h, w = label.shape
        if (h, w) != (self.size, self.size):
            padded = np.zeros((image.shape[0], self.size, self.size), np.float32)
            padded[:, :h, :w] = image
            lab = np.full((self.size, self.size), IGNORE, np.uint8)
            lab[:h, :w] = label
            image, label = padded, lab
        return torch.from_numpy(np.ascontiguousarray(image, np.float32)), torch.from_numpy(label)
