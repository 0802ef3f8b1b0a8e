"""Training data for landslide mapping: scenes, chips, spatial splits, normalisation.

Three layouts are read (``DATASET_TYPE``):

* ``pairs``: image/mask files with the same name in two folders (PNG, TIFF, JPEG).
  Masks are 0/1, 0/255, or coloured (Bijie: yellow (255, 255, 0) on black);
  see :func:`decode_mask`.
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
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from slidewise.engine.core.errors import InputError

#: Label value of pixels that do not count (unlabelled, nodata, padding).
IGNORE = 255

DATASET_TYPES = ("pairs", "l4s_h5", "geotiff")
NORMALISATIONS = ("fit", "l4s", "none")

#: The 14 Landslide4Sense bands: Sentinel-2 B1-B12 without B8A, slope, DEM.
L4S_BAND_NAMES = (
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "slope", "dem",
)  # fmt: skip
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

PAIR_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
_KEY_TOKENS = ("mask", "masks", "label", "labels", "gt", "image", "images", "img")

Warn = Callable[[str], None]


# --------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class LabelMapping:
    """How raw mask or label values become 1 (landslide), 0 or :data:`IGNORE`.

    Attributes:
        landslide: Raw values that mean landslide; ``None`` = detect (0/1 masks:
            1; 0/255 masks: 255; other grey masks: values above 127).
        ignore: Raw values that are not counted (for example 0 = unlabelled).
        mask_color: RGB colour of landslide pixels in colour masks; ``None`` =
            detect (black background, every bright pixel is landslide).
    """

    landslide: tuple[int, ...] | None = None
    ignore: tuple[int, ...] = ()
    mask_color: tuple[int, int, int] | None = None


def parse_values(value: Any, name: str) -> tuple[int, ...] | None:
    """Parse a list of integer label values (``"2"``, ``"1,2"``, ``[1, 2]``)."""
    if value is None or value == "" or value == []:
        return None
    items = value if isinstance(value, (list, tuple)) else re.split(r"[,;\s]+", str(value).strip())
    try:
        return tuple(int(float(v)) for v in items if str(v) != "")
    except ValueError:
        raise InputError(
            f"{name} must be whole numbers separated by commas (for example 2 or 1,2), "
            f"got '{value}'."
        ) from None


def parse_color(value: Any) -> tuple[int, int, int] | None:
    """Parse ``MASK_COLOR``: ``"255,255,0"``, ``"#ffff00"`` or a 3-item list."""
    if value is None or value == "" or value == []:
        return None
    text = value if isinstance(value, (list, tuple)) else str(value).strip()
    try:
        if isinstance(text, str) and text.startswith("#") and len(text) == 7:
            rgb = tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))
        else:
            items = text if isinstance(text, (list, tuple)) else re.split(r"[,;\s]+", text)
            rgb = tuple(int(float(v)) for v in items)
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise InputError(
            f"MASK_COLOR must be an RGB colour such as 255,255,0 or #ffff00, got '{value}'."
        )
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def decode_mask(raw: np.ndarray, mapping: LabelMapping, source: str = "mask") -> np.ndarray:
    """Turn a raw mask (H, W) or colour mask (H, W, 3/4) into 0/1/:data:`IGNORE` labels.

    Args:
        raw: Mask values.
        mapping: Value mapping (see :class:`LabelMapping`).
        source: Name used in error messages.

    Raises:
        InputError: the values cannot be read as landslide labels without
            ``LANDSLIDE_VALUES`` or ``MASK_COLOR``.
    """
    a = np.asarray(raw)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        rgb = a[..., :3].astype(np.int16)
        if mapping.mask_color is None and np.all(rgb == rgb[..., :1]):
            a = a[..., 0]  # grey stored as RGB
        else:
            return _decode_colour(rgb, mapping, source)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise InputError(f"The {source} has shape {a.shape}: masks must have one band or be RGB.")
    if mapping.mask_color is not None:
        raise InputError(
            f"MASK_COLOR is set but the {source} is not a colour mask: leave MASK_COLOR empty."
        )
    out = np.zeros(a.shape, dtype=np.uint8)
    if mapping.landslide is not None:
        out[np.isin(a, mapping.landslide)] = 1
    else:
        values = np.unique(a[~np.isin(a, mapping.ignore)]) if mapping.ignore else np.unique(a)
        if values.size <= 2 and set(values.tolist()) <= {0, 1}:
            out[a == 1] = 1
        elif set(values.tolist()) <= {0, 255}:
            out[a == 255] = 1
        elif values.size and values.min() >= 0 and values.max() == 255:
            out[a > 127] = 1  # anti-aliased 0..255 mask
        else:
            shown = ", ".join(str(v) for v in values[:8].tolist())
            raise InputError(
                f"The {source} has label values {shown}{'...' if values.size > 8 else ''}: "
                "set LANDSLIDE_VALUES to the value(s) that mean landslide (and IGNORE_VALUES "
                "for unlabelled ones)."
            )
    if mapping.ignore:
        out[np.isin(a, mapping.ignore)] = IGNORE
    return out


def _decode_colour(rgb: np.ndarray, mapping: LabelMapping, source: str) -> np.ndarray:
    out = np.zeros(rgb.shape[:2], dtype=np.uint8)
    if mapping.mask_color is not None:
        diff = np.abs(rgb - np.asarray(mapping.mask_color, dtype=np.int16)).max(axis=2)
        out[diff <= 40] = 1
        return out
    bright = rgb.max(axis=2) > 127
    px = rgb[bright].astype(np.int32)
    codes, counts = np.unique((px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2], return_counts=True)
    major_codes = codes[counts > 0.01 * max(1, len(px))]
    major = np.stack([major_codes >> 16, (major_codes >> 8) & 255, major_codes & 255], axis=1)
    if len(major) > 1 and np.abs(major[:, None, :] - major[None, :, :]).max() > 80:
        shown = "; ".join(",".join(str(int(c)) for c in col) for col in major[:4])
        raise InputError(
            f"The colour {source} has several colours ({shown}): set MASK_COLOR to the "
            "colour of landslide pixels, for example 255,255,0."
        )
    out[bright] = 1
    return out


# --------------------------------------------------------------------------- scenes


class Chip(NamedTuple):
    """A window of one scene: ``scene`` index, top ``row``, left ``col``, size.

    ``own_row`` and ``own_col`` mark where the pixels this chip counts begin
    (validation chips at the bottom or right edge are shifted back into the
    scene and overlap their neighbour; the overlap is counted once, by the
    neighbour, and is :data:`IGNORE` in this chip's labels).
    """

    scene: int
    row: int
    col: int
    height: int
    width: int
    own_row: int = 0
    own_col: int = 0


class Scene(ABC):
    """One image with its labels, read by windows.

    Attributes:
        name: File name (for messages).
        height: Rows.
        width: Columns.
        band_names: Names of all bands of the image.
        group: Spatial group: scenes in one group share coordinates (one CRS),
            every other scene is its own group.
        labelled: Whether labels exist.
    """

    name: str
    height: int
    width: int
    band_names: list[str]
    group: str
    labelled: bool = True
    pixel_size: tuple[float, float] | None = None

    @abstractmethod
    def read_image(self, chip: Chip, bands: Sequence[int]) -> np.ndarray:
        """Read bands (0-based) of a window as float32 ``(C, h, w)``, NaN = nodata."""

    @abstractmethod
    def read_label(self, chip: Chip) -> np.ndarray:
        """Read the labels of a window as uint8 ``(h, w)``: 0, 1 or :data:`IGNORE`."""

    def bounds(self, chip: Chip) -> tuple[float, float, float, float]:
        """Window extent ``(x0, y0, x1, y1)`` in group coordinates (pixels by default)."""
        return (
            float(chip.col),
            float(-(chip.row + chip.height)),
            float(chip.col + chip.width),
            float(-chip.row),
        )


def read_picture(path: Path, what: str) -> np.ndarray:
    """Read a PNG/JPEG/BMP (Pillow) or TIFF (rasterio) as (H, W) or (H, W, C)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio
        from rasterio.errors import RasterioIOError

        try:
            with rasterio.open(path) as src:
                data = src.read()
        except RasterioIOError as exc:
            raise InputError(f"The {what} '{path.name}' could not be read ({exc}).") from None
        return data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode == "P" and what == "image":
                return np.asarray(img.convert("RGB"))
            if img.mode == "1":
                return np.asarray(img.convert("L"))
            return np.asarray(img)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"The {what} '{path.name}' could not be read ({exc}).") from None


