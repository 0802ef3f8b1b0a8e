"""Windowed raster input and output with rasterio.

Everything here reads and writes by windows, so memory stays bounded by the
window size, not by the raster size. Inputs are validated with messages that
say what is wrong and how to fix it.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.transform import Affine
from rasterio.windows import Window

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.outputs import atomic_output

#: How QGIS and GDAL draw an image without georeference (a plain PNG or JPEG):
#: origin (0, 0) at the top-left corner, 1 unit a pixel, rows going down to
#: y = -height. Outputs of such an image use it, so that they overlay the image.
UNGEOREFERENCED = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


def grid_transform(src: Any) -> Affine:
    """The pixel-to-map transform of an open rasterio dataset, as QGIS draws it.

    rasterio gives an image without geotransform, GCPs or RPCs the identity
    (rows going *up*, y = 0 ... height), while QGIS shows it with rows going
    down (y = 0 ... -height): such images get :data:`UNGEOREFERENCED`.
    """
    transform = src.transform
    if (
        src.crs is None
        and transform.is_identity
        and not src.gcps[0]
        and not getattr(src, "rpcs", None)
    ):
        return UNGEOREFERENCED
    return transform


@dataclass(frozen=True)
class RasterInfo:
    """What the engine needs to know about a raster.

    Attributes:
        path: File path.
        width: Columns.
        height: Rows.
        count: Bands.
        crs: Coordinate reference system (``None`` when missing).
        transform: Affine pixel-to-map transform.
        nodata: Nodata value of the first band (``None`` when unset).
        dtype: Data type of the first band.
        descriptions: Band descriptions (``None`` entries when unnamed).
    """

    path: str
    width: int
    height: int
    count: int
    crs: CRS | None
    transform: Any
    nodata: float | None
    dtype: str
    descriptions: tuple[str | None, ...]

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def is_geographic(self) -> bool:
        """True when the CRS is geographic (degrees)."""
        return bool(self.crs is not None and self.crs.is_geographic)

    def band_names(self) -> list[str]:
        """Band descriptions, with ``band_N`` for unnamed bands."""
        return [d or f"band_{i + 1}" for i, d in enumerate(self.descriptions)]


def open_raster(path: str | os.PathLike[str], what: str = "input raster") -> RasterInfo:
    """Validate that ``path`` is a readable, non-empty raster and describe it.

    Args:
        path: The file.
        what: How the message names this input (for example "DEM").

    Raises:
        InputError: missing file, not a raster, or empty raster.
    """
    p = Path(path)
    if not str(path):
        raise InputError(f"No {what} was given: choose a raster file.")
    if not p.exists():
        raise InputError(f"The {what} '{p}' does not exist: check the path.")
    if p.is_dir():
        raise InputError(f"The {what} '{p}' is a folder: choose a raster file inside it.")
    try:
        with rasterio.open(p) as src:
            info = RasterInfo(
                path=str(p),
                width=src.width,
                height=src.height,
                count=src.count,
                crs=src.crs,
                transform=grid_transform(src),
                nodata=src.nodata,
                dtype=src.dtypes[0] if src.count else "",
                descriptions=tuple(src.descriptions),
            )
    except RasterioIOError as exc:
        raise InputError(
            f"The {what} '{p.name}' is not a raster GDAL can read ({exc}): "
            "choose a GeoTIFF or another raster format."
        ) from None
    if info.count == 0 or info.width == 0 or info.height == 0:
        raise InputError(
            f"The {what} '{p.name}' is empty ({info.width} x {info.height} pixels, "
            f"{info.count} bands): choose a raster with data."
        )
    return info


def iter_windows(
    width: int, height: int, block: int = 1024, halo: int = 0
) -> Iterator[tuple[Window, Window, tuple[slice, slice]]]:
    """Cover a raster with square blocks, each read with a halo of extra pixels.

    Args:
        width: Raster columns.
        height: Raster rows.
        block: Block side in pixels (the part that is written).
        halo: Extra pixels read on every side (clipped at the raster edge).

    Yields:
        ``(read_window, write_window, inner)`` where ``inner`` slices the block out
        of the array read with ``read_window``.
    """
    for row in range(0, height, block):
        for col in range(0, width, block):
            h = min(block, height - row)
            w = min(block, width - col)
            r0, c0 = max(0, row - halo), max(0, col - halo)
            r1, c1 = min(height, row + h + halo), min(width, col + w + halo)
            read = Window(c0, r0, c1 - c0, r1 - r0)
            write = Window(col, row, w, h)
            inner = (slice(row - r0, row - r0 + h), slice(col - c0, col - c0 + w))
            yield read, write, inner


def read_masked(
    src: rasterio.io.DatasetReader,
    window: Window | None = None,
    indexes: Sequence[int] | int | None = None,
    boundless: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Read bands as float32 with a validity mask.

    Nodata values and non-finite values are marked invalid and set to NaN.

    Returns:
        ``(data, valid)``: data (bands, rows, cols) float32 with NaN where invalid,
        valid (rows, cols) bool, true where every band is valid.
    """
    idx = list(range(1, src.count + 1)) if indexes is None else indexes
    if isinstance(idx, int):
        idx = [idx]
    try:
        data = src.read(idx, window=window, boundless=boundless, masked=True)
    except RasterioIOError as exc:
        raise InputError(
            f"The raster '{Path(src.name).name}' could not be read ({exc}): the file is damaged "
            "or truncated; export or download it again."
        ) from None
    arr = np.ma.filled(data.astype(np.float32), np.nan)
    valid = np.all(np.isfinite(arr), axis=0)
    arr[:, ~valid] = np.nan
    return arr, valid


