r"""Images to pre-train encoders on: folders of pictures, rasters or arrays as scenes.

Pre-training reads its images through the mapping datasets
(:mod:`slidewise.engine.imagery.datasets`): a folder (or file) of pictures,
GeoTIFFs or Landslide4Sense files becomes a list of scenes, and in-memory
arrays (or a map-style torch ``Dataset``) become :class:`ArrayScene`\ s.
:class:`UnlabelledScene` hides a scene's labels, so that only padding and
nodata are ignored pixels (the MAE's valid pixels).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from slidewise.engine.core.errors import InputError
from slidewise.engine.imagery.datasets import (
    PAIR_SUFFIXES,
    Chip,
    DatasetSpec,
    DecodeCache,
    LabelMapping,
    PairScene,
    Scene,
    fit_normalisation,
    l4s_normalisation,
    load_scenes,
)
from slidewise.engine.imagery.labels import IGNORE


class UnlabelledScene(Scene):
    """A scene read without its labels: every pixel is 0, so that a
    :class:`~slidewise.engine.imagery.datasets.ChipDataset` marks only padding and
    nodata as :data:`~slidewise.engine.imagery.datasets.IGNORE` (the MAE's valid pixels)."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.name, self.height, self.width = scene.name, scene.height, scene.width
        self.band_names, self.group = scene.band_names, scene.group
        self.pixel_size = scene.pixel_size
        self.labelled = False

    def read_image(self, chip: Chip, bands: Sequence[int]) -> np.ndarray:
        return self.scene.read_image(chip, bands)

    def read_label(self, chip: Chip) -> np.ndarray:
        return np.zeros((chip.height, chip.width), np.uint8)


class ArrayScene(Scene):
    """An in-memory image (C, H, W) (or a loader of one) as an unlabelled scene.

    Args:
        image: The array, or a function returning it (read at every chip).
        shape: ``(C, H, W)`` when ``image`` is a function.
        name: Name for messages.
    """

    def __init__(
        self,
        image: np.ndarray | Callable[[], np.ndarray],
        shape: tuple[int, int, int] | None = None,
        name: str = "array",
    ) -> None:
        self.image = image
        if shape is None:
            assert isinstance(image, np.ndarray)
            shape = (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]))
        count, self.height, self.width = shape
        self.name = name
        self.band_names = [f"band_{i + 1}" for i in range(count)]
        self.group = f"array:{name}"
        self.labelled = False

    def read_image(self, chip: Chip, bands: Sequence[int]) -> np.ndarray:
        a = self.image() if callable(self.image) else self.image
        win = a[list(bands), chip.row : chip.row + chip.height, chip.col : chip.col + chip.width]
        return np.asarray(win, dtype=np.float32)

    def read_label(self, chip: Chip) -> np.ndarray:
        return np.full((chip.height, chip.width), IGNORE, np.uint8)


def _chw(a: Any, in_channels: int, name: str) -> np.ndarray:
    """An image as (C, H, W) float32: tensors and arrays, (H, W, C) transposed."""
    if isinstance(a, (tuple, list)):
        a = a[0]  # (image, target) items of detection datasets
    if torch.is_tensor(a):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InputError(f"The image {name} has shape {a.shape}: images are (C, H, W).")
    if a.shape[0] != in_channels and a.shape[-1] == in_channels:
        a = np.moveaxis(a, -1, 0)
    if a.shape[0] != in_channels:
        raise InputError(
            f"The image {name} has shape {a.shape} but in_channels is {in_channels}: give "
            f"(C, H, W) or (H, W, C) images with {in_channels} bands."
        )
    return a.astype(np.float32, copy=False)


def scenes_from_images(images: Any, in_channels: int) -> list[Scene]:
    """Scenes of a list of arrays/tensors or of a map-style torch ``Dataset``.

    Dataset items may be images or ``(image, target)`` pairs; each item is read
    once here for its size, and again when its chips are read.
    """
    if isinstance(images, Dataset) and not isinstance(images, (list, tuple)):
        n = len(images)  # type: ignore[arg-type]
        scenes: list[Scene] = []
        for i in range(n):
            a = _chw(images[i], in_channels, f"#{i}")
            shape = (int(a.shape[0]), int(a.shape[1]), int(a.shape[2]))

            def load(i: int = i) -> np.ndarray:
                return _chw(images[i], in_channels, f"#{i}")

            scenes.append(ArrayScene(load, shape, name=f"item_{i}"))
        return scenes
    return [
        ArrayScene(_chw(a, in_channels, f"#{i}"), name=f"image_{i}") for i, a in enumerate(images)
    ]


