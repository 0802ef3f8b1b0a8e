"""Scenes: one image with its labels, read window by window (:class:`Chip`).

Three kinds: :class:`PairScene` (image and mask files with the same name),
:class:`H5Scene` (Landslide4Sense ``image_N.h5`` / ``mask_N.h5`` patches) and
:class:`RasterScene` (a georeferenced image with a label raster, aligned by
nearest-neighbour warping, or landslide polygons rasterised on its grid).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from slidewise.engine.core.errors import InputError
from slidewise.engine.imagery.labels import IGNORE, LabelMapping, decode_mask

#: The 14 Landslide4Sense bands: Sentinel-2 B1-B12 without B8A, slope, DEM.
L4S_BAND_NAMES = (
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "slope", "dem",
)  # fmt: skip


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


def unreadable_picture(path: Path, what: str, exc: Exception) -> InputError:
    """The error for a file of an image folder that is not a readable picture, with the fix."""
    return InputError(
        f"The {what} '{path.name}' in '{path.parent}' could not be read ({exc}): it is not "
        "an image, or is damaged. The folder may only hold images (PNG, JPEG, BMP or "
        "GeoTIFF): move other files out of it, or export or copy that image again."
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
            raise unreadable_picture(path, what, exc) from None
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
        raise unreadable_picture(path, what, exc) from None


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
        raise unreadable_picture(path, what, exc) from None


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
