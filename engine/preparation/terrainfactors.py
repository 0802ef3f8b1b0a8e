"""Terrain factors from a DEM: the ``terrainfactors`` engine job.

The job writes one float32 GeoTIFF (nodata NaN) whose eight bands are named
:data:`TERRAIN_BANDS`:

========================  ===========  ==================================================
band                      unit         definition
========================  ===========  ==================================================
``slope``                 degrees      ``atan(|grad z|)``, Horn (1981) 3x3 gradient
``aspect``                degrees      azimuth of the downslope direction, clockwise
                                       from north, in [0, 360); NaN on flat cells
``aspect_sin``            -            ``sin(aspect)`` (eastness); 0 on flat cells
``aspect_cos``            -            ``cos(aspect)`` (northness); 0 on flat cells
``plan_curvature``        1/m          curvature of the contour line (Evans-Young)
``profile_curvature``     1/m          normal curvature along the slope line (Evans-Young)
``hillshade``             grey level   ``1 + 254 * max(cos(incidence), 0)``, in [1, 255]
``twi``                   -            ``ln(a / tan(beta))``, D8 flow on a filled DEM
========================  ===========  ==================================================

**Gradient (slope, aspect, hillshade, TWI).** Horn's weighted differences, the
same arithmetic as ``gdaldem slope/aspect/hillshade`` (without
``-compute_edges``). With the window ``z0 z1 z2 / z3 z4 z5 / z6 z7 z8`` (row 0 on
top) and the signed pixel sizes ``dx`` (map x per column) and ``dy`` (map y per
row, negative for north-up rasters), in metres::

    gx = ((z2 + 2 z5 + z8) - (z0 + 2 z3 + z6)) / (8 dx)      # dz/dx, x = east
    gy = ((z6 + 2 z7 + z8) - (z0 + 2 z1 + z2)) / (8 dy)      # dz/dy, y = north
    slope  = atan(sqrt(gx^2 + gy^2))
    aspect = atan2(-gx, -gy)   (azimuth of -grad z, mapped to [0, 360))

Using the signed sizes makes the result right for non-square pixels and for
north-up as well as south-up grids. ``gdaldem aspect`` ignores the pixel size
(exact only for square pixels); for a pixel aspect ratio ``k`` the two differ
by at most about ``|k - 1| / 2`` radians, 0.004 degrees for the 29.997 x 30.002 m
Jiuzhaigou DEM. Where ``gx = gy = 0`` ``gdaldem`` writes -9999 (or 0 with
``-zero_for_flat``); here ``aspect`` is NaN and ``aspect_sin = aspect_cos = 0``,
so that the two continuous aspect bands stay defined on flats.

**Hillshade.** gdaldem's formula for light azimuth ``az`` and altitude ``alt``::

    cos_i = (sin(alt) - cos(alt) (gx sin(az) + gy cos(az))) / sqrt(1 + gx^2 + gy^2)
    hillshade = 1 + 254 cos_i  where cos_i > 0, else 1

kept as a float (gdaldem rounds it to a byte and reserves 0 for nodata).

**Curvatures.** Second-order derivatives of the Evans-Young least-squares
quadratic fitted to the 3x3 window (Evans 1979; Young 1978; more robust to DEM
noise than Zevenbergen-Thorne's, Florinsky 1998)::

    p = (sum(col E) - sum(col W)) / (6 dx)          q = (sum(row S) - sum(row N)) / (6 dy)
    r = (sum(col W) + sum(col E) - 2 sum(col C)) / (3 dx^2)
    t = (sum(row N) + sum(row S) - 2 sum(row C)) / (3 dy^2)
    s = (z0 + z8 - z2 - z6) / (4 dx dy)
    P = p^2 + q^2
    profile_curvature = -(p^2 r + 2 p q s + q^2 t) / (P (1 + P)^(3/2))
    plan_curvature    = -(q^2 r - 2 p q s + p^2 t) / P^(3/2)

Sign convention: **positive = convex, negative = concave, for both**. Profile
curvature is positive where the slope steepens downhill (upper convex slopes,
flow accelerates) and negative where it flattens (footslopes, deposition); plan
curvature is positive on noses and ridges (flow diverges) and negative in
hollows and valleys (flow converges). Units 1/m (the reciprocal of the radius of
curvature). Note that ArcGIS's "profile curvature" has the opposite sign and
unit 1/(100 z-units). Where ``P`` is below ``FLAT_GRADIENT2`` (exactly flat
windows in practice) both curvatures are 0: the slope direction is undefined.
Plan curvature grows like ``1 / |grad z|`` on nearly flat ground; that is the
nature of contour curvature.

**TWI.** ``ln(a / tan(beta))`` (Beven & Kirkby 1979) with ``tan(beta)`` the Horn
gradient above, floored at ``min_tan_slope`` (default 0.001, 0.057 degrees), and
``a`` the specific catchment area: the upslope area (the cell's own area
included, m^2) divided by the contour width ``sqrt(|dx dy|)`` (the cell size for
square pixels), in metres. The upslope area comes from D8 flow directions of
``pyflwdir`` on the DEM whose depressions are filled by priority flood (Wang &
Liu 2006): each cell drains to the neighbour the flood reached it from (its
lowest filled neighbour, which also drains flats towards their outlet). Every
cell on the edge of the valid data (raster border, nodata holes) is an outlet,
so catchments cut by the raster border are truncated.

**Nodata and edges.** A local factor is NaN wherever its 3x3 window holds a
nodata cell, and on the outer one-pixel ring of the raster (as ``gdaldem``
without ``-compute_edges``), so a nodata cell never spreads further than one
pixel. TWI is NaN where the slope is. Flow routing uses every valid cell.

**Memory.** Local factors are computed block by block (``BLOCK_SIZE`` pixels a
side, read with a one-pixel halo): about 150 bytes per block pixel (float64
temporaries), so about 150 MB for 1024 x 1024 blocks whatever the DEM size. TWI
needs global flow routing, done in one pass over the DEM read once into a
float32 array: the routing peaks at about 28 bytes per DEM pixel (float32 DEM,
reused for the cell areas; uint8 D8 directions and flood bookkeeping; int32
downstream indices, distances to the outlet and cell order, and the int64
argsort behind the order; the float32 accumulation), measured at 456 MB for a
4000 x 4000 DEM; only the float32 specific catchment area (4 bytes per pixel)
is kept for the block pass. A 10 000 x 10 000 DEM thus needs about 3 GB. The
priority flood takes about 0.5 microseconds per pixel on one core.

**Dask workers.** With ``WORKERS`` > 1 or a ``SCHEDULER`` the windows are
computed by Dask workers (:mod:`.terrain_cluster`): each reads its window and
one-pixel halo from the DEM's path and computes its bands with the functions of
the one-process loop. The flow routing, which needs the whole DEM, runs whole on
one worker while the others compute the local bands (or first in the job's
process, with one worker or when no worker has the memory). The output equals a
one-process run bit for bit.

**Units and CRS.** ``Z_FACTOR`` converts elevations to the CRS's horizontal
unit, as in gdaldem and QGIS (1 when both are metres, or both feet; 3.2808 for
elevations in metres on a CRS in international feet). Horizontal sizes and the
scaled elevations are then converted from the CRS's linear unit to metres
(feet, US survey feet, ...), so curvatures are in 1/m and the catchment area in
metres whatever the CRS. For a geographic DEM, elevations times ``Z_FACTOR``
are taken as metres. A DEM in a geographic CRS is refused unless
``GEOGRAPHIC=degrees_to_metres``: then every row gets its own metres per degree
from the latitude of its centre on the WGS 84 ellipsoid: ``N(lat) cos(lat) pi/180``
metres per degree east-west and ``M(lat) pi/180`` north-south (prime-vertical
and meridional radii of curvature). Rotated grids and DEMs without a
CRS are refused.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.errors import CRSError
from rasterio.windows import Window

from slidewise.contract.specs.terrainfactors import SPEC as TERRAIN_SPEC
from slidewise.engine.core.errors import EngineError, InputError
from slidewise.engine.core.job import JobContext, JobResult, Progress
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.core.params import JobParams
from slidewise.engine.geo import raster

TERRAIN_BANDS: tuple[str, ...] = (
    "slope",
    "aspect",
    "aspect_sin",
    "aspect_cos",
    "plan_curvature",
    "profile_curvature",
    "hillshade",
    "twi",
)
"""Names (GeoTIFF band descriptions) of the output bands, in band order."""

BAND_UNITS: tuple[str, ...] = ("degree", "degree", "", "", "1/m", "1/m", "", "")
"""Units written as GeoTIFF band units, in the order of :data:`TERRAIN_BANDS`."""

FLAT_GRADIENT2 = 1e-12
"""Squared gradient below which curvatures are 0 (the slope direction is undefined)."""

WGS84_A = 6378137.0
WGS84_F = 1.0 / 298.257223563
MAX_ABS_LATITUDE = 89.5

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TerrainParams(JobParams):
    """Parameters of the ``terrainfactors`` job (declared in ``contract/specs/terrainfactors.py``).

    Attributes:
        input: DEM path.
        output: GeoTIFF path.
        z_factor: Multiplier converting elevation values to the CRS's horizontal unit
            (to metres for a geographic DEM converted with ``degrees_to_metres``).
        azimuth: Hillshade light azimuth, degrees clockwise from north.
        altitude: Hillshade light altitude above the horizon, degrees.
        block_size: Side of the processing blocks in pixels.
        geographic: ``"refuse"`` or ``"degrees_to_metres"`` for a DEM in degrees.
        min_tan_slope: Floor of ``tan(beta)`` in the TWI.
        workers: WORKERS, local Dask worker processes computing the windows (1: none).
        scheduler: SCHEDULER, address of an existing Dask scheduler.
    """

    SPEC = TERRAIN_SPEC

    input: str = ""
    output: str = ""
    z_factor: float = 1.0
    azimuth: float = 315.0
    altitude: float = 45.0
    block_size: int = 1024
    geographic: str = "refuse"
    min_tan_slope: float = 1e-3
    workers: int = 1
    scheduler: str | None = None


@dataclass(frozen=True)
class PixelGeometry:
    """Signed pixel sizes in metres, row by row.

    Attributes:
        dx: Map-x step per column, in metres, for every row (negative when
            columns run west).
        dy: Map-y step per row, in metres, for every row (negative for north-up
            grids).
        unit: Metres per CRS linear unit (1 for a geographic DEM: its elevations are
            taken as metres); elevations are multiplied by it and the z factor.
        geographic: True when the sizes were converted from degrees.
    """

    dx: FloatArray
    dy: FloatArray
    unit: float = 1.0
    geographic: bool = False

    def rows(self, start: int, count: int) -> tuple[FloatArray, FloatArray]:
        """Sizes of rows ``start .. start + count`` as ``(count, 1)`` columns."""
        sl = slice(start, start + count)
        return self.dx[sl, None], self.dy[sl, None]

    def cell_area(self) -> FloatArray:
        """Cell area in m^2 for every row."""
        return np.abs(self.dx * self.dy)


def metres_per_degree(latitude: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Lengths of one degree of longitude and of latitude on the WGS 84 ellipsoid.

    Args:
        latitude: Geodetic latitudes in degrees.

    Returns:
        ``(east_west, north_south)`` metres per degree: ``N cos(lat)`` and ``M``
        (prime-vertical and meridional radii of curvature) times ``pi / 180``.
    """
    e2 = WGS84_F * (2.0 - WGS84_F)
    phi = np.radians(latitude)
    w = np.sqrt(1.0 - e2 * np.sin(phi) ** 2)
    prime_vertical = WGS84_A / w
    meridional = WGS84_A * (1.0 - e2) / w**3
    rad = math.pi / 180.0
    return prime_vertical * np.cos(phi) * rad, meridional * rad


