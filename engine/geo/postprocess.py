"""Post-processing of landslide masks into polygons a mapper would keep.

The parameters are declared in :mod:`slidewise.contract.specs.polygons`; the
defaults follow the pixel size (:func:`resolve_settings`). The steps, in order:

1. **Opening, then closing** of the landslide pixels with a disc
   (:func:`disc`, :func:`open_close`): removes specks and threads, joins parts
   separated by thin gaps. :class:`StripMorphology` does it on row strips with
   a halo of context rows, so the result is the same as on the whole raster.
   Outside the raster the mask is continued (edge padding), so objects cut by
   the raster border are not eroded there; landslide pixels never spread onto
   nodata.
2. **Polygons** of the 4-connected components, joined across strips
   (:class:`~slidewise.engine.geo.polygons.PolygonCollector`), with
   **hole filling** below a size, the **minimum area**, and a
   **topology-preserving simplification** that keeps the polygons valid and
   apart (:func:`~slidewise.engine.geo.polygons.simplify_apart`).
3. **Attributes**: area, perimeter, compactness, probability and, with a DEM,
   mean slope (:mod:`slidewise.engine.geo.slope`).

:class:`PolygonBuilder` chains the three for the ``maplandslides`` job.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine

from slidewise.contract.specs.polygons import (
    DEFAULT_HOLE_PIXELS,
    DEFAULT_MIN_PIXELS,
    DEFAULT_SIMPLIFY_PIXELS,
)
from slidewise.engine.geo.polygons import PolygonCollector, pixel_areas


@dataclass(frozen=True)
class PolygonOptions:
    """Post-processing as the user set it (``None``: the default for the pixel size).

    Attributes:
        min_area: Smallest polygon kept, m² (``area_m2``).
        max_hole_area: Holes smaller than this are filled, m².
        opening_radius: Opening disc radius, pixels.
        closing_radius: Closing disc radius, pixels.
        simplify_tolerance: Douglas-Peucker tolerance, map units.
    """

    min_area: float | None = None
    max_hole_area: float | None = None
    opening_radius: int = 1
    closing_radius: int = 1
    simplify_tolerance: float | None = None

    @classmethod
    def off(cls) -> PolygonOptions:
        """No post-processing: every component as its pixel outline."""
        return cls(0.0, 0.0, 0, 0, 0.0)

    @classmethod
    def from_job(cls, params: Any) -> PolygonOptions:
        """The options of job parameters that have the fields of the spec's group."""
        return cls(
            min_area=params.min_area,
            max_hole_area=getattr(params, "max_hole_area", 0.0),
            opening_radius=params.opening_radius,
            closing_radius=params.closing_radius,
            simplify_tolerance=getattr(params, "simplify_tolerance", 0.0),
        )


@dataclass(frozen=True)
class PolygonSettings:
    """Post-processing resolved for one raster.

    Attributes:
        min_area: Smallest polygon kept, m² (squared map units without a CRS).
        max_hole_area: Largest hole filled (exclusive), m².
        opening_radius: Opening disc radius, pixels.
        closing_radius: Closing disc radius, pixels.
        simplify_tolerance: Simplification tolerance, map units.
        pixel_area: Ground area of a pixel at the raster's centre row, m².
        pixel_size: Side of a pixel in map units (square root of its map area).
    """

    min_area: float
    max_hole_area: float
    opening_radius: int
    closing_radius: int
    simplify_tolerance: float
    pixel_area: float
    pixel_size: float

    @property
    def halo(self) -> int:
        """Rows of context each output row of the opening and closing depends on."""
        return 2 * (self.opening_radius + self.closing_radius)

    @property
    def simplify_pixels(self) -> float:
        """The simplification tolerance in pixels."""
        return self.simplify_tolerance / self.pixel_size if self.pixel_size else 0.0

    def describe(self) -> str:
        """The settings in words, with areas in m² and pixels, for the log."""

        def area(value: float) -> str:
            if value <= 0:
                return "off"
            return f"{value:.4g} m² ({value / self.pixel_area:.3g} px)"

        return (
            f"Polygon post-processing: minimum area {area(self.min_area)}, holes filled below "
            f"{area(self.max_hole_area)}, opening radius {self.opening_radius} px, closing "
            f"radius {self.closing_radius} px, simplification "
            + (
                f"{self.simplify_tolerance:.4g} map units ({self.simplify_pixels:.3g} px)."
                if self.simplify_tolerance > 0
                else "off."
            )
        )


