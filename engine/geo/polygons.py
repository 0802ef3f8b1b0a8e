"""Connected components and polygons of a binary raster streamed strip by strip.

Polygonising a large mask window by window is tricky at window borders: an
object cut by a border comes out as two pieces. :class:`StripLabeller`
labels each strip (full-width row band) with :func:`scipy.ndimage.label`,
joins labels that touch across the strip border with a union-find, and
reports a component as soon as it is complete, i.e. when it does not reach the
bottom row of the latest strip. Per-component sums and maxima (pixel count,
area, probability) are merged along with the labels; with ``geometry=True``
each strip is polygonised by :func:`rasterio.features.shapes` in integer pixel
coordinates, so that the pieces of one component share their border edges
exactly and :func:`shapely.union_all` dissolves them into one polygon.

Connectivity is 4 (pixels sharing an edge), the same as the polygons, which
are then always valid single polygons.

Memory: one strip (mask, labels, values), the pieces of components still
open at the strip border, and one union-find entry (a few numbers) per
component seen; finished polygons are handed back and only kept by the
caller (:class:`PolygonCollector` keeps those that pass the area filter,
which is what the output file holds anyway).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from affine import Affine
from scipy import ndimage

EARTH_RADIUS_M = 6371008.8
"""Mean Earth radius (IUGG) used for pixel areas of geographic rasters."""

_FOUR = ndimage.generate_binary_structure(2, 1)


def pixel_areas(transform: Affine, crs: Any, row_off: int, rows: int) -> np.ndarray:
    """Area of one pixel in square metres for each of ``rows`` rows from ``row_off``.

    Projected CRS: the pixel area times the square of the linear unit in metres
    (the same for every row). Geographic CRS (degrees): the exact area of the
    pixel's latitude-longitude cell on a sphere of radius :data:`EARTH_RADIUS_M`.
    Without a CRS the area is in squared pixel units of the transform.
    """
    cell = abs(transform.a * transform.e - transform.b * transform.d)
    if crs is not None and getattr(crs, "is_geographic", False):
        top = transform.f + transform.e * np.arange(row_off, row_off + rows + 1, dtype=np.float64)
        lat = np.radians(np.clip(top, -90.0, 90.0))
        band = np.abs(np.sin(lat[:-1]) - np.sin(lat[1:]))
        return (EARTH_RADIUS_M**2 * math.radians(abs(transform.a)) * band).astype(np.float64)
    factor = 1.0
    if crs is not None:
        try:
            factor = float(crs.linear_units_factor[1])
        except Exception:
            factor = 1.0
    return np.full(rows, cell * factor * factor, dtype=np.float64)


@dataclass
class Components:
    """Finished connected components.

    Attributes:
        pixels: Pixel count of each component.
        sums: Name -> per-component sums of the values given to the labeller.
        maxima: Name -> per-component maxima.
        geometries: Polygons in pixel coordinates (only with ``geometry=True``).
    """

    pixels: np.ndarray
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    maxima: dict[str, np.ndarray] = field(default_factory=dict)
    geometries: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pixels)

    def take(self, index: np.ndarray) -> Components:
        """The components at ``index``, in that order."""
        return Components(
            pixels=self.pixels[index],
            sums={k: v[index] for k, v in self.sums.items()},
            maxima={k: v[index] for k, v in self.maxima.items()},
            geometries=[self.geometries[i] for i in index],
        )

    @classmethod
    def concat(cls, parts: Sequence[Components]) -> Components:
        """Join several batches of components."""
        if not parts:
            return cls(pixels=np.zeros(0, dtype=np.int64))
        return cls(
            pixels=np.concatenate([p.pixels for p in parts]),
            sums={k: np.concatenate([p.sums[k] for p in parts]) for k in parts[0].sums},
            maxima={k: np.concatenate([p.maxima[k] for p in parts]) for k in parts[0].maxima},
            geometries=[g for p in parts for g in p.geometries],
        )


class StripLabeller:
    """4-connected components of a binary raster given as consecutive row strips.

    Args:
        width: Raster columns (every strip is full width).
        sums: Names of values summed per component.
        maxima: Names of values maximised per component.
        geometry: Also build each component's polygon (pixel coordinates: x =
            column, y = row).

    Call :meth:`add` with the strips from top to bottom, then :meth:`finish`.
    """

    def __init__(
        self,
        width: int,
        sums: Sequence[str] = (),
        maxima: Sequence[str] = (),
        geometry: bool = False,
    ) -> None:
        self.width = width
        self.sum_names, self.max_names = tuple(sums), tuple(maxima)
        self.geometry = geometry
        self._parent = np.zeros(1024, dtype=np.int64)
        self._pixels = np.zeros(1024, dtype=np.int64)
        self._sums = {n: np.zeros(1024, dtype=np.float64) for n in self.sum_names}
        self._maxima = {n: np.full(1024, -np.inf, dtype=np.float64) for n in self.max_names}
        self._pieces: dict[int, list[Any]] = {}
        self._count = 1  # id 0 is the background
        self._open = np.zeros(0, dtype=np.int64)
        self._last_row: np.ndarray | None = None
        self._next_row = 0

    # ------------------------------------------------------------ union-find
    def _grow(self, needed: int) -> None:
        size = len(self._parent)
        if needed <= size:
            return
        new = max(needed, 2 * size)
        self._parent = np.resize(self._parent, new)
        self._pixels = np.resize(self._pixels, new)
        for n in self.sum_names:
            self._sums[n] = np.resize(self._sums[n], new)
        for n in self.max_names:
            self._maxima[n] = np.resize(self._maxima[n], new)

    def _roots(self, ids: np.ndarray) -> np.ndarray:
        roots = self._parent[ids]
        while True:
            up = self._parent[roots]
            if np.array_equal(up, roots):
                return roots
            roots = up

    def _find(self, i: int) -> int:
        root = i
        while self._parent[root] != root:
            root = int(self._parent[root])
        while self._parent[i] != root:  # path compression
            self._parent[i], i = root, int(self._parent[i])
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        root, other = (ra, rb) if ra < rb else (rb, ra)
        self._parent[other] = root
        self._pixels[root] += self._pixels[other]
        for n in self.sum_names:
            self._sums[n][root] += self._sums[n][other]
        for n in self.max_names:
            self._maxima[n][root] = max(self._maxima[n][root], self._maxima[n][other])
        if self.geometry:
            self._pieces.setdefault(root, []).extend(self._pieces.pop(other, []))

    # ------------------------------------------------------------ strips
    def add(
        self,
        row_off: int,
        mask: np.ndarray,
        values: dict[str, np.ndarray] | None = None,
    ) -> Components:
        """Add the next strip and return the components it completes.

        Args:
            row_off: Raster row of the strip's first row (strips must follow
                each other without gaps).
            mask: (rows, width) bool: pixels that belong to objects.
            values: Name -> (rows, width) float arrays for the sums and maxima.

        Returns:
            The components that cannot grow any more.
        """
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2 or mask.shape[1] != self.width:
            raise ValueError(f"strips must be (rows, {self.width})")
        if row_off != self._next_row:
            raise ValueError(f"expected the strip at row {self._next_row}, got {row_off}")
        self._next_row = row_off + mask.shape[0]
        values = values or {}
        local, n = ndimage.label(mask, structure=_FOUR)
        base = self._count
        self._count += n
        self._grow(self._count)
        new_ids = np.arange(base, base + n, dtype=np.int64)
        self._parent[new_ids] = new_ids
        if n:
            flat = local.ravel()
            self._pixels[new_ids] = np.bincount(flat, minlength=n + 1)[1:]
            for name in self.sum_names:
                v = np.asarray(values[name], dtype=np.float64).ravel()
                self._sums[name][new_ids] = np.bincount(flat, weights=v, minlength=n + 1)[1:]
            for name in self.max_names:
                v = np.asarray(values[name], dtype=np.float64)
                self._maxima[name][new_ids] = ndimage.maximum(v, local, index=np.arange(1, n + 1))
            if self.geometry:
                self._polygonise(local, mask, row_off, base)
        glob = np.where(local > 0, local + (base - 1), 0)
        if self._last_row is not None and mask.shape[0]:
            above, below = self._last_row, glob[0]
            touching = (above > 0) & (below > 0)
            if touching.any():
                pairs = np.unique(np.stack([above[touching], below[touching]], axis=1), axis=0)
                for a, b in pairs:
                    self._union(int(a), int(b))
        if mask.shape[0]:
            self._last_row = glob[-1].copy()
        last = self._last_row if self._last_row is not None else np.zeros(0, dtype=np.int64)
        still_open = np.unique(self._roots(np.unique(last[last > 0])))
        candidates = np.concatenate([self._open, new_ids])
        candidates = candidates[self._parent[candidates] == candidates]
        closed = np.setdiff1d(candidates, still_open)
        self._open = still_open
        return self._emit(closed)

    def finish(self) -> Components:
        """Return the components still open (those reaching the last row)."""
        closed = self._open[self._parent[self._open] == self._open]
        self._open = np.zeros(0, dtype=np.int64)
        self._last_row = None
        return self._emit(closed)

    def _polygonise(self, local: np.ndarray, mask: np.ndarray, row_off: int, base: int) -> None:
        import shapely.geometry
        from rasterio.features import shapes

        transform = Affine.translation(0, row_off)
        for geom, value in shapes(
            local.astype(np.int32), mask=mask, connectivity=4, transform=transform
        ):
            gid = base + int(value) - 1
            self._pieces.setdefault(gid, []).append(shapely.geometry.shape(geom))

    def _emit(self, ids: np.ndarray) -> Components:
        ids = np.sort(ids)
        out = Components(
            pixels=self._pixels[ids].copy(),
            sums={n: self._sums[n][ids].copy() for n in self.sum_names},
            maxima={n: self._maxima[n][ids].copy() for n in self.max_names},
        )
        if self.geometry:
            import shapely

            for i in ids:
                pieces = self._pieces.pop(int(i), [])
                out.geometries.append(pieces[0] if len(pieces) == 1 else shapely.union_all(pieces))
        return out


class PolygonCollector:
    """Landslide polygons with area, shape and probability figures, from mask strips.

    Args:
        width: Raster columns.
        transform: Raster affine transform (pixel -> map coordinates).
        crs: Raster CRS (for areas and lengths; see :func:`polygon_measures`).
        min_area: Smallest polygon kept, in square metres (``area_m2``, after
            hole filling).
        max_hole_area: Holes smaller than this (square metres) are filled; a
            polygon inside a filled hole joins the polygon around it.
        simplify: Douglas-Peucker tolerance in pixels (0: pixel outlines); see
            :func:`simplify_apart`.

    Feed strips with :meth:`add`; :meth:`finish` returns geometries (map
    coordinates) and the fields ``id``, ``area_m2``, ``perimeter_m``,
    ``compactness``, ``pixels``, ``mean_probability`` and ``max_probability``.
    Holes are filled as components are completed, so only the polygons kept
    are held; the island merge and the simplification need every polygon and
    run in :meth:`finish`.
    """

    def __init__(
        self,
        width: int,
        transform: Affine,
        crs: Any,
        min_area: float = 0.0,
        max_hole_area: float = 0.0,
        simplify: float = 0.0,
    ) -> None:
        self.transform, self.crs, self.min_area = transform, crs, float(min_area)
        self.max_hole_area, self.simplify = float(max_hole_area), float(simplify)
        self.labeller = StripLabeller(
            width, sums=("probability",), maxima=("probability",), geometry=True
        )
        self._kept: list[Components] = []
        self.dropped = 0

    def add(self, row_off: int, mask: np.ndarray, probability: np.ndarray) -> None:
        """Add the next strip (mask and probabilities, NaN where invalid)."""
        prob = np.nan_to_num(np.asarray(probability, dtype=np.float64), nan=0.0)
        self._keep(self.labeller.add(row_off, mask, {"probability": prob}))

    def _pixel_area(self, geom: Any) -> float:
        """Ground area of a pixel at the row of a pixel-coordinate geometry's centre."""
        row = int(max(0.0, (geom.bounds[1] + geom.bounds[3]) / 2))
        return float(pixel_areas(self.transform, self.crs, row, 1)[0])

    def _keep(self, comps: Components) -> None:
        if not len(comps):
            return
        unit = np.array([self._pixel_area(g) for g in comps.geometries])
        if self.max_hole_area > 0:
            comps.geometries = [
                fill_holes(g, self.max_hole_area / a)
                for g, a in zip(comps.geometries, unit, strict=True)
            ]
        area = np.array([g.area for g in comps.geometries]) * unit
        ok = area >= self.min_area
        self.dropped += int(np.count_nonzero(~ok))
        if not ok.all():
            comps = comps.take(np.flatnonzero(ok))
        self._kept.append(comps)

    def finish(self) -> tuple[list[Any], dict[str, np.ndarray]]:
        """Close the last components and return (geometries, fields)."""
        import shapely

        self._keep(self.labeller.finish())
        comps = Components.concat(self._kept)
        self._kept = []
        if self.max_hole_area > 0:
            comps = merge_islands(comps)
        pixel_geoms = simplify_apart(comps.geometries, self.simplify)
        t = self.transform
        matrix = np.array([[t.a, t.b], [t.d, t.e]], dtype=np.float64)
        offset = np.array([t.c, t.f], dtype=np.float64)
        geoms = [shapely.transform(g, lambda xy: xy @ matrix.T + offset) for g in pixel_geoms]
        area, perimeter = polygon_measures(geoms, self.crs)
        small = area < self.min_area  # simplification may take a polygon below it
        if small.any():
            self.dropped += int(np.count_nonzero(small))
            keep = np.flatnonzero(~small)
            comps, geoms = comps.take(keep), [geoms[i] for i in keep]
            area, perimeter = area[keep], perimeter[keep]
        pixels = comps.pixels
        with np.errstate(invalid="ignore", divide="ignore"):
            compact = np.where(perimeter > 0, 4 * np.pi * area / perimeter**2, 0.0)
        fields = {
            "id": np.arange(1, len(pixels) + 1, dtype=np.int64),
            "area_m2": area,
            "perimeter_m": perimeter,
            "compactness": compact.astype(np.float64),
            "pixels": pixels.astype(np.int64),
            "mean_probability": (
                comps.sums.get("probability", np.zeros(0)) / np.maximum(pixels, 1)
            ).astype(np.float64),
            "max_probability": comps.maxima.get("probability", np.zeros(0)).astype(np.float64),
        }
        return geoms, fields


