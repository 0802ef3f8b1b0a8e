"""Training data for landslide mapping: scenes, chips, spatial splits, normalisation.

Three layouts are read (``DATASET_TYPE``):

* ``pairs``: image/mask files with the same name in two folders (PNG, TIFF, JPEG).
  Masks are 0/1, 0/255, or coloured (Bijie: yellow (255, 255, 0) on black);
  see :func:`slidewise.engine.imagery.labels.decode_mask`.
* ``l4s_h5``: Landslide4Sense patches, ``image_N.h5`` (dataset ``img``,
  ``(H, W, 14)``) with ``mask_N.h5`` (dataset ``mask``, ``(H, W)``, 1 = landslide),
  paired by ``N`` (the ``TrainData/img`` + ``TrainData/mask`` layout).
* ``geotiff``: georeferenced images (a file or a folder of tiles) with label
  rasters (same grid, or any grid: aligned by nearest-neighbour warping) or
  landslide polygons rasterised on the image grid. Label values are mapped
  with :class:`LabelMapping` (for example Chattogram: 2 = landslide,
  1 = not landslide, 0 = unlabelled and ignored).

Every image becomes a :class:`Scene`; scenes are cut into square :class:`Chip`
windows. Labels use one convention: 1 = landslide, 0 = not landslide,
:data:`IGNORE` (255) = not counted (unlabelled or nodata).

Validation split (:func:`spatial_split`) never picks random pixels or random
overlapping chips, which would leak neighbouring pixels into validation:

* several independent scenes (image pairs, L4S patches, GeoTIFFs in different
  CRSs): whole scenes go to validation;
* one scene, or tiles sharing one CRS (possibly overlapping, like the
  Chattogram tiles): the extent is cut into stripes across its longer axis,
  one stripe (with landslides) becomes validation, and every training chip
  that overlaps the validation chips' extent along that axis is dropped, so
  no training pixel lies inside a validation chip.

Normalisation is either fitted per band on training chips only, or the
Landslide4Sense constants (:data:`L4S_MEAN`, :data:`L4S_STD`), and is stored in
the model file so inference re-applies it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.engine.core.errors import InputError
from slidewise.engine.imagery.chips import (
    ChipDataset,
    chip_label_stats,
    fit_normalisation,
    l4s_normalisation,
    make_chips,
)
from slidewise.engine.imagery.labels import LabelMapping
from slidewise.engine.imagery.scenes import (
    Chip,
    DecodeCache,
    H5Scene,
    PairScene,
    RasterScene,
    Scene,
)
from slidewise.engine.imagery.splits import Split, spatial_split

DATASET_TYPES = ("pairs", "l4s_h5", "geotiff")
NORMALISATIONS = ("fit", "l4s", "none")

PAIR_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
_KEY_TOKENS = ("mask", "masks", "label", "labels", "gt", "image", "images", "img")

Warn = Callable[[str], None]

# --------------------------------------------------------------------------- discovery


def _pair_key(stem: str) -> str:
    parts = [p for p in re.split(r"[_\-\s.]+", stem.lower()) if p and p not in _KEY_TOKENS]
    return "_".join(parts) or stem.lower()


def list_files(path: str | os.PathLike[str], suffixes: tuple[str, ...], what: str) -> list[Path]:
    p = Path(path)
    if not str(path):
        raise InputError(f"No {what} were given: choose a folder or a file.")
    if not p.exists():
        raise InputError(f"The {what} '{p}' do not exist: check the path.")
    if p.is_file():
        return [p]
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
    if not files:
        raise InputError(
            f"The folder '{p}' holds no {what} ({', '.join(suffixes)} files): "
            "choose another folder."
        )
    return files


def _match(images: list[Path], masks: list[Path], what: str) -> list[tuple[Path, Path]]:
    by_key: dict[str, Path] = {}
    for m in masks:
        key = _pair_key(m.stem)
        if key in by_key:
            raise InputError(
                f"Two {what} files, '{by_key[key].name}' and '{m.name}', belong to the same "
                "image name: keep one mask per image."
            )
        by_key[key] = m
    pairs, lonely = [], []
    for img in images:
        mask = by_key.pop(_pair_key(img.stem), None)
        if mask is None:
            lonely.append(img.name)
        else:
            pairs.append((img, mask))
    if lonely or by_key:
        parts = []
        if lonely:
            parts.append(f"{len(lonely)} image(s) without a {what}: {', '.join(lonely[:5])}")
        if by_key:
            extra = sorted(p.name for p in by_key.values())
            parts.append(f"{len(extra)} {what}(s) without an image: {', '.join(extra[:5])}")
        raise InputError(
            f"Images and {what}s do not match ({len(images)} images, {len(masks)} {what}s; "
            + "; ".join(parts)
            + f"): every image needs a {what} with the same file name."
        )
    return pairs


def discover_pairs(
    images: str | os.PathLike[str], masks: str | os.PathLike[str]
) -> list[tuple[Path, Path]]:
    """Pair image and mask files by name (``10009.png`` with ``10009.png``,
    ``tile_3.png`` with ``tile_3_mask.png``).

    Raises:
        InputError: missing folders, no files, or images and masks that do not match.
    """
    imgs = list_files(images, PAIR_SUFFIXES, "images")
    msks = list_files(masks, PAIR_SUFFIXES, "masks")
    return _match(imgs, msks, "mask")


def discover_l4s(
    images: str | os.PathLike[str], masks: str | os.PathLike[str] | None = None
) -> list[tuple[Path, Path | None]]:
    """Find L4S ``image_N.h5`` files and their ``mask_N.h5`` files.

    ``images`` may be the ``img`` folder, a folder holding ``img`` and ``mask``
    (``TrainData``), or one file. Without ``masks``, a sibling ``mask`` folder is
    used when it exists; otherwise the images come without masks.

    Raises:
        InputError: no ``image_*.h5`` files, or images and masks that do not match.
    """
    p = Path(images)
    if p.is_dir() and (p / "img").is_dir():
        if masks in (None, "") and (p / "mask").is_dir():
            masks = p / "mask"
        p = p / "img"
    if masks in (None, "") and p.is_dir() and p.name == "img" and (p.parent / "mask").is_dir():
        masks = p.parent / "mask"
    files = list_files(p, (".h5",), "L4S images")
    imgs = [f for f in files if f.stem.lower().startswith("image")]
    if not imgs:
        raise InputError(
            f"No image_*.h5 files were found in '{p}': L4S images are named image_N.h5."
        )
    if masks in (None, ""):
        return [(f, None) for f in imgs]
    mfiles = [
        f
        for f in list_files(Path(str(masks)), (".h5",), "L4S masks")
        if f.stem.lower().startswith("mask")
    ]
    if not mfiles:
        raise InputError(
            f"No mask_*.h5 files were found in '{masks}': L4S masks are named mask_N.h5."
        )
    return list(_match(imgs, mfiles, "mask"))


def discover_rasters(
    images: str | os.PathLike[str], labels: str | os.PathLike[str] | None = None
) -> list[tuple[Path, Path | None]]:
    """Find GeoTIFF images (a file or a folder) and their label rasters by name.

    Raises:
        InputError: no rasters, or images and label rasters that do not match.
    """
    imgs = list_files(images, RASTER_SUFFIXES, "images")
    if labels in (None, ""):
        return [(f, None) for f in imgs]
    lbls = list_files(str(labels), RASTER_SUFFIXES, "label rasters")
    if len(imgs) == 1 and len(lbls) == 1:
        return [(imgs[0], lbls[0])]
    return list(_match(imgs, lbls, "label raster"))


@dataclass
class DatasetSpec:
    """Where a dataset lives and how its labels read.

    Attributes:
        kind: ``pairs``, ``l4s_h5`` or ``geotiff``.
        images: Image folder or file.
        masks: Mask/label folder or file (optional for ``l4s_h5`` with a sibling
            ``mask`` folder, and for ``geotiff`` with ``polygons``).
        polygons: Landslide polygon layer (``geotiff`` only).
        mapping: Label value mapping.
    """

    kind: str
    images: str
    masks: str | None = None
    polygons: str | None = None
    mapping: LabelMapping = field(default_factory=LabelMapping)


def load_scenes(
    spec: DatasetSpec, what: str = "training", require_labels: bool = True
) -> list[Scene]:
    """Discover and open the scenes of a dataset.

    Raises:
        InputError: unknown type, missing labels, unreadable or mismatched files,
            or images with different band counts.
    """
    kind = (spec.kind or "").strip().lower()
    if kind not in DATASET_TYPES:
        raise InputError(
            f"Unknown DATASET_TYPE '{spec.kind}': use one of {', '.join(DATASET_TYPES)}."
        )
    scenes: list[Scene] = []
    if kind == "pairs":
        if not spec.masks:
            raise InputError(f"The {what} masks are missing: give the mask folder.")
        cache = DecodeCache(64)
        scenes = [
            PairScene(i, m, spec.mapping, cache) for i, m in discover_pairs(spec.images, spec.masks)
        ]
    elif kind == "l4s_h5":
        found = discover_l4s(spec.images, spec.masks)
        if require_labels and any(m is None for _, m in found):
            raise InputError(
                f"No {what} masks were found for the L4S images in '{spec.images}': give the "
                "mask folder (mask_N.h5 files)."
            )
        scenes = [H5Scene(i, m, spec.mapping) for i, m in found]
    else:
        if spec.masks and spec.polygons:
            raise InputError("Both label rasters and LABEL_POLYGONS were given: use one of them.")
        polygons = None
        if spec.polygons:
            from slidewise.engine.geo.vectors import read_vector

            polygons = read_vector(spec.polygons, "landslide polygon layer")
        elif require_labels and not spec.masks:
            raise InputError(
                f"The {what} labels are missing: give label rasters or LABEL_POLYGONS."
            )
        scenes = [
            RasterScene(i, m, spec.mapping, polygons)
            for i, m in discover_rasters(spec.images, spec.masks)
        ]
    counts = {len(s.band_names) for s in scenes}
    if len(counts) > 1:
        first = scenes[0]
        odd = next(s for s in scenes if len(s.band_names) != len(first.band_names))
        raise InputError(
            f"The {what} images have different band counts ('{first.name}': "
            f"{len(first.band_names)}, '{odd.name}': {len(odd.band_names)}): use images "
            "with the same bands."
        )
    return scenes


# --------------------------------------------------------------------------- bands


def resolve_bands(value: Any, band_names: Sequence[str]) -> list[int]:
    """Parse ``BANDS`` into 0-based band indices.

    Args:
        value: Empty (all bands), 1-based numbers (``"4,3,2"``, ``[4, 3, 2]``) or
            band names (``"B4,B3,B2"``, case-insensitive), mixed freely.
        band_names: The images' band names.

    Raises:
        InputError: an index out of range or an unknown name.
    """
    n = len(band_names)
    if value is None or value == "" or value == []:
        return list(range(n))
    items = value if isinstance(value, (list, tuple)) else re.split(r"[,;\s]+", str(value).strip())
    lower = [b.lower() for b in band_names]
    out = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if re.fullmatch(r"\d+", text):
            idx = int(text)
            if not 1 <= idx <= n:
                raise InputError(
                    f"Band {idx} is out of range: the images have {n} band(s); use 1..{n}."
                )
            out.append(idx - 1)
        elif text.lower() in lower:
            out.append(lower.index(text.lower()))
        else:
            raise InputError(
                f"Unknown band '{text}': use 1-based band numbers or one of "
                f"{', '.join(band_names)}."
            )
    if not out:
        raise InputError("BANDS selects no band: leave it empty for all bands.")
    return out


# --------------------------------------------------------------------------- preparation


@dataclass
class MappingData:
    """Everything training needs, prepared by :func:`prepare_mapping_data`.

    Attributes:
        train: Training chips.
        valid: Validation chips.
        band_names: Names of the selected bands.
        band_indices: 1-based indices of the selected bands in the source images.
        normalisation: Stored normalisation (``kind``, ``mean``, ``std``) or empty.
        split: How validation was split off.
        train_stats: Per training chip ``[landslide px, labelled px]``.
        valid_stats: Per validation chip ``[landslide px, labelled px]``.
        chip_size: Chip side in pixels.
        pixel_size: Pixel size of GeoTIFF data (``None`` for pairs and L4S).
    """

    train: ChipDataset
    valid: ChipDataset
    band_names: list[str]
    band_indices: list[int]
    normalisation: dict[str, Any]
    split: Split
    train_stats: np.ndarray
    valid_stats: np.ndarray
    chip_size: int
    pixel_size: list[float] | None = None

    @property
    def landslide_fraction(self) -> float:
        """Share of landslide pixels among labelled training pixels."""
        labelled = int(self.train_stats[:, 1].sum())
        return float(self.train_stats[:, 0].sum()) / labelled if labelled else 0.0


@dataclass(frozen=True)
class ChipRequest:
    """The training data a mapping job asks for, checked before anything is read.

    Attributes:
        train: The training dataset.
        valid: A separate validation dataset; ``None`` = split off ``valid_fraction``
            of ``train`` with :func:`~slidewise.engine.imagery.splits.spatial_split`.
        chip_size: Chip side; capped at the largest image side (rounded up to a
            multiple of 32), so 128-pixel L4S patches give 128-pixel chips.
        stride: Step between training chips (``None``: the chip size).
        valid_fraction: Share split off for validation.
        bands: ``BANDS`` as given (see :func:`resolve_bands`).
        normalisation: ``fit`` (per band, training chips only), ``l4s`` or ``none``.
        seed: Seed of the split and the normalisation sample.
    """

    train: DatasetSpec
    valid: DatasetSpec | None = None
    chip_size: int = 256
    stride: int | None = None
    valid_fraction: float = 0.2
    bands: Any = None
    normalisation: str = "fit"
    seed: int = 0


@dataclass
class LabelledSplit:
    """Training and validation chips with their label counts.

    Attributes:
        split: The chips of each side and how they were split.
        valid_scenes: Scenes the validation chips index (the training scenes when split off).
        train_stats: Per training chip ``[landslide px, labelled px]``.
        valid_stats: Per validation chip ``[landslide px, labelled px]``.
    """

    split: Split
    valid_scenes: list[Scene]
    train_stats: np.ndarray
    valid_stats: np.ndarray


def prepare_mapping_data(request: ChipRequest, warn: Warn | None = None) -> MappingData:
    """Read a dataset, split validation by space, fit or pick normalisation.

    Args:
        request: Datasets, chip size and stride, validation share, bands,
            normalisation and seed.
        warn: Receives warnings (validation without landslides).

    Raises:
        InputError: unreadable data, bad bands, or training labels without any
            landslide pixel (most often a wrong LANDSLIDE_VALUES or MASK_COLOR).
    """
    norm_kind = normalisation_kind(request.normalisation)
    scenes = load_scenes(request.train, "training")
    names = scenes[0].band_names
    band_idx = resolve_bands(request.bands, names)
    size, step = chip_size_and_step(scenes, request.chip_size, request.stride)
    train_grid = make_chips(scenes, size, step)
    if request.valid is None:
        labelled = split_off_validation(scenes, train_grid, size, request)
    else:
        labelled = given_validation(scenes, train_grid, size, request.valid)
    check_landslides(labelled, warn, scenes, request.train.mapping)
    norm = normalisation_of(norm_kind, scenes, labelled.split.train, band_idx, request.seed)
    return MappingData(
        train=ChipDataset(scenes, labelled.split.train, band_idx, norm, size),
        valid=ChipDataset(labelled.valid_scenes, labelled.split.valid, band_idx, norm, size),
        band_names=[names[b] for b in band_idx],
        band_indices=[b + 1 for b in band_idx],
        normalisation=norm,
        split=labelled.split,
        train_stats=labelled.train_stats,
        valid_stats=labelled.valid_stats,
        chip_size=size,
        pixel_size=list(scenes[0].pixel_size) if scenes[0].pixel_size else None,
    )


def normalisation_kind(normalisation: str | None) -> str:
    """``fit``, ``l4s`` or ``none`` (empty: ``fit``).

    Raises:
        InputError: any other word.
    """
    norm_kind = (normalisation or "fit").strip().lower()
    if norm_kind not in NORMALISATIONS:
        raise InputError(
            f"Unknown NORMALISATION '{normalisation}': use one of {', '.join(NORMALISATIONS)}."
        )
    return norm_kind


def chip_size_and_step(
    scenes: Sequence[Scene], chip_size: int, stride: int | None
) -> tuple[int, int]:
    """The chip side (capped at the largest image side, rounded up to 32) and the stride.

    Raises:
        InputError: a chip side under 16 or a stride under 1.
    """
    largest = max(max(s.height, s.width) for s in scenes)
    size = int(chip_size)
    if size < 16:
        raise InputError(f"CHIP_SIZE must be at least 16 pixels (got {chip_size}).")
    size = min(size, -(-largest // 32) * 32)
    step = int(stride) if stride else size
    if step < 1:
        raise InputError(f"The chip stride must be positive (got {stride}).")
    return size, step


def split_off_validation(
    scenes: list[Scene], train_grid: list[Chip], size: int, request: ChipRequest
) -> LabelledSplit:
    """Split validation off the training scenes by space; label counts reused across grids."""
    valid_grid = make_chips(scenes, size, size, exclusive=True)
    vstats = chip_label_stats(scenes, valid_grid)
    split = spatial_split(
        scenes, train_grid, valid_grid, request.valid_fraction, request.seed, vstats
    )
    index = {c: k for k, c in enumerate(valid_grid)}
    valid_stats = vstats[[index[c] for c in split.valid]]
    # Reuse the label counts of chips that are in both grids.
    known = {c: vstats[k] for k, c in enumerate(valid_grid)}
    missing = [c for c in split.train if c not in known]
    for c, row in zip(missing, chip_label_stats(scenes, missing), strict=True):
        known[c] = row
    train_stats = np.array([known[c] for c in split.train], dtype=np.int64).reshape(-1, 2)
    return LabelledSplit(split, scenes, train_stats, valid_stats)


def given_validation(
    scenes: list[Scene], train_grid: list[Chip], size: int, valid: DatasetSpec
) -> LabelledSplit:
    """Every training chip for training, every chip of the given validation dataset.

    Raises:
        InputError: the validation images have another band count.
    """
    vscenes = load_scenes(valid, "validation")
    n_bands = len(scenes[0].band_names)
    if len(vscenes[0].band_names) != n_bands:
        raise InputError(
            f"The validation images have {len(vscenes[0].band_names)} bands but the "
            f"training images have {n_bands}: use images with the same bands."
        )
    vchips = make_chips(vscenes, size, size, exclusive=True)
    split = Split(list(train_grid), vchips, "given", f"validation = {len(vscenes)} given image(s)")
    valid_stats = chip_label_stats(vscenes, vchips)
    return LabelledSplit(split, vscenes, chip_label_stats(scenes, split.train), valid_stats)


def check_landslides(
    labelled: LabelledSplit,
    warn: Warn | None,
    scenes: Sequence[Scene] = (),
    mapping: LabelMapping | None = None,
) -> None:
    """Refuse training labels without landslides; warn when validation has none.

    Raises:
        InputError: no landslide pixel in the training chips (with MASK_COLOR: the
            colours the masks do have).
    """
    if labelled.train_stats[:, 0].sum() == 0:
        if mapping is not None and mapping.mask_color is not None:
            colour = ",".join(str(c) for c in mapping.mask_color)
            found = "; ".join(",".join(map(str, c)) for c in mask_colours(scenes)) or "none"
            raise InputError(
                f"There is no pixel of colour {colour} in any training mask: check MASK_COLOR "
                f"(the RGB colour of landslide pixels); colours found: {found}."
            )
        raise InputError(
            "The training labels contain no landslide pixels: check LANDSLIDE_VALUES, "
            "IGNORE_VALUES or MASK_COLOR (which values mean landslide), or choose labelled data."
        )
    if labelled.valid_stats[:, 0].sum() == 0 and warn is not None:
        warn(
            "The validation data contain no landslide pixels: landslide F1 cannot be measured, "
            "so the model is selected on the validation loss instead. Give VALID_IMAGES with "
            "landslides for a meaningful selection."
        )


def mask_colours(scenes: Sequence[Scene], limit: int = 8) -> list[tuple[int, int, int]]:
    """The main colours of the colour masks of up to ``limit`` scenes (for messages)."""
    from slidewise.engine.imagery.labels import major_colours
    from slidewise.engine.imagery.scenes import read_picture

    found: list[tuple[int, int, int]] = []
    paths = [s.mask_path for s in scenes if isinstance(s, PairScene) and s.mask_path]
    for path in paths[:limit]:
        raw = np.asarray(read_picture(Path(path), "mask"))
        if raw.ndim == 3 and raw.shape[2] in (3, 4):
            found += [c for c in major_colours(raw[..., :3]) if c not in found]
    return found[:8]


def normalisation_of(
    kind: str, scenes: list[Scene], train: list[Chip], bands: list[int], seed: int
) -> dict[str, Any]:
    """The stored normalisation: the L4S constants, fitted on ``train`` chips, or none."""
    if kind == "l4s":
        return l4s_normalisation(bands, len(scenes[0].band_names))
    if kind == "fit":
        return fit_normalisation(scenes, train, bands, seed=seed)
    return {}