def resolve_settings(
    options: PolygonOptions, transform: Affine, crs: Any, height: int
) -> PolygonSettings:
    """Fill the unset options from the pixel size of a raster.

    Areas left unset are the ground area of
    :data:`~slidewise.contract.specs.polygons.DEFAULT_MIN_PIXELS` (minimum area)
    or :data:`~slidewise.contract.specs.polygons.DEFAULT_HOLE_PIXELS` (holes)
    pixels at the raster's centre row (:func:`pixel_areas`); the tolerance, one
    pixel size in map units.
    """
    pixel_area = float(pixel_areas(transform, crs, max(0, height // 2), 1)[0])
    size = math.sqrt(abs(transform.a * transform.e - transform.b * transform.d))
    return PolygonSettings(
        min_area=DEFAULT_MIN_PIXELS * pixel_area if options.min_area is None else options.min_area,
        max_hole_area=(
            DEFAULT_HOLE_PIXELS * pixel_area
            if options.max_hole_area is None
            else options.max_hole_area
        ),
        opening_radius=int(options.opening_radius),
        closing_radius=int(options.closing_radius),
        simplify_tolerance=(
            DEFAULT_SIMPLIFY_PIXELS * size
            if options.simplify_tolerance is None
            else options.simplify_tolerance
        ),
        pixel_area=pixel_area,
        pixel_size=size,
    )


# --------------------------------------------------------------------------- morphology


def disc(radius: int) -> np.ndarray:
    """A digital disc: pixels whose centre is within ``radius + 0.5`` of the centre.

    Radius 1 is the 3 x 3 square (so opening keeps rectangles whole), radius 2
    the 5 x 5 square without its corners, and so on.
    """
    r = int(radius)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return np.asarray(x * x + y * y <= (r + 0.5) ** 2)


def open_close(mask: np.ndarray, opening: int, closing: int) -> np.ndarray:
    """Opening then closing of a binary mask with discs, the raster continued at its edges.

    Args:
        mask: ``(rows, cols)`` bool.
        opening: Opening radius in pixels (0: none).
        closing: Closing radius in pixels (0: none).

    Returns:
        The filtered mask (same shape).
    """
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    halo = 2 * (opening + closing)
    if halo == 0 or not m.any():
        return m.copy()
    out = np.pad(m, halo, mode="edge")
    if opening:
        out = ndimage.binary_opening(out, structure=disc(opening))
    if closing:
        out = ndimage.binary_closing(out, structure=disc(closing))
    return np.asarray(out[halo:-halo, halo:-halo])


class StripMorphology:
    """:func:`open_close` on row strips, with the result of the whole raster.

    Strips go in with :meth:`add` (top to bottom, no gaps) and come out with a
    delay of :attr:`PolygonSettings.halo` rows; :meth:`finish` returns the rest.
    Only the strip and ``2 * halo`` rows of context are held.

    Args:
        opening: Opening radius, pixels.
        closing: Closing radius, pixels.
    """

    def __init__(self, opening: int, closing: int) -> None:
        self.opening, self.closing = int(opening), int(closing)
        self.halo = 2 * (self.opening + self.closing)
        self._top = 0  # raster row of the first row held
        self._done = 0  # first row not yet returned
        self._mask = np.zeros((0, 0), dtype=bool)
        self._valid = np.zeros((0, 0), dtype=bool)
        self._prob = np.zeros((0, 0), dtype=np.float64)

    def add(
        self, row_off: int, mask: np.ndarray, valid: np.ndarray, prob: np.ndarray
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Add a strip; yield the finished ``(row_off, mask, prob)`` strips."""
        if self._mask.size == 0 and self._top == 0 and self._done == 0:
            self._mask = np.zeros((0, mask.shape[1]), dtype=bool)
            self._valid = self._mask.copy()
            self._prob = np.zeros((0, mask.shape[1]), dtype=np.float64)
        if row_off != self._top + len(self._mask):
            raise ValueError(f"expected the strip at row {self._top + len(self._mask)}")
        self._mask = np.concatenate([self._mask, np.asarray(mask, dtype=bool)])
        self._valid = np.concatenate([self._valid, np.asarray(valid, dtype=bool)])
        self._prob = np.concatenate([self._prob, np.asarray(prob, dtype=np.float64)])
        yield from self._emit(self._top + len(self._mask) - self.halo, last=False)

    def finish(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield the rows still held (the raster's last rows)."""
        yield from self._emit(self._top + len(self._mask), last=True)

    def _emit(self, end: int, last: bool) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        if end <= self._done:
            return
        m = self._mask
        if not last:
            # Rows past the held ones are unknown: continue the last one, and do
            # not return the rows that depend on them.
            m = np.concatenate([m, np.repeat(m[-1:], self.halo, axis=0)])
        # Rows above the held ones: the raster edge (edge padding) when _top is 0,
        # else at least ``halo`` rows of context are held, so padding is never reached.
        filtered = open_close(m, self.opening, self.closing)
        a, b = self._done - self._top, end - self._top
        out = filtered[a:b] & self._valid[a:b]
        yield self._done, out, self._prob[a:b]
        self._done = end
        drop = max(0, self._done - self.halo - self._top)
        self._mask, self._valid, self._prob = (
            self._mask[drop:],
            self._valid[drop:],
            self._prob[drop:],
        )
        self._top += drop


# --------------------------------------------------------------------------- polygons


class PolygonBuilder:
    """Landslide polygons of a thresholded probability streamed in strips.

    Args:
        width: Raster columns.
        transform: Raster transform.
        crs: Raster CRS.
        settings: The post-processing (:func:`resolve_settings`).
        dem: Optional DEM path: adds ``mean_slope`` (degrees).

    Feed strips with :meth:`add`; :meth:`finish` returns geometries (map
    coordinates) and fields (:data:`slidewise.contract.specs.polygons.POLYGON_FIELDS`).
    """

    def __init__(
        self,
        width: int,
        transform: Affine,
        crs: Any,
        settings: PolygonSettings,
        dem: str | None = None,
    ) -> None:
        self.settings, self.crs, self.dem = settings, crs, dem
        self.morphology = StripMorphology(settings.opening_radius, settings.closing_radius)
        self.collector = PolygonCollector(
            width,
            transform,
            crs,
            min_area=settings.min_area,
            max_hole_area=settings.max_hole_area,
            simplify=settings.simplify_pixels,
        )

    @property
    def dropped(self) -> int:
        """Polygons dropped as smaller than the minimum area."""
        return self.collector.dropped

    def add(self, row_off: int, mask: np.ndarray, probability: np.ndarray) -> None:
        """Add the next strip: landslide mask and probability (NaN = nodata)."""
        prob = np.asarray(probability, dtype=np.float64)
        valid = np.isfinite(prob)
        for top, m, p in self.morphology.add(row_off, mask, valid, prob):
            self.collector.add(top, m, p)

    def figures(self) -> dict[str, Any]:
        """The settings used, for the job's figures."""
        s = self.settings
        return {
            "min_area_m2": s.min_area,
            "max_hole_area_m2": s.max_hole_area,
            "opening_radius_px": s.opening_radius,
            "closing_radius_px": s.closing_radius,
            "simplify_tolerance": s.simplify_tolerance,
            "pixel_area_m2": s.pixel_area,
            "dem": self.dem or "",
        }

    def finish(self) -> tuple[list[Any], dict[str, np.ndarray]]:
        """The polygons (map coordinates) and their fields."""
        for top, m, p in self.morphology.finish():
            self.collector.add(top, m, p)
        geoms, fields = self.collector.finish()
        if self.dem:
            from slidewise.engine.geo.slope import mean_slopes

            fields["mean_slope"] = mean_slopes(geoms, self.crs, self.dem)
        return geoms, fields


def postprocess_mask(
    mask: np.ndarray,
    probability: np.ndarray,
    transform: Affine,
    crs: Any,
    settings: PolygonSettings,
    strip_rows: int = 256,
) -> tuple[list[Any], dict[str, np.ndarray]]:
    """Polygons of an in-memory mask with post-processing (strips of ``strip_rows``)."""
    builder = PolygonBuilder(mask.shape[1], transform, crs, settings)
    for r in range(0, mask.shape[0], strip_rows):
        builder.add(r, mask[r : r + strip_rows], probability[r : r + strip_rows])
    return builder.finish()


def polygon_builder(params: Any, info: Any) -> PolygonBuilder:
    """The polygon builder of a job whose parameters hold the spec's polygon group.

    Args:
        params: Job parameters with ``min_area``, ``max_hole_area``,
            ``opening_radius``, ``closing_radius``, ``simplify_tolerance`` and ``dem``.
        info: The mapped raster (:class:`~slidewise.engine.geo.raster.RasterInfo`).

    Raises:
        InputError: the DEM cannot be read.
    """
    from slidewise.engine.geo.raster import open_raster

    settings = resolve_settings(
        PolygonOptions.from_job(params), info.transform, info.crs, info.height
    )
    dem = getattr(params, "dem", None)
    if dem:
        open_raster(dem, what="DEM")
    return PolygonBuilder(info.width, info.transform, info.crs, settings, dem)