def fill_holes(polygon: Any, max_area: float) -> Any:
    """``polygon`` without its holes smaller than ``max_area`` (in its own units)."""
    import shapely

    if polygon.geom_type != "Polygon" or not polygon.interiors:
        return polygon
    kept = [r for r in polygon.interiors if shapely.Polygon(r).area >= max_area]
    if len(kept) == len(polygon.interiors):
        return polygon
    return shapely.Polygon(polygon.exterior, kept)


def merge_islands(comps: Components) -> Components:
    """Join each polygon that lies inside another (in a filled hole) to the largest one around it.

    Pixel counts and probability sums and maxima are added to the outer polygon;
    the outer polygon's geometry already covers the island.
    """
    import shapely

    geoms = np.asarray(comps.geometries, dtype=object)
    if len(geoms) < 2:
        return comps
    inner, outer = shapely.STRtree(geoms).query(geoms, predicate="within")
    pairs = inner != outer
    inner, outer = inner[pairs], outer[pairs]
    if not len(inner):
        return comps
    areas = shapely.area(geoms)
    target = np.arange(len(geoms))
    best = np.full(len(geoms), -1.0)
    for i, j in zip(inner.tolist(), outer.tolist(), strict=True):
        if areas[j] > best[i]:
            best[i], target[i] = areas[j], j
    pixels = comps.pixels.copy()
    sums = {k: v.copy() for k, v in comps.sums.items()}
    maxima = {k: v.copy() for k, v in comps.maxima.items()}
    for i in np.flatnonzero(target != np.arange(len(geoms))).tolist():
        j = int(target[i])
        pixels[j] += pixels[i]
        for k in sums:
            sums[k][j] += sums[k][i]
        for k in maxima:
            maxima[k][j] = max(maxima[k][j], maxima[k][i])
    merged = Components(pixels, sums, maxima, list(geoms))
    return merged.take(np.flatnonzero(target == np.arange(len(geoms))))