def picture_size(path: Path, what: str) -> tuple[int, int, int]:
    """(height, width, bands) from the file header."""
    if path.suffix.lower() in (".tif", ".tiff"):
        from slidewise.engine.geo.raster import open_raster

        info = open_raster(path, what)
        return info.height, info.width, info.count
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            bands = {"RGBA": 3, "P": 3, "LA": 1}.get(img.mode, len(img.getbands()))
            return img.height, img.width, bands
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"The {what} '{path.name}' could not be read ({exc}).") from None


class DecodeCache:
    """A small least-recently-used store of decoded pictures, shared by the
    scenes of one dataset (PNG decoding dominates chip reading otherwise).

    Args:
        size: Number of decoded arrays kept.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def get(self, key: tuple[str, str], load: Callable[[], np.ndarray]) -> np.ndarray:
        """Return the cached array for ``key``, decoding it with ``load`` if absent."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = load()
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return value


class PairScene(Scene):
    """An image file with a mask file of the same size (no georeference needed)."""

    def __init__(
        self,
        image: Path,
        mask: Path | None,
        mapping: LabelMapping,
        cache: DecodeCache | None = None,
    ) -> None:
        self.image_path, self.mask_path, self.mapping = Path(image), mask, mapping
        self.cache = cache or DecodeCache(2)
        self.name = self.image_path.name
        self.height, self.width, count = picture_size(self.image_path, "image")
        names = {1: ["grey"], 3: ["red", "green", "blue"]}.get(count)
        self.band_names = names or [f"band_{i + 1}" for i in range(count)]
        self.group = f"scene:{self.image_path}"
        self.labelled = mask is not None
        if mask is not None:
            mh, mw, _ = picture_size(Path(mask), "mask")
            if (mh, mw) != (self.height, self.width):
                raise InputError(
                    f"The mask '{Path(mask).name}' is {mw} x {mh} pixels but its image "
                    f"'{self.name}' is {self.width} x {self.height}: masks must have the "
                    "image's size."
                )

    def _image(self) -> np.ndarray:
        a = read_picture(self.image_path, "image")
        if a.ndim == 2:
            a = a[..., None]
        if a.shape[2] == 4 and self.image_path.suffix.lower() not in (".tif", ".tiff"):
            a = a.astype(np.float32)
            a[a[..., 3] == 0, :3] = np.nan  # RGBA: transparent = nodata
            a = a[..., :3]
        return a

    def _labels(self) -> np.ndarray:
        assert self.mask_path is not None
        return decode_mask(
            read_picture(Path(self.mask_path), "mask"),
            self.mapping,
            f"mask '{Path(self.mask_path).name}'",
        )

    def read_image(self, chip: Chip, bands: Sequence[int]) -> np.ndarray:
        a = self.cache.get((str(self.image_path), "image"), self._image)
        win = a[chip.row : chip.row + chip.height, chip.col : chip.col + chip.width]
        return np.moveaxis(win[..., list(bands)], -1, 0).astype(np.float32)

    def read_label(self, chip: Chip) -> np.ndarray:
        if self.mask_path is None:
            return np.full((chip.height, chip.width), IGNORE, np.uint8)
        labels = self.cache.get((str(self.image_path), "label"), self._labels)
        return labels[chip.row : chip.row + chip.height, chip.col : chip.col + chip.width]