def pixel_geometry(info: raster.RasterInfo, geographic: str = "refuse") -> PixelGeometry:
    """Work out the pixel sizes of a DEM in metres, refusing what cannot be used.

    Args:
        info: The DEM.
        geographic: ``"refuse"`` or ``"degrees_to_metres"``.

    Raises:
        InputError: no CRS, a geographic CRS that is refused, a CRS without a
            linear unit, a rotated grid, or latitudes too close to a pole.
    """
    name = Path(info.path).name
    if info.crs is None:
        raise InputError(
            f"The DEM '{name}' has no coordinate reference system (CRS), so its pixel size "
            "in metres is unknown: assign its CRS (Raster > Projections > Assign "
            "Projection) or reproject it to a projected CRS, then run again."
        )
    t = info.transform
    if t.b != 0 or t.d != 0:
        raise InputError(
            f"The DEM '{name}' is on a rotated or sheared grid: warp it to a north-up grid "
            "with Warp (reproject) first."
        )
    if t.a == 0 or t.e == 0:
        raise InputError(f"The DEM '{name}' has a zero pixel size: check its georeferencing.")
    rows = np.arange(info.height, dtype=np.float64)
    if info.is_geographic:
        if geographic != "degrees_to_metres":
            raise InputError(
                f"The DEM '{name}' is in a geographic CRS (degrees), so slope and curvature "
                "would mix degrees with metres: reproject it to a projected CRS (for example "
                "UTM) with Warp (reproject), or set GEOGRAPHIC=degrees_to_metres to convert "
                "degrees to metres row by row from the latitude."
            )
        latitude = t.f + (rows + 0.5) * t.e
        if np.max(np.abs(latitude)) > MAX_ABS_LATITUDE:
            raise InputError(
                f"The DEM '{name}' reaches latitude {np.max(np.abs(latitude)):.2f} degrees, "
                "too close to a pole to convert degrees to metres: reproject it to a polar "
                "projected CRS first."
            )
        east_west, north_south = metres_per_degree(latitude)
        return PixelGeometry(dx=t.a * east_west, dy=t.e * north_south, geographic=True)
    try:
        unit_name, factor = info.crs.linear_units_factor
    except CRSError:
        raise InputError(
            f"The CRS of the DEM '{name}' ({info.crs}) has no linear unit: reproject the DEM "
            "to a projected CRS in metres (for example UTM) with Warp (reproject)."
        ) from None
    if not factor or not math.isfinite(factor) or factor <= 0:
        raise InputError(
            f"The CRS unit '{unit_name}' of the DEM '{name}' cannot be converted to metres: "
            "reproject the DEM to a projected CRS in metres."
        )
    ones = np.ones(info.height, dtype=np.float64)
    return PixelGeometry(dx=t.a * factor * ones, dy=t.e * factor * ones, unit=float(factor))