def simplify_apart(geometries: Sequence[Any], tolerance: float) -> list[Any]:
    """Simplify polygons (Douglas-Peucker, topology kept) so that they stay valid and apart.

    Each polygon is simplified with ``preserve_topology=True`` (valid, holes
    kept). Neighbours simplified towards each other could overlap: the
    polygons of every overlapping pair keep their unsimplified outline, until
    no two share any area (the input polygons must not overlap, as the components
    of a mask do not).

    Args:
        geometries: Non-overlapping polygons.
        tolerance: Largest distance a point may move (0: unchanged).

    Returns:
        The simplified polygons, in order.
    """
    import shapely

    original = np.asarray(geometries, dtype=object)
    if tolerance <= 0 or len(original) == 0:
        return list(original)
    # Without collinear vertices and from a canonical start, so that the result does
    # not depend on how the pieces of a polygon were joined across strips.
    original = shapely.normalize(shapely.simplify(original, 0.0))
    out = shapely.simplify(original, tolerance, preserve_topology=True)
    bad = ~shapely.is_valid(out) | shapely.is_empty(out)
    out[bad] = original[bad]
    for _ in range(len(out)):
        a, b = shapely.STRtree(out).query(out, predicate="intersects")
        a, b = a[a < b], b[a < b]
        shared = shapely.area(shapely.intersection(out[a], out[b])) > 1e-9
        if not shared.any():
            break
        clash = np.unique(np.concatenate([a[shared], b[shared]]))
        out[clash] = original[clash]
    return list(out)