class H5Scene(Scene):
    """A Landslide4Sense patch: ``img`` (H, W, 14) in one h5 file, ``mask`` in another."""

    def __init__(self, image: Path, mask: Path | None, mapping: LabelMapping) -> None:
        self.image_path, self.mask_path, self.mapping = Path(image), mask, mapping
        self.name = self.image_path.name
        self.group = f"scene:{self.image_path}"
        self.labelled = mask is not None
        shape = _h5_shape(self.image_path, "img", "image")
        if len(shape) != 3:
            raise InputError(
                f"The dataset 'img' in '{self.name}' has shape {shape}: L4S images are "
                "(height, width, bands)."
            )
        self.height, self.width, count = shape
        self.band_names = (
            list(L4S_BAND_NAMES)
            if count == len(L4S_BAND_NAMES)
            else [f"band_{i + 1}" for i in range(count)]
        )
        if mask is not None:
            mshape = _h5_shape(Path(mask), "mask", "mask")
            if tuple(mshape[:2]) != (self.height, self.width) or len(mshape) != 2:
                raise InputError(
                    f"The mask '{Path(mask).name}' has shape {mshape} but its image "
                    f"'{self.name}' is {self.height} x {self.width}: masks must be "
                    "(height, width) with the image's size."
                )

    def read_image(self, chip: Chip, bands: Sequence[int]) -> np.ndarray:
        import h5py

        with h5py.File(self.image_path, "r") as f:
            a = f["img"][chip.row : chip.row + chip.height, chip.col : chip.col + chip.width, :]
        return np.moveaxis(a[..., list(bands)], -1, 0).astype(np.float32)

    def read_label(self, chip: Chip) -> np.ndarray:
        if self.mask_path is None:
            return np.full((chip.height, chip.width), IGNORE, np.uint8)
        import h5py

        with h5py.File(self.mask_path, "r") as f:
            m = f["mask"][chip.row : chip.row + chip.height, chip.col : chip.col + chip.width]
        return decode_mask(m, self.mapping, f"mask '{Path(self.mask_path).name}'")