# ---------------------------------------------------------------------------
# Local factors on one block
# ---------------------------------------------------------------------------


def horn_gradient(z: FloatArray, dx: FloatArray, dy: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Horn's gradient of the inner cells of a padded window.

    Args:
        z: Elevations in metres, shape ``(h + 2, w + 2)``; NaN where invalid.
        dx: Signed map-x step per column in metres, broadcastable to ``(h, w)``.
        dy: Signed map-y step per row in metres, broadcastable to ``(h, w)``.

    Returns:
        ``(gx, gy)``: ``dz/dx`` (east) and ``dz/dy`` (north), shape ``(h, w)``;
        NaN where the 3x3 window holds a NaN.
    """
    z0, z1, z2 = z[:-2, :-2], z[:-2, 1:-1], z[:-2, 2:]
    z3, z5 = z[1:-1, :-2], z[1:-1, 2:]
    z6, z7, z8 = z[2:, :-2], z[2:, 1:-1], z[2:, 2:]
    # Same order of operations as gdaldem (exact for integer DEMs anyway).
    gx = ((z2 + z5 + z5 + z8) - (z0 + z3 + z3 + z6)) / (8.0 * dx)
    gy = ((z6 + z7 + z7 + z8) - (z0 + z1 + z1 + z2)) / (8.0 * dy)
    return gx, gy


def evans_young(
    z: FloatArray, dx: FloatArray, dy: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Evans-Young partial derivatives of the inner cells of a padded window.

    Args:
        z: Elevations in metres, shape ``(h + 2, w + 2)``; NaN where invalid.
        dx: Signed map-x step per column in metres, broadcastable to ``(h, w)``.
        dy: Signed map-y step per row in metres, broadcastable to ``(h, w)``.

    Returns:
        ``(p, q, r, s, t)``: ``dz/dx``, ``dz/dy``, ``d2z/dx2``, ``d2z/dxdy`` and
        ``d2z/dy2`` (x east, y north), each of shape ``(h, w)``.
    """
    col_w = z[:-2, :-2] + z[1:-1, :-2] + z[2:, :-2]
    col_c = z[:-2, 1:-1] + z[1:-1, 1:-1] + z[2:, 1:-1]
    col_e = z[:-2, 2:] + z[1:-1, 2:] + z[2:, 2:]
    row_n = z[:-2, :-2] + z[:-2, 1:-1] + z[:-2, 2:]
    row_c = z[1:-1, :-2] + z[1:-1, 1:-1] + z[1:-1, 2:]
    row_s = z[2:, :-2] + z[2:, 1:-1] + z[2:, 2:]
    p = (col_e - col_w) / (6.0 * dx)
    q = (row_s - row_n) / (6.0 * dy)
    r = (col_w + col_e - 2.0 * col_c) / (3.0 * dx * dx)
    t = (row_n + row_s - 2.0 * row_c) / (3.0 * dy * dy)
    s = (z[:-2, :-2] + z[2:, 2:] - z[:-2, 2:] - z[2:, :-2]) / (4.0 * dx * dy)
    return p, q, r, s, t


def curvatures(
    p: FloatArray, q: FloatArray, r: FloatArray, s: FloatArray, t: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Plan (contour) and profile curvature, positive for convex, in 1/m.

    Args:
        p: ``dz/dx``.
        q: ``dz/dy``.
        r: ``d2z/dx2``.
        s: ``d2z/dxdy``.
        t: ``d2z/dy2``.

    Returns:
        ``(plan, profile)``; 0 where the squared gradient is below
        :data:`FLAT_GRADIENT2`, NaN where an input is NaN.
    """
    pp, qq, pq2s = p * p, q * q, 2.0 * p * q * s
    grad2 = pp + qq
    flat = grad2 < FLAT_GRADIENT2
    safe = np.where(flat, 1.0, grad2)
    with np.errstate(invalid="ignore", divide="ignore"):
        profile = -(pp * r + pq2s + qq * t) / (safe * (1.0 + safe) ** 1.5)
        plan = -(qq * r - pq2s + pp * t) / safe**1.5
    profile[flat] = 0.0
    plan[flat] = 0.0
    return plan, profile


def slope_aspect(
    gx: FloatArray, gy: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Slope and aspect from the gradient.

    Args:
        gx: ``dz/dx`` (x east).
        gy: ``dz/dy`` (y north).

    Returns:
        ``(slope, aspect, aspect_sin, aspect_cos)``: slope in degrees; aspect in
        degrees clockwise from north in [0, 360), NaN on flat cells; its sine and
        cosine, 0 on flat cells. NaN where the gradient is NaN.
    """
    norm = np.hypot(gx, gy)
    slope = np.degrees(np.arctan(norm))
    flat = norm == 0.0
    aspect = np.degrees(np.arctan2(-gx, -gy))
    aspect = np.where(aspect < 0.0, aspect + 360.0, aspect) + 0.0  # no -0.0
    aspect[flat] = np.nan
    safe = np.where(flat, 1.0, norm)
    aspect_sin = -gx / safe
    aspect_cos = -gy / safe
    return slope, aspect, aspect_sin, aspect_cos


def hillshade(gx: FloatArray, gy: FloatArray, azimuth: float, altitude: float) -> FloatArray:
    """Hillshade grey levels as gdaldem computes them (before rounding).

    Args:
        gx: ``dz/dx`` (x east), with the z factor applied.
        gy: ``dz/dy`` (y north), with the z factor applied.
        azimuth: Light azimuth, degrees clockwise from north.
        altitude: Light altitude above the horizon, degrees.

    Returns:
        ``1 + 254 cos(i)`` where the incidence cosine is positive, else 1.
    """
    az, alt = math.radians(azimuth), math.radians(altitude)
    cos_i = (math.sin(alt) - math.cos(alt) * (gx * math.sin(az) + gy * math.cos(az))) / np.sqrt(
        1.0 + gx * gx + gy * gy
    )
    with np.errstate(invalid="ignore"):
        return np.where(cos_i > 0.0, 1.0 + 254.0 * cos_i, np.where(np.isnan(cos_i), np.nan, 1.0))


def topographic_wetness(
    sca: npt.NDArray[np.floating[Any]], tan_slope: FloatArray, min_tan_slope: float
) -> FloatArray:
    """``ln(a / tan(beta))`` with ``tan(beta)`` floored at ``min_tan_slope``.

    Args:
        sca: Specific catchment area ``a`` in metres.
        tan_slope: ``tan(beta)``, the gradient magnitude.
        min_tan_slope: Floor of ``tan(beta)``.

    Returns:
        The index; NaN where either input is NaN.
    """
    with np.errstate(invalid="ignore"):
        return np.log(sca.astype(np.float64) / np.maximum(tan_slope, min_tan_slope))


def terrain_block(
    z: FloatArray,
    dx: FloatArray,
    dy: FloatArray,
    sca: npt.NDArray[np.floating[Any]] | None,
    params: TerrainParams,
) -> Float32Array:
    """All terrain factors of one block.

    Args:
        z: Elevations (z factor applied, metres) of the block and a one-pixel halo,
            shape ``(h + 2, w + 2)``, float64, NaN where invalid or outside the DEM.
        dx: Signed map-x step per column in metres, shape ``(h, 1)`` or scalar.
        dy: Signed map-y step per row in metres, shape ``(h, 1)`` or scalar.
        sca: Specific catchment area of the block, shape ``(h, w)``; ``None``
            leaves the TWI out (the local bands only, for a Dask run whose flow
            routing is not done yet: :func:`twi_block` adds it later).
        params: Job parameters.

    Returns:
        ``(8, h, w)`` float32 in the order of :data:`TERRAIN_BANDS` (``(7, h, w)``
        without the TWI when ``sca`` is ``None``).
    """
    h, w = z.shape[0] - 2, z.shape[1] - 2
    bands = len(TERRAIN_BANDS) - (sca is None)
    out = np.empty((bands, h, w), dtype=np.float32)
    gx, gy = horn_gradient(z, dx, dy)
    slope, aspect, aspect_sin, aspect_cos = slope_aspect(gx, gy)
    out[0], out[2], out[3] = slope, aspect_sin, aspect_cos
    del slope, aspect_sin, aspect_cos
    aspect32 = aspect.astype(np.float32)
    aspect32[aspect32 == 360.0] = 0.0  # float32 rounding of 359.99999...
    out[1] = aspect32
    del aspect, aspect32
    out[6] = hillshade(gx, gy, params.azimuth, params.altitude)
    if sca is not None:
        out[7] = topographic_wetness(sca, np.hypot(gx, gy), params.min_tan_slope)
    del gx, gy
    plan, profile = curvatures(*evans_young(z, dx, dy))
    out[4], out[5] = plan, profile
    # The neighbours' NaN propagate through the formulas; Horn's gradient skips
    # the centre cell itself, so a nodata centre is masked explicitly.
    out[:, np.isnan(z[1:-1, 1:-1])] = np.nan
    return out


def twi_block(
    z: FloatArray,
    dx: FloatArray,
    dy: FloatArray,
    sca: npt.NDArray[np.floating[Any]],
    params: TerrainParams,
) -> Float32Array:
    """The TWI band of one block alone, ``(1, h, w)`` float32: band 8 of :func:`terrain_block`.

    The same arithmetic on the same window, so the same bits.
    """
    h, w = z.shape[0] - 2, z.shape[1] - 2
    out = np.empty((1, h, w), dtype=np.float32)
    gx, gy = horn_gradient(z, dx, dy)
    out[0] = topographic_wetness(sca, np.hypot(gx, gy), params.min_tan_slope)
    out[:, np.isnan(z[1:-1, 1:-1])] = np.nan
    return out


# ---------------------------------------------------------------------------
# Flow routing for the TWI
# ---------------------------------------------------------------------------


def read_dem(src: rasterio.io.DatasetReader, rows_per_read: int = 256) -> Float32Array:
    """Read band 1 into one float32 array, NaN where nodata or not finite."""
    dem = np.empty((src.height, src.width), dtype=np.float32)
    for row in range(0, src.height, rows_per_read):
        n = min(rows_per_read, src.height - row)
        data, _ = raster.read_masked(src, Window(0, row, src.width, n), indexes=1)
        dem[row : row + n] = data[0]
    return dem


def specific_catchment_area(
    dem: Float32Array, geometry: PixelGeometry, progress: Progress | None = None
) -> Float32Array:
    """Specific catchment area from D8 flow on the depression-filled DEM.

    Depressions are filled by priority flood (Wang & Liu 2006) with every edge
    cell of the valid data as an outlet; the D8 direction of each cell is the one
    the flood reached it from, which also drains flats towards their outlet.

    Args:
        dem: Elevations, float32, NaN where invalid. **Overwritten**: its memory is
            reused for the cell areas, to keep the peak memory low.
        geometry: Pixel sizes in metres.
        progress: Callback taking a fraction in [0, 1].

    Returns:
        ``a`` = upslope area (m^2, the cell included) / ``sqrt(|dx dy|)`` (m),
        float32, NaN where ``dem`` was NaN.

    Raises:
        EngineError: pyflwdir is not installed in the engine environment.
    """
    report = progress or (lambda fraction: None)
    try:
        import pyflwdir
        from pyflwdir.dem import fill_depressions
    except ImportError:
        raise EngineError(
            "The engine environment lacks the package pyflwdir, needed for the topographic "
            "wetness index: update the Slidewise engine environment."
        ) from None
    # Priority flood: D8 directions (uint8); the filled DEM it also returns is dropped.
    d8 = fill_depressions(dem, nodata=np.nan, outlets="edge")[1]
    report(0.6)
    flwdir = pyflwdir.from_array(d8, ftype="d8", check_ftype=False, cache=False)
    del d8
    invalid = np.isnan(dem)
    area = dem  # reuse the DEM's memory for the cell areas
    area[...] = geometry.cell_area().astype(np.float32)[:, None]
    area[invalid] = 0.0
    # Down- to upstream order by sorting the distance to the outlet: about half the
    # memory of pyflwdir's default "walk" ordering, which keeps an upstream matrix.
    flwdir.order_cells(method="sort")
    report(0.8)
    upslope: Float32Array = flwdir.accuflux(area, nodata=-1.0)
    del area, flwdir
    upslope /= np.sqrt(geometry.cell_area()).astype(np.float32)[:, None]
    upslope[invalid] = np.nan
    report(1.0)
    return upslope


# ---------------------------------------------------------------------------
# Statistics and the job
# ---------------------------------------------------------------------------


#: Statistics of one block: its pixels, and per band (finite pixels, sum, min, max).
WindowStats = tuple[int, tuple[tuple[int, float, float, float], ...]]


def window_stats(block: Float32Array) -> WindowStats:
    """The finite pixels, sum, minimum and maximum of each band of a ``(bands, h, w)`` block.

    Computed where the block is (a Dask worker sends these few numbers back with
    it); added up in window order by :meth:`BandStats.add`, the same sums as a
    one-process run.
    """
    per_band = []
    for band in block:
        values = band[np.isfinite(band)]
        if values.size:
            low, high = float(values.min()), float(values.max())
            per_band.append((int(values.size), float(values.sum(dtype=np.float64)), low, high))
        else:
            per_band.append((0, 0.0, math.inf, -math.inf))
    return int(block[0].size), tuple(per_band)


@dataclass
class BandStats:
    """Running min, max, mean and counts of the bands of a raster.

    Attributes:
        names: Band names.
        count: Finite pixels per band.
        total: Pixels seen per band.
        sums: Sum of finite values per band.
        mins: Minimum per band.
        maxs: Maximum per band.
    """

    names: tuple[str, ...]
    count: list[int] = field(default_factory=list)
    total: int = 0
    sums: list[float] = field(default_factory=list)
    mins: list[float] = field(default_factory=list)
    maxs: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.names)
        self.count, self.sums = [0] * n, [0.0] * n
        self.mins, self.maxs = [math.inf] * n, [-math.inf] * n

    def update(self, block: Float32Array) -> None:
        """Add a ``(bands, h, w)`` block."""
        self.add(window_stats(block))

    def add(self, stats: WindowStats, first_band: int = 0) -> None:
        """Add the statistics of a block (:func:`window_stats`, maybe from a Dask worker).

        Args:
            stats: The block's statistics.
            first_band: Index of the block's first band (a Dask run writes the
                TWI band in a second pass); its pixels are counted once, with band 0.
        """
        total, per_band = stats
        if first_band == 0:
            self.total += total
        for i, (n, band_sum, low, high) in enumerate(per_band, start=first_band):
            if n:
                self.count[i] += n
                self.sums[i] += band_sum
                self.mins[i] = min(self.mins[i], low)
                self.maxs[i] = max(self.maxs[i], high)

    def figures(self) -> dict[str, dict[str, float | int | None]]:
        """Per-band ``min``, ``max``, ``mean``, ``valid_pixels``, ``nodata_pixels``."""
        result: dict[str, dict[str, float | int | None]] = {}
        for i, name in enumerate(self.names):
            n = self.count[i]
            result[name] = {
                "min": self.mins[i] if n else None,
                "max": self.maxs[i] if n else None,
                "mean": self.sums[i] / n if n else None,
                "valid_pixels": n,
                "nodata_pixels": self.total - n,
            }
        return result


def _padded_block(
    src: rasterio.io.DatasetReader, read: Window, write: Window, z_factor: float
) -> FloatArray:
    """Read a block with its halo into a NaN-padded float64 array (z factor applied)."""
    rows, cols = int(write.height), int(write.width)
    z = np.full((rows + 2, cols + 2), np.nan, dtype=np.float64)
    data, _ = raster.read_masked(src, read, indexes=1)
    r0 = int(read.row_off) - (int(write.row_off) - 1)
    c0 = int(read.col_off) - (int(write.col_off) - 1)
    z[r0 : r0 + data.shape[1], c0 : c0 + data.shape[2]] = data[0]
    if z_factor != 1.0:
        z *= z_factor
    return z


def window_factors(
    src: Any,
    windows: tuple[Window, Window],
    params: TerrainParams,
    geometry: PixelGeometry,
    sca: npt.NDArray[np.floating[Any]] | None,
    part: str = "all",
) -> tuple[Float32Array, WindowStats]:
    """The terrain bands of one window, read with its one-pixel halo from ``src``, and their stats.

    The one-process loop and the Dask workers (:mod:`.terrain_cluster`) both call
    it, so their outputs are equal bit for bit.

    Args:
        src: The open DEM dataset.
        windows: ``(read window with halo, write window)`` of
            :func:`slidewise.engine.geo.raster.iter_windows` with ``halo=1``.
        params: Job parameters (z factor, hillshade light, TWI floor).
        geometry: Pixel sizes per row (:func:`pixel_geometry`).
        sca: Specific catchment area of the write window, shape ``(h, w)``
            (``None`` for ``part="local"``).
        part: ``"all"`` (the 8 bands), ``"local"`` (the 7 bands before the TWI)
            or ``"twi"`` (the TWI band alone).

    Returns:
        ``(bands, h, w)`` float32 in the order of :data:`TERRAIN_BANDS`, and its
        :func:`window_stats`.
    """
    read, write = windows
    z = _padded_block(src, read, write, params.z_factor * geometry.unit)
    dx, dy = geometry.rows(int(write.row_off), int(write.height))
    if part == "twi":
        if sca is None:
            raise ValueError("the TWI band needs the catchment area")
        block = twi_block(z, dx, dy, sca, params)
    else:
        block = terrain_block(z, dx, dy, None if part == "local" else sca, params)
    return block, window_stats(block)


def window_sca(sca: npt.NDArray[np.floating[Any]], write: Window) -> npt.NDArray[np.floating[Any]]:
    """The specific catchment area of a write window (a view of the whole raster's)."""
    row, col = int(write.row_off), int(write.col_off)
    return sca[row : row + int(write.height), col : col + int(write.width)]


#: The bands of a window and their statistics.
WindowResult = tuple[Float32Array, WindowStats]
#: The results of every window, in window order: computed here or by Dask workers.
BlockSource = Callable[[list[tuple[Window, Window, Any]]], Generator[WindowResult, None, None]]


def terrain_windows(
    info: raster.RasterInfo, params: TerrainParams
) -> list[tuple[Window, Window, Any]]:
    """The job's windows: ``BLOCK_SIZE`` blocks, each read with a one-pixel halo."""
    return list(raster.iter_windows(info.width, info.height, block=params.block_size, halo=1))


def set_band_units(dst: Any) -> None:
    """Write :data:`BAND_UNITS` as the output's GeoTIFF band units."""
    for band, unit in enumerate(BAND_UNITS, start=1):
        if unit:
            dst.set_band_unit(band, unit)


def write_factors(
    src: Any,
    info: raster.RasterInfo,
    output: str,
    params: TerrainParams,
    geometry: PixelGeometry,
    sca: npt.NDArray[np.floating[Any]],
    report: Progress,
    remote: BlockSource | None = None,
) -> BandStats:
    """Write the terrain bands block by block (progress 0.4 to 1) and return their statistics.

    Args:
        src: The open DEM dataset.
        info: The DEM.
        output: GeoTIFF path, written atomically.
        params: Job parameters (block size, z factor, hillshade light).
        geometry: Pixel sizes per row (:func:`pixel_geometry`).
        sca: Specific catchment area of the whole DEM.
        report: Callback taking a fraction in [0, 1].
        remote: The windows' bands computed elsewhere (a Dask cluster), in window
            order; ``None`` computes them here.
    """
    profile = raster.output_profile(info, count=len(TERRAIN_BANDS), dtype="float32")
    stats = BandStats(TERRAIN_BANDS)
    windows = terrain_windows(info, params)
    if remote is None:
        blocks: Generator[WindowResult, None, None] = (
            window_factors(src, (read, write), params, geometry, window_sca(sca, write))
            for read, write, _inner in windows
        )
    else:
        blocks = remote(windows)
    # Closing the blocks cancels a cluster's outstanding tasks at once (error or cancel).
    with (
        contextlib.closing(blocks),
        raster.create_raster(output, profile, band_names=TERRAIN_BANDS) as dst,
    ):
        set_band_units(dst)
        for i, ((_read, write, _inner), (block, block_stats)) in enumerate(
            zip(windows, blocks, strict=True)
        ):
            dst.write(block, window=write)
            stats.add(block_stats)
            report(0.4 + 0.6 * (i + 1) / len(windows))
    return stats


def no_valid_elevation(path: str) -> InputError:
    """The error for a DEM whose every pixel is nodata."""
    return InputError(
        f"The DEM '{Path(path).name}' has no valid elevation (every pixel is nodata): "
        "choose a DEM with data."
    )


@dataclass
class TerrainRun:
    """What a run of the routing and the windows leaves for the figures.

    Attributes:
        stats: Statistics of the written bands.
        valid: Valid DEM pixels.
        routing_seconds: Wall time of the flow routing.
        routing_cpu_seconds: CPU time of the job's process in the routing.
        windows_seconds: Wall time of the window loop.
        windows_cpu_seconds: CPU time of the job's process in the window loop.
        extra: More figures (the Dask cluster's).
    """

    stats: BandStats
    valid: int
    routing_seconds: float = 0.0
    routing_cpu_seconds: float = 0.0
    windows_seconds: float = 0.0
    windows_cpu_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def terrain_here(
    src: Any,
    info: raster.RasterInfo,
    output: str,
    params: TerrainParams,
    geometry: PixelGeometry,
    say: Callable[[str], None],
    report: Progress,
    remote: Callable[[Float32Array], BlockSource] | None = None,
) -> TerrainRun:
    """Route the flow in this process, then write the windows (computed here or by ``remote``).

    Args:
        src: The open DEM dataset.
        info: The DEM.
        output: GeoTIFF path, written atomically.
        params: Job parameters.
        geometry: Pixel sizes per row.
        say: Callback for log lines.
        report: Callback taking a fraction in [0, 1].
        remote: Given the routed catchment area, the windows' source on a Dask
            cluster; ``None`` computes them here.
    """
    started, cpu = time.perf_counter(), time.process_time()
    sca, valid = route_dem(src, geometry, say, report)
    routed, routed_cpu = time.perf_counter() - started, time.process_time() - cpu
    say(f"Flow routing done in {routed:.1f} s.")
    started, cpu = time.perf_counter(), time.process_time()
    source = None if remote is None else remote(sca)
    stats = write_factors(src, info, output, params, geometry, sca, report, source)
    windows, windows_cpu = time.perf_counter() - started, time.process_time() - cpu
    return TerrainRun(stats, valid, routed, routed_cpu, windows, windows_cpu)


def route_dem(
    src: Any, geometry: PixelGeometry, say: Callable[[str], None], report: Progress
) -> tuple[Float32Array, int]:
    """Read the whole DEM and route its flow (progress 0 to 0.4), in the job's process.

    Returns:
        The specific catchment area (:func:`specific_catchment_area`) and the
        number of valid DEM pixels.

    Raises:
        InputError: every pixel of the DEM is nodata.
    """
    dem = read_dem(src)
    valid = int(np.count_nonzero(np.isfinite(dem)))
    if valid == 0:
        raise no_valid_elevation(src.name)
    report(0.05)
    say(f"Flow routing for the TWI over {valid} valid pixels (D8 on the filled DEM)...")
    return specific_catchment_area(dem, geometry, lambda f: report(0.05 + 0.35 * f)), valid


def compute_terrain(
    info: raster.RasterInfo,
    output: str,
    params: TerrainParams,
    log: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Compute the terrain factors of a validated DEM and write them to ``output``.

    Args:
        info: The DEM (band 1 is used).
        output: GeoTIFF path, written atomically.
        params: Job parameters.
        log: Callback for log lines.
        progress: Callback taking a fraction in [0, 1].

    Returns:
        Figures: per-band statistics and pixel counts.

    Raises:
        InputError: the DEM cannot be used (see :func:`pixel_geometry`), is too
            small, or has no valid cell.
    """
    say = log or (lambda message: None)
    report = progress or (lambda fraction: None)
    name = Path(info.path).name
    geometry = pixel_geometry(info, params.geographic)
    if info.width < 3 or info.height < 3:
        raise InputError(
            f"The DEM '{name}' has {info.width} x {info.height} pixels: terrain factors need "
            "at least 3 x 3."
        )
    mid = info.height // 2
    say(
        f"DEM {name}: {info.width} x {info.height} pixels, pixel size "
        f"{abs(geometry.dx[mid]):.3f} x {abs(geometry.dy[mid]):.3f} m"
        + (" (converted from degrees at the middle row)" if geometry.geographic else "")
    )

    from slidewise.engine.core.cluster import ClusterOptions
    from slidewise.engine.preparation.terrain_cluster import terrain_on_cluster

    started = time.perf_counter()
    with rasterio.open(info.path) as src:
        if ClusterOptions(params.workers, params.scheduler).parallel:
            run = terrain_on_cluster(src, info, output, params, geometry, say, report)
        else:
            run = terrain_here(src, info, output, params, geometry, say, report)
    stats, valid = run.stats, run.valid
    flat = stats.count[0] - stats.count[1]
    say(
        f"Wrote {len(TERRAIN_BANDS)} bands to {Path(output).name}; {flat} flat pixels have "
        "no aspect (NaN), their aspect_sin and aspect_cos are 0."
    )
    return {
        "bands": stats.figures(),
        "width": info.width,
        "height": info.height,
        "pixels": info.width * info.height,
        "dem_valid_pixels": valid,
        "flat_pixels": flat,
        "pixel_size_x_m": float(abs(geometry.dx[mid])),
        "pixel_size_y_m": float(abs(geometry.dy[mid])),
        "degrees_to_metres": geometry.geographic,
        "flow_routing": f"D8 on the depression-filled DEM (pyflwdir {_version('pyflwdir')})",
        "flow_routing_seconds": round(run.routing_seconds, 3),
        "windows_seconds": round(run.windows_seconds, 3),
        # CPU time of the job's process (its Dask workers' not included)
        "flow_routing_cpu_seconds": round(run.routing_cpu_seconds, 3),
        "windows_cpu_seconds": round(run.windows_cpu_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
        **run.extra,
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown version"


def run_job(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """The ``terrainfactors`` job: slope, aspect, curvatures, hillshade and TWI.

    Parameters: ``INPUT`` (DEM path), ``OUTPUT`` (GeoTIFF path), optional
    ``Z_FACTOR`` (1), ``AZIMUTH`` (315), ``ALTITUDE`` (45), ``BLOCK_SIZE`` (1024)
    ``GEOGRAPHIC`` (``refuse`` or ``degrees_to_metres``), ``WORKERS`` (1) and
    ``SCHEDULER``. See the module docstring for the formulas.

    Raises:
        InputError: a parameter or the DEM is unusable; no output is left behind.
    """
    options = TerrainParams.from_params(params)
    source, output = options.input, options.output
    if Path(output).suffix.lower() not in (".tif", ".tiff"):
        raise InputError(
            f"The output '{Path(output).name}' must be a GeoTIFF: give it a .tif extension."
        )
    info = raster.open_raster(source, "DEM")
    check_writable(output)
    if info.count > 1:
        ctx.warn(f"The DEM '{Path(source).name}' has {info.count} bands: band 1 is used.")
    figures = compute_terrain(info, output, options, log=ctx.log, progress=ctx.stage(1, 99))
    return JobResult(outputs={"OUTPUT": output}, figures=figures, inputs=[source])