def spread_order(n: int) -> list[int]:
    """``0 .. n-1`` in an order that jumps across the range (a golden-ratio stride)."""
    import math

    stride = max(1, round(n * 0.618))
    while math.gcd(stride, n) != 1:
        stride -= 1
    return [(i * stride) % n for i in range(n)] if n else []


def require_valid_pixels(
    path: str | os.PathLike[str], indexes: Sequence[int], what: str, task: str
) -> None:
    """Refuse a raster whose bands ``indexes`` are nodata (or not finite) at every pixel.

    Blocks of 512 pixels are read in an order spread over the raster (the first, then
    one far away, ...) until one has a valid pixel: most rasters answer with their first
    blocks; one with data in a small part may read more, at most the whole raster once
    (an all-nodata raster, which is refused). A decimated read of the whole raster, the
    earlier way, decompressed every block of a large raster before mapping began.

    Args:
        path: The raster.
        indexes: 1-based bands the job reads (a pixel is valid when all of them are).
        what: What the raster is, for the message (``input raster``).
        task: What the job would do, for the message (``map``).

    Raises:
        InputError: no valid pixel, naming the raster and the fix.
    """
    bands = list(indexes)
    with rasterio.open(path) as src:
        windows = [window for _, window, _ in iter_windows(src.width, src.height, 512)]
        for i in spread_order(len(windows)):
            if read_masked(src, windows[i], bands)[1].any():
                return
    shown = ", ".join(str(b) for b in bands)
    raise InputError(
        f"The {what} '{Path(path).name}' has no valid pixel (bands {shown} are nodata "
        f"everywhere): nothing to {task}. Check the raster's nodata value, or choose a raster "
        "with data."
    )


def output_profile(
    info: RasterInfo | dict[str, Any],
    count: int,
    dtype: str = "float32",
    nodata: float | None = None,
    block: int = 256,
) -> dict[str, Any]:
    """A tiled, compressed GeoTIFF profile on the grid of ``info``."""
    if isinstance(info, RasterInfo):
        base = {
            "width": info.width,
            "height": info.height,
            "crs": info.crs,
            "transform": info.transform,
        }
    else:
        base = {k: info[k] for k in ("width", "height", "crs", "transform")}
    if nodata is None and np.issubdtype(np.dtype(dtype), np.floating):
        nodata = float("nan")
    profile = {
        "driver": "GTiff",
        "count": count,
        "dtype": dtype,
        "nodata": nodata,
        "compress": "deflate",
        "zlevel": 1,
        "predictor": 3 if np.issubdtype(np.dtype(dtype), np.floating) else 2,
        "BIGTIFF": "IF_SAFER",
        **base,
    }
    if base["width"] >= 16 and base["height"] >= 16:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    return profile


@contextlib.contextmanager
def create_raster(
    path: str | os.PathLike[str],
    profile: dict[str, Any],
    band_names: Sequence[str] | None = None,
) -> Iterator[rasterio.io.DatasetWriter]:
    """Open a GeoTIFF for writing atomically (temporary file, renamed at the end).

    Args:
        path: Final path.
        profile: rasterio profile (see :func:`output_profile`).
        band_names: Band descriptions to set.

    Yields:
        The open dataset; write to it by windows.
    """
    with atomic_output(path) as tmp:
        with warnings.catch_warnings():
            # Written on purpose for an image without georeference (UNGEOREFERENCED).
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            writer = rasterio.open(tmp, "w", **profile)
        with writer as dst:
            if band_names is not None:
                if len(band_names) != profile["count"]:
                    raise ValueError("band_names must match the band count")
                for i, name in enumerate(band_names, start=1):
                    dst.set_band_description(i, name)
            yield dst


def same_grid(a: RasterInfo, b: RasterInfo, tolerance: float = 1e-6) -> bool:
    """True when two rasters share CRS, shape and transform."""
    if (a.width, a.height) != (b.width, b.height):
        return False
    if (a.crs is None) != (b.crs is None) or (a.crs is not None and a.crs != b.crs):
        return False
    return bool(a.transform.almost_equals(b.transform, precision=tolerance * max(a.res)))