def _h5_shape(path: Path, key: str, what: str) -> tuple[int, ...]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise InputError(
                    f"The {what} file '{path.name}' has no dataset '{key}' (it has "
                    f"{', '.join(f.keys()) or 'none'}): L4S files hold '{key}'."
                )
            return tuple(int(s) for s in f[key].shape)
    except OSError as exc:
        raise InputError(
            f"The {what} file '{path.name}' is not a readable h5 file ({exc})."
        ) from None


class _PolygonLabels:
    """Landslide polygons, rasterised window by window on an image grid."""

    def __init__(self, geometries: np.ndarray, transform: Any) -> None:
        import shapely

        self.geometries = geometries
        self.tree = shapely.STRtree(geometries)
        self.transform = transform

    def read(self, chip: Chip) -> np.ndarray:
        import shapely
        from rasterio.features import rasterize

        t = self.transform
        cols = (chip.col, chip.col + chip.width)
        rows = (chip.row, chip.row + chip.height)
        xs = [t.a * c + t.b * r + t.c for c in cols for r in rows]
        ys = [t.d * c + t.e * r + t.f for c in cols for r in rows]
        box = shapely.box(min(xs), min(ys), max(xs), max(ys))
        hits = self.geometries[self.tree.query(box, predicate="intersects")]
        if len(hits) == 0:
            return np.zeros((chip.height, chip.width), np.uint8)
        from rasterio.transform import Affine

        return rasterize(
            [(g, 1) for g in hits],
            out_shape=(chip.height, chip.width),
            transform=Affine(t.a, t.b, xs[0], t.d, t.e, ys[0]),
            fill=0,
            dtype="uint8",
        )


class RasterScene(Scene):
    """A georeferenced image with a label raster, landslide polygons, or no labels."""

    def __init__(
        self,
        image: Path,
        labels: Path | None = None,
        mapping: LabelMapping | None = None,
        polygons: Any = None,
    ) -> None:
        from slidewise.engine.geo.raster import open_raster, same_grid

        self.image_path = Path(image)
        self.info = open_raster(self.image_path, "image")
        self.name = self.image_path.name
        self.height, self.width = self.info.height, self.info.width
        self.band_names = self.info.band_names()
        self.pixel_size = self.info.res
        crs = self.info.crs
        self.group = f"crs:{crs.to_string()}" if crs is not None else f"scene:{self.image_path}"
        self.mapping = mapping or LabelMapping()
        self.label_path = labels
        self._polygons: _PolygonLabels | None = None
        self._warp = False
        self.labelled = labels is not None or polygons is not None
        if labels is not None:
            linfo = open_raster(labels, "label raster")
            if not same_grid(self.info, linfo):
                if (self.info.crs is None) != (linfo.crs is None):
                    raise InputError(
                        f"The label raster '{linfo.path}' and the image '{self.name}' are not "
                        "on the same grid and one has no CRS: give both a CRS or the same grid."
                    )
                self._warp = True
        elif polygons is not None:
            self._polygons = _PolygonLabels(
                _polygons_on_grid(polygons, self.info), self.info.transform
            )

    def bounds(self, chip: Chip) -> tuple[float, float, float, float]:
        if self.info.crs is None:
            return super().bounds(chip)
        t = self.info.transform
        cols = (chip.col, chip.col + chip.width)
        rows = (chip.row, chip.row + chip.height)
        xs = [t.a * c + t.b * r + t.c for c in cols for r in rows]
        ys = [t.d * c + t.e * r + t.f for c in cols for r in rows]
        return (min(xs), min(ys), max(xs), max(ys))

    def read_image(self, chip: Chip, bands: Sequence[int]) -> np.ndarray:
        import rasterio
        from rasterio.windows import Window

        from slidewise.engine.geo.raster import read_masked

        with rasterio.open(self.image_path) as src:
            data, _ = read_masked(
                src, Window(chip.col, chip.row, chip.width, chip.height), [b + 1 for b in bands]
            )
        return data

    def read_label(self, chip: Chip) -> np.ndarray:
        import rasterio
        from rasterio.windows import Window

        if self._polygons is not None:
            return self._polygons.read(chip)
        if self.label_path is None:
            return np.full((chip.height, chip.width), IGNORE, np.uint8)
        win = Window(chip.col, chip.row, chip.width, chip.height)
        with rasterio.open(self.label_path) as src:
            if self._warp:
                from rasterio.enums import Resampling
                from rasterio.vrt import WarpedVRT

                with WarpedVRT(
                    src,
                    crs=self.info.crs,
                    transform=self.info.transform,
                    width=self.width,
                    height=self.height,
                    resampling=Resampling.nearest,
                ) as vrt:
                    raw = vrt.read(1, window=win, masked=True)
            else:
                raw = src.read(1, window=win, masked=True)
        nodata = np.ma.getmaskarray(raw)
        labels = decode_mask(
            np.ma.filled(raw, 0), self.mapping, f"label raster '{Path(self.label_path).name}'"
        )
        labels[nodata] = IGNORE
        return labels