def detect_dataset_type(images: str | os.PathLike[str]) -> str:
    """``l4s_h5`` for .h5 files, ``geotiff`` for rasters, ``pairs`` for pictures.

    Raises:
        InputError: missing path or no image files.
    """
    p = Path(images)
    if not p.exists():
        raise InputError(f"The images '{p}' do not exist: check IMAGES.")
    if p.is_dir() and (p / "img").is_dir():
        return "l4s_h5"
    files = [p] if p.is_file() else [f for f in p.iterdir() if f.is_file()]
    suffixes = {f.suffix.lower() for f in files}
    if ".h5" in suffixes:
        return "l4s_h5"
    if suffixes & {".tif", ".tiff", ".vrt", ".img", ".jp2"}:
        return "geotiff"
    if suffixes & set(PAIR_SUFFIXES):
        return "pairs"
    raise InputError(f"'{p}' holds no images (.tif, .h5, .png, .jpg): choose a folder of images.")


def image_scenes(
    images: str | os.PathLike[str],
    masks: str | os.PathLike[str] | None = None,
    dataset_type: str = "auto",
    mapping: LabelMapping | None = None,
) -> list[Scene]:
    """Scenes of an image folder (or file), labelled when ``masks`` are given.

    Raises:
        InputError: unknown type, unreadable or mismatched files, different band counts.
    """
    kind = detect_dataset_type(images) if dataset_type in ("", "auto") else dataset_type
    mapping = mapping or LabelMapping()
    if masks or kind != "pairs":
        spec = DatasetSpec(kind, str(images), str(masks) if masks else None, None, mapping)
        return load_scenes(spec, "pre-training", require_labels=bool(masks))
    p = Path(images)
    files = (
        [p]
        if p.is_file()
        else sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in PAIR_SUFFIXES)
    )
    cache = DecodeCache(64)
    scenes: list[Scene] = [PairScene(f, None, mapping, cache) for f in files]
    counts = {len(s.band_names) for s in scenes}
    if len(counts) > 1:
        raise InputError(
            f"The images in '{p}' have different band counts ({sorted(counts)}): use images "
            "with the same bands."
        )
    return scenes


def choose_chip_size(scenes: Sequence[Scene], chip_size: int | None, patch: int) -> int:
    """The chip side: ``chip_size`` (or the smallest image side, at most 256) checked.

    Raises:
        InputError: not a multiple of 32 and of ``patch``.
    """
    if chip_size is None:
        smallest = min(min(s.height, s.width) for s in scenes)
        chip_size = max(32, min(256, smallest // 32 * 32))
    size = int(chip_size)
    if size % 32 or size % patch:
        raise InputError(
            f"CHIP_SIZE ({size}) must be a multiple of 32 (the encoder's output stride) and "
            f"of PATCH_SIZE ({patch})."
        )
    return size


def resolve_normalisation(
    value: str | dict[str, Any] | None,
    scenes: Sequence[Scene],
    chips: Sequence[Chip],
    bands: Sequence[int],
    seed: int,
) -> dict[str, Any]:
    """Per-band normalisation: a given ``{"mean", "std"}``, or ``fit``, ``l4s``, ``none``.

    Raises:
        InputError: wrong number of values, or an unknown kind.
    """
    if isinstance(value, dict):
        if len(value.get("mean", [])) != len(bands) or len(value.get("std", [])) != len(bands):
            raise InputError(
                f"The normalisation needs {len(bands)} mean and std values (one per band)."
            )
        return dict(value)
    kind = (value or "fit").strip().lower()
    if kind == "fit":
        return fit_normalisation(scenes, chips, bands, seed=seed)
    if kind == "l4s":
        return l4s_normalisation(bands, len(scenes[0].band_names))
    if kind == "none":
        return {}
    raise InputError(f"Unknown NORMALISATION '{value}': use fit, l4s or none.")