def polygon_measures(geometries: Sequence[Any], crs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Area (m²) and perimeter (m) of map-coordinate polygons.

    Projected CRS: planar area and length times the linear unit in metres.
    Geographic CRS: geodesic area and perimeter on the WGS 84 ellipsoid
    (:meth:`pyproj.Geod.geometry_area_perimeter`). Without a CRS: squared map
    units and map units.
    """
    import shapely

    geoms = np.asarray(geometries, dtype=object)
    if len(geoms) == 0:
        return np.zeros(0), np.zeros(0)
    if crs is not None and getattr(crs, "is_geographic", False):
        from pyproj import Geod

        geod = Geod(ellps="WGS84")
        pairs = [geod.geometry_area_perimeter(g) for g in geoms]
        return (
            np.abs(np.array([p[0] for p in pairs], dtype=np.float64)),
            np.array([p[1] for p in pairs], dtype=np.float64),
        )
    factor = 1.0
    if crs is not None:
        try:
            factor = float(crs.linear_units_factor[1])
        except Exception:
            factor = 1.0
    area = shapely.area(geoms).astype(np.float64) * factor * factor
    return area, shapely.length(geoms).astype(np.float64) * factor


def polygonise_mask(
    mask: np.ndarray,
    probability: np.ndarray,
    transform: Affine,
    crs: Any = None,
    min_area: float = 0.0,
    strip_rows: int = 256,
) -> tuple[list[Any], dict[str, np.ndarray]]:
    """Polygons of an in-memory mask, processed in strips of ``strip_rows`` rows."""
    collector = PolygonCollector(mask.shape[1], transform, crs, min_area)
    for r in range(0, mask.shape[0], strip_rows):
        collector.add(r, mask[r : r + strip_rows], probability[r : r + strip_rows])
    return collector.finish()