def _polygons_on_grid(vector: Any, info: Any) -> np.ndarray:
    """Polygons of ``vector`` (VectorData) in the raster's CRS, clipped to its extent."""
    import shapely

    from slidewise.engine.geo.vectors import polygons_in_crs

    geoms = polygons_in_crs(
        vector, info.crs, "LABEL_POLYGONS layer", "choose a polygon layer of landslides"
    )
    left, bottom, right, top = _info_bounds(info)
    keep = shapely.intersects(geoms, shapely.box(left, bottom, right, top))
    return geoms[keep]


def _info_bounds(info: Any) -> tuple[float, float, float, float]:
    t = info.transform
    xs = [t.c, t.c + t.a * info.width]
    ys = [t.f, t.f + t.e * info.height]
    return min(xs), min(ys), max(xs), max(ys)


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


# --------------------------------------------------------------------------- chips


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


# --------------------------------------------------------------------------- split


@dataclass
class Split:
    """A train/validation split of chips.

    Attributes:
        train: Training chips.
        valid: Validation chips.
        method: ``scenes`` (whole scenes), ``stripes`` (a stripe of one extent)
            or ``given`` (a separate validation dataset).
        detail: One line for the log.
        dropped: Training chips dropped because they overlap validation chips.
    """

    train: list[Chip]
    valid: list[Chip]
    method: str
    detail: str
    dropped: int = 0


