"""Mean terrain slope under polygons, computed on the DEM's own grid.

For each polygon the DEM window under it (plus a margin of two cells) is read,
its slope is computed there with central differences (:func:`numpy.gradient`)
on the cell size in metres, and the slope of the DEM cells whose centres lie in
the polygon is averaged. Polygons are reprojected to the DEM's CRS when it
differs, so the DEM may have any grid, resolution and CRS; no resampling of
elevations is needed. A polygon smaller than one DEM cell takes the slope of
the cells it touches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.engine.core.errors import InputError
from slidewise.engine.geo.polygons import EARTH_RADIUS_M

#: DEM cells read around each polygon's bounds.
MARGIN = 2


def slope_degrees(z: np.ndarray, dx: float | np.ndarray, dy: float) -> np.ndarray:
    """Slope in degrees of an elevation window (NaN where a neighbour is NaN).

    Args:
        z: ``(rows, cols)`` elevations in metres, NaN = nodata.
        dx: Cell width in metres (per row, shape ``(rows, 1)``, for geographic grids).
        dy: Cell height in metres.
    """
    if min(z.shape) < 2:
        return np.full(z.shape, np.nan)
    gy, gx = np.gradient(z.astype(np.float64))
    return np.degrees(np.arctan(np.hypot(gx / dx, gy / abs(dy))))


def mean_slopes(geometries: Sequence[Any], crs: Any, dem: str) -> np.ndarray:
    """Mean slope (degrees) of a DEM under each polygon; NaN where the DEM has no data.

    Args:
        geometries: Polygons in ``crs``.
        crs: Their CRS (``None``: the DEM's).
        dem: DEM raster path (elevations in metres).

    Raises:
        InputError: the DEM cannot be read, or polygons and DEM cannot be put in one CRS.
    """
    import rasterio

    from slidewise.engine.geo.raster import open_raster
    from slidewise.engine.geo.vectors import reproject_geometries

    info = open_raster(dem, what="DEM")
    geoms = np.asarray(geometries, dtype=object)
    out = np.full(len(geoms), np.nan)
    if len(geoms) == 0:
        return out
    if crs is not None and info.crs is not None and crs != info.crs:
        geoms = reproject_geometries(geoms, crs, info.crs, what="landslide polygons")
    elif (crs is None) != (info.crs is None):
        raise InputError(
            f"The DEM '{Path(dem).name}' or the image has no CRS, so the polygons cannot be "
            "placed on the DEM: assign a CRS to both."
        )
    with rasterio.open(info.path) as src:
        for k, geom in enumerate(geoms):
            out[k] = _polygon_slope(src, geom, info.is_geographic)
    return out


def _polygon_slope(src: Any, geom: Any, geographic: bool) -> float:
    """Mean slope of the DEM cells under one polygon (NaN without valid cells)."""
    from rasterio.features import geometry_mask
    from rasterio.windows import Window, from_bounds
    from rasterio.windows import transform as window_transform

    from slidewise.engine.geo.raster import read_masked

    win = from_bounds(*geom.bounds, transform=src.transform)
    col0 = max(0, math.floor(min(win.col_off, win.col_off + win.width)) - MARGIN)
    row0 = max(0, math.floor(min(win.row_off, win.row_off + win.height)) - MARGIN)
    col1 = min(src.width, math.ceil(max(win.col_off, win.col_off + win.width)) + MARGIN)
    row1 = min(src.height, math.ceil(max(win.row_off, win.row_off + win.height)) + MARGIN)
    if col1 <= col0 or row1 <= row0:
        return float("nan")
    window = Window(col0, row0, col1 - col0, row1 - row0)
    data, _ = read_masked(src, window=window, indexes=1)
    t = window_transform(window, src.transform)
    dx, dy = _cell_metres(t, src.crs, geographic, row1 - row0)
    slope = slope_degrees(data[0], dx, dy)
    inside = geometry_mask([geom], slope.shape, t, invert=True)
    if not inside.any():
        inside = geometry_mask([geom], slope.shape, t, invert=True, all_touched=True)
    values = slope[inside & np.isfinite(slope)]
    return float(values.mean()) if values.size else float("nan")


def _cell_metres(t: Any, crs: Any, geographic: bool, rows: int) -> tuple[float | np.ndarray, float]:
    """Cell width (per row for geographic grids) and height of a window, in metres."""
    if geographic:
        lat = np.radians(t.f + t.e * (np.arange(rows) + 0.5))
        metres = math.radians(1.0) * EARTH_RADIUS_M
        return (abs(t.a) * metres * np.cos(lat))[:, None], abs(t.e) * metres
    factor = 1.0
    if crs is not None:
        try:
            factor = float(crs.linear_units_factor[1])
        except Exception:
            factor = 1.0
    return abs(t.a) * factor, abs(t.e) * factor