def spatial_split(
    scenes: Sequence[Scene],
    train_chips: Sequence[Chip],
    valid_chips: Sequence[Chip],
    valid_fraction: float = 0.2,
    seed: int = 0,
    stats: np.ndarray | None = None,
) -> Split:
    """Split chips into training and validation by space (see the module doc).

    Args:
        scenes: The scenes.
        train_chips: Candidate training chips (any stride).
        valid_chips: Candidate validation chips (usually non-overlapping).
        valid_fraction: Share of the data for validation (0 < f < 1).
        seed: Seed of the choice of validation scenes or stripe.
        stats: :func:`chip_label_stats` of ``valid_chips`` (computed when omitted);
            used to give validation some landslides.

    Raises:
        InputError: fraction out of range or too little data to split.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise InputError(
            f"VALID_FRACTION must be between 0 and 1 (got {valid_fraction}): for example 0.2."
        )
    if stats is None:
        stats = chip_label_stats(scenes, valid_chips)
    rng = np.random.default_rng(seed)
    groups = sorted({s.group for s in scenes})
    if len(groups) >= 2:
        return _split_groups(scenes, train_chips, valid_chips, stats, groups, valid_fraction, rng)
    return _split_stripes(scenes, train_chips, valid_chips, stats, valid_fraction, rng)


def _split_groups(
    scenes: Sequence[Scene],
    train_chips: Sequence[Chip],
    valid_chips: Sequence[Chip],
    stats: np.ndarray,
    groups: list[str],
    fraction: float,
    rng: np.random.Generator,
) -> Split:
    group_of = [s.group for s in scenes]
    pixels = dict.fromkeys(groups, 0)
    slides = dict.fromkeys(groups, 0)
    for chip, (pos, n) in zip(valid_chips, stats, strict=True):
        g = group_of[chip.scene]
        pixels[g] += int(n)
        slides[g] += int(pos)
    total = max(1, sum(pixels.values()))
    order = [groups[i] for i in rng.permutation(len(groups))]
    chosen: list[str] = []
    share, has_slides = 0.0, False
    for g in order:
        if share >= fraction and has_slides:
            break
        if share >= fraction and slides[g] == 0:
            continue
        chosen.append(g)
        share += pixels[g] / total
        has_slides = has_slides or slides[g] > 0
    if len(chosen) >= len(groups):
        chosen = chosen[:-1] if len(chosen) > 1 else chosen
    if len(chosen) >= len(groups):
        raise InputError("Too few images to split off a validation set: give VALID_IMAGES.")
    val_groups = set(chosen)
    train = [c for c in train_chips if group_of[c.scene] not in val_groups]
    valid = [c for c in valid_chips if group_of[c.scene] in val_groups]
    names = sorted(scenes[i].name for i in {c.scene for c in valid})
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    detail = (
        f"validation = {len(val_groups)} of {len(groups)} whole images/areas "
        f"({share:.0%} of labelled pixels): {shown}"
    )
    return Split(train, valid, "scenes", detail)


def _split_stripes(
    scenes: Sequence[Scene],
    train_chips: Sequence[Chip],
    valid_chips: Sequence[Chip],
    stats: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
) -> Split:
    vb = np.array([scenes[c.scene].bounds(c) for c in valid_chips], dtype=float)
    tb = np.array([scenes[c.scene].bounds(c) for c in train_chips], dtype=float)
    x0, y0 = vb[:, 0].min(), vb[:, 1].min()
    x1, y1 = vb[:, 2].max(), vb[:, 3].max()
    axis = 0 if (x1 - x0) >= (y1 - y0) else 1  # stripes cut across the longer axis
    lo, hi = (x0, x1) if axis == 0 else (y0, y1)
    n_stripes = max(2, round(1.0 / fraction))
    centres = (vb[:, axis] + vb[:, axis + 2]) / 2.0
    stripe = np.minimum(
        ((centres - lo) / max(hi - lo, 1e-12) * n_stripes).astype(int), n_stripes - 1
    )
    candidates = [k for k in range(n_stripes) if np.any(stripe == k)]
    with_slides = [k for k in candidates if stats[stripe == k, 0].sum() > 0]
    pool = with_slides or candidates
    pick = pool[int(rng.integers(len(pool)))]
    valid_idx = np.flatnonzero(stripe == pick)
    v_lo = vb[valid_idx, axis].min()
    v_hi = vb[valid_idx, axis + 2].max()
    t_lo, t_hi = tb[:, axis], tb[:, axis + 2]
    keep = (t_hi <= v_lo) | (t_lo >= v_hi)  # no overlap with the validation extent
    train = [c for c, k in zip(train_chips, keep, strict=True) if k]
    if not train:
        raise InputError(
            "The data are too small to split off a validation stripe: use a smaller "
            "CHIP_SIZE or give VALID_IMAGES."
        )
    direction = "west-east" if axis == 0 else "south-north"
    detail = (
        f"validation = stripe {pick + 1} of {n_stripes} along the {direction} axis "
        f"({len(valid_idx)} chips); {int((~keep).sum())} training chips overlapping it dropped"
    )
    valid = [valid_chips[int(i)] for i in valid_idx]
    return Split(train, valid, "stripes", detail, int((~keep).sum()))


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


def prepare_mapping_data(
    train: DatasetSpec,
    valid: DatasetSpec | None = None,
    chip_size: int = 256,
    stride: int | None = None,
    valid_fraction: float = 0.2,
    bands: Any = None,
    normalisation: str = "fit",
    seed: int = 0,
    warn: Warn | None = None,
) -> MappingData:
    """Read a dataset, split validation by space, fit or pick normalisation.

    Args:
        train: The training dataset.
        valid: A separate validation dataset; ``None`` = split off
            ``valid_fraction`` of ``train`` with :func:`spatial_split`.
        chip_size: Chip side; capped at the largest image side (rounded up to a
            multiple of 32), so 128-pixel L4S patches give 128-pixel chips.
        stride: Step between training chips (default ``chip_size``).
        valid_fraction: Share split off for validation.
        bands: ``BANDS`` (see :func:`resolve_bands`).
        normalisation: ``fit`` (per band, training chips only), ``l4s`` or ``none``.
        seed: Seed of the split and the normalisation sample.
        warn: Receives warnings (validation without landslides).

    Raises:
        InputError: unreadable data, bad bands, or training labels without any
            landslide pixel (most often a wrong LANDSLIDE_VALUES or MASK_COLOR).
    """
    norm_kind = (normalisation or "fit").strip().lower()
    if norm_kind not in NORMALISATIONS:
        raise InputError(
            f"Unknown NORMALISATION '{normalisation}': use one of {', '.join(NORMALISATIONS)}."
        )
    scenes = load_scenes(train, "training")
    names = scenes[0].band_names
    band_idx = resolve_bands(bands, names)
    largest = max(max(s.height, s.width) for s in scenes)
    size = int(chip_size)
    if size < 16:
        raise InputError(f"CHIP_SIZE must be at least 16 pixels (got {chip_size}).")
    size = min(size, -(-largest // 32) * 32)
    step = int(stride) if stride else size
    if step < 1:
        raise InputError(f"The chip stride must be positive (got {stride}).")

    train_grid = make_chips(scenes, size, step)
    if valid is None:
        valid_grid = make_chips(scenes, size, size, exclusive=True)
        vstats = chip_label_stats(scenes, valid_grid)
        split = spatial_split(scenes, train_grid, valid_grid, valid_fraction, seed, vstats)
        vscenes = scenes
        index = {c: k for k, c in enumerate(valid_grid)}
        valid_stats = vstats[[index[c] for c in split.valid]]
    else:
        vscenes = load_scenes(valid, "validation")
        if len(vscenes[0].band_names) != len(names):
            raise InputError(
                f"The validation images have {len(vscenes[0].band_names)} bands but the "
                f"training images have {len(names)}: use images with the same bands."
            )
        vchips = make_chips(vscenes, size, size, exclusive=True)
        split = Split(
            list(train_grid), vchips, "given", f"validation = {len(vscenes)} given image(s)"
        )
        valid_stats = chip_label_stats(vscenes, vchips)
    if valid is None:  # reuse the label counts of chips that are in both grids
        known = {c: vstats[k] for k, c in enumerate(valid_grid)}
        missing = [c for c in split.train if c not in known]
        for c, row in zip(missing, chip_label_stats(scenes, missing), strict=True):
            known[c] = row
        train_stats = np.array([known[c] for c in split.train], dtype=np.int64).reshape(-1, 2)
    else:
        train_stats = chip_label_stats(scenes, split.train)
    if train_stats[:, 0].sum() == 0:
        raise InputError(
            "The training labels contain no landslide pixels: check LANDSLIDE_VALUES, "
            "IGNORE_VALUES or MASK_COLOR (which values mean landslide), or choose labelled data."
        )
    if valid_stats[:, 0].sum() == 0 and warn is not None:
        warn(
            "The validation data contain no landslide pixels: landslide F1 cannot be measured, "
            "so the model is selected on the validation loss instead. Give VALID_IMAGES with "
            "landslides for a meaningful selection."
        )
    if norm_kind == "l4s":
        norm = l4s_normalisation(band_idx, len(names))
    elif norm_kind == "fit":
        norm = fit_normalisation(scenes, split.train, band_idx, seed=seed)
    else:
        norm = {}
    return MappingData(
        train=ChipDataset(scenes, split.train, band_idx, norm, size),
        valid=ChipDataset(vscenes, split.valid, band_idx, norm, size),
        band_names=[names[b] for b in band_idx],
        band_indices=[b + 1 for b in band_idx],
        normalisation=norm,
        split=split,
        train_stats=train_stats,
        valid_stats=valid_stats,
        chip_size=size,
        pixel_size=list(scenes[0].pixel_size) if scenes[0].pixel_size else None,
    )
