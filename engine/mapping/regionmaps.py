"""Maps from a multi-region model: one region's decoder, or one per area of a polygon layer."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import Progress
from slidewise.engine.imagery.regions import NO_REGION, MultiRegionModel
from slidewise.engine.imagery.tiling import (
    DEFAULT_TILE,
    OutputMaskFn,
    PredictionStats,
    TilingOptions,
    iter_predictions,
)


class _RegionAreas:
    """Which pixels of a raster belong to which region, from a polygon layer.

    Every pixel belongs to at most one region: the first in the model's
    region order whose polygons contain its centre (GDAL's rule).
    """

    def __init__(
        self,
        polygons: Any,
        field_name: str,
        info: Any,
        regions: Sequence[str],
    ) -> None:
        import shapely

        from slidewise.engine.geo.vectors import VectorData, polygons_in_crs, read_vector

        vector = (
            polygons
            if isinstance(polygons, VectorData)
            else read_vector(polygons, what="region polygon layer")
        )
        name = getattr(polygons, "name", None) or Path(str(polygons)).name
        geoms = polygons_in_crs(
            vector, info.crs, f"region layer '{name}'", "choose a polygon layer"
        )
        fields = {k.lower(): k for k in vector.fields}
        key = fields.get(str(field_name).lower())
        if key is None:
            raise InputError(
                f"The region layer '{name}' has no field '{field_name}' (fields: "
                f"{', '.join(vector.fields) or 'none'}): set the region field."
            )
        values = [None if v is None else str(v).strip() for v in vector.fields[key]]
        unknown = sorted({v for v in values if v and v not in regions})
        if unknown:
            raise InputError(
                f"The region layer '{name}' names region(s) {', '.join(unknown)} that the model "
                f"does not have: its regions are {', '.join(regions)}. Fix the '{key}' values "
                "or add the regions with the addregion algorithm."
            )
        self.transform = info.transform
        self.by_region: dict[str, list[Any]] = {}
        for region in regions:
            mine = [
                shapely.make_valid(g) for g, v in zip(geoms, values, strict=True) if v == region
            ]
            if mine:
                self.by_region[region] = mine
        self.order = [r for r in regions if r in self.by_region]
        self.trees = {r: shapely.STRtree(g) for r, g in self.by_region.items()}

    def _inside(self, region: str, window: Any) -> np.ndarray:
        import shapely
        from rasterio.features import geometry_mask
        from rasterio.windows import transform as window_transform

        shape = (int(window.height), int(window.width))
        t = window_transform(window, self.transform)
        x0, y0 = t @ (0, 0)
        x1, y1 = t @ (shape[1], shape[0])
        box = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        hits = self.trees[region].query(box)
        if len(hits) == 0:
            return np.zeros(shape, dtype=bool)
        geoms = [self.by_region[region][i] for i in hits]
        return geometry_mask(geoms, shape, t, invert=True)

    def mask(self, region: str | None, window: Any) -> np.ndarray:
        """Pixels of ``window`` assigned to ``region`` (``None``: covered by no polygon)."""
        shape = (int(window.height), int(window.width))
        taken = np.zeros(shape, dtype=bool)
        for r in self.order:
            inside = self._inside(r, window) & ~taken
            if r == region:
                return inside
            taken |= inside
        if region is None:
            return ~taken
        return np.zeros(shape, dtype=bool)


@dataclass(frozen=True)
class RegionChoice:
    """Which region's decoder maps which pixels.

    Attributes:
        region: Region for the whole raster, or for pixels outside the polygons
            (``None``: the only region of a one-region model, or the polygons alone).
        polygons: Polygon layer path (or :class:`~slidewise.engine.geo.vectors.VectorData`)
            with a region attribute; reprojected to the raster's CRS.
        field_name: Attribute holding region names (case-insensitive field name).
    """

    region: str | None = None
    polygons: Any = None
    field_name: str = "region"


#: One region's decoder and the pixels it predicts (``None``: every pixel).
PlanItem = tuple[str, OutputMaskFn | None]


def iter_region_predictions(
    model: MultiRegionModel,
    raster: Any,
    choice: RegionChoice,
    options: TilingOptions | None = None,
    *,
    bands: Sequence[int] | None = None,
    output_mask: OutputMaskFn | None = None,
    stats: dict[str, Any] | None = None,
) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
    """Landslide probabilities strip by strip, each pixel with its region's decoder.

    Without ``choice.polygons`` every pixel is predicted with ``choice.region``'s
    decoder (``None`` is allowed for a one-region model). With them, pixels
    inside polygons whose ``choice.field_name`` value is a region name use that
    region's decoder (overlaps: the first region in the model's order wins);
    pixels outside every polygon use ``choice.region`` when given, else they are
    nodata (NaN). Each region runs :func:`slidewise.engine.imagery.tiling.iter_predictions`
    over the tiles that hold its pixels, with its own normalisation; the
    strips are merged as they come, so memory stays bounded by one tile row
    per region used.

    The plan (regions, polygons) is checked when this function is called, so
    bad input is refused before any output is opened.

    Args:
        model: The multi-region model (:func:`load_multiregion`).
        raster: Raster path or open rasterio dataset (an array only without polygons).
        choice: The region, and the region polygons.
        options: Tiles, batches, device and progress (``progress`` sees the fraction
            done over all regions; ``stats`` and ``multiple`` are set per region).
            ``None``: the defaults, with the largest region training tile, at least 576.
        bands: 1-based raster bands feeding the model, in the model's band order
            (all bands when ``None``).
        output_mask: Extra ``f(window) -> bool`` (e.g. an AOI): pixels outside are NaN.
        stats: Filled with ``region -> PredictionStats`` and ``"regions"`` (those used).

    Returns:
        An iterator of ``(window, probability, region_index)`` full-width row
        strips: probability float32 with NaN where not predicted, and the
        index in ``model.regions`` of the decoder that predicted each pixel
        (uint8, :data:`NO_REGION` where not predicted).

    Raises:
        InputError: unknown region (listing the model's regions), no region
            for a several-region model, a bad polygon layer, or polygon values
            that are not region names.
    """
    plan = _region_plan(model, raster, choice, output_mask)
    if options is None:
        trained = max(int(model.record(r).get("tile_size") or 0) for r, _ in plan)
        options = TilingOptions(tile=max(trained, DEFAULT_TILE))
    to_close = None
    if choice.polygons is not None and isinstance(raster, (str, os.PathLike)):
        import rasterio

        to_close = raster = rasterio.open(raster)
    streams = _RegionStreams(model, plan, options, stats)
    return streams.merged(raster, bands, to_close)


def _region_plan(
    model: MultiRegionModel, raster: Any, choice: RegionChoice, output_mask: OutputMaskFn | None
) -> list[PlanItem]:
    """The decoders to run and the pixels of each; refuses a choice that maps nothing."""
    region = choice.region
    if region is not None:
        model.require(region)
    if choice.polygons is None:
        if region is None and len(model.regions) != 1:
            raise InputError(
                f"Choose the region whose decoder maps this raster: the model has regions "
                f"{', '.join(model.regions)} (or give a region polygon layer)."
            )
        return [(region or model.regions[0], output_mask)]
    from slidewise.engine.geo.raster import open_raster

    if isinstance(raster, np.ndarray):
        raise InputError("Region polygons need a georeferenced raster, not an array.")
    info = open_raster(raster if isinstance(raster, (str, os.PathLike)) else raster.name)
    areas = _RegionAreas(choice.polygons, choice.field_name, info, model.regions)
    plan: list[PlanItem] = [(r, _area_mask(areas, r, output_mask)) for r in areas.order]
    if region is not None:
        plan.append((region, _area_mask(areas, None, output_mask)))
    if not plan:
        raise InputError(
            "No polygon of the region layer names one of the model's regions "
            f"({', '.join(model.regions)}) and no REGION was given for the rest: fix the "
            "layer's region values or choose a REGION."
        )
    return plan


def _area_mask(
    areas: _RegionAreas, region: str | None, output_mask: OutputMaskFn | None
) -> OutputMaskFn:
    """``f(window) -> bool``: pixels of ``region`` (``None``: no polygon's) in ``output_mask``."""

    def inside(window: Any) -> np.ndarray:
        mine = areas.mask(region, window)
        return mine if output_mask is None else mine & np.asarray(output_mask(window))

    return inside


class _RegionStreams:
    """One tiled prediction per region of the plan, merged strip by strip."""

    def __init__(
        self,
        model: MultiRegionModel,
        plan: list[PlanItem],
        options: TilingOptions,
        stats: dict[str, Any] | None,
    ) -> None:
        self.model, self.plan, self.options, self.stats = model, plan, options, stats
        self.codes = [model.regions.index(r) for r, _ in plan]
        self.run_stats = {r: PredictionStats() for r, _ in plan}
        self.fractions = [0.0] * len(plan)

    def _stage(self, k: int) -> Progress:
        def report(fraction: float) -> None:
            self.fractions[k] = fraction
            if self.options.progress is not None:
                self.options.progress(sum(self.fractions) / len(self.fractions))

        return report

    def _stream(
        self, k: int, src: Any, bands: Sequence[int] | None
    ) -> Iterator[tuple[Any, np.ndarray]]:
        region, mask = self.plan[k]
        options = replace(
            self.options,
            progress=self._stage(k),
            stats=self.run_stats[region],
            multiple=self.model.output_stride,
            gdal_cache_mb=None,
        )
        return iter_predictions(
            self.model.view(region),
            src,
            options,
            bands=bands,
            normalisation=self.model.record(region).get("normalisation") or {},
            output_mask=mask,
        )

    def merged(
        self, src: Any, bands: Sequence[int] | None, to_close: Any
    ) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
        """``(window, probability, region_index)`` strips; closes ``to_close`` at the end."""
        import rasterio

        cache = self.options.gdal_cache_mb
        try:
            # One GDAL environment for all regions: the region streams run interleaved.
            with rasterio.Env(GDAL_CACHEMAX=int(cache)) if cache else nullcontext():
                streams = [self._stream(k, src, bands) for k in range(len(self.plan))]
                # Every stream yields the same strips (same raster, tile and overlap).
                for parts in zip(*streams, strict=True):
                    yield self._merge(parts)
        finally:
            if to_close is not None:
                to_close.close()
        if self.stats is not None:
            self.stats.update(self.run_stats)
            self.stats["regions"] = [r for r, _ in self.plan]

    def _merge(
        self, parts: tuple[tuple[Any, np.ndarray], ...]
    ) -> tuple[Any, np.ndarray, np.ndarray]:
        window, merged = parts[0]
        index = np.where(np.isfinite(merged), self.codes[0], NO_REGION).astype(np.uint8)
        for code, (_, prob) in zip(self.codes[1:], parts[1:], strict=True):
            have = np.isfinite(prob)
            merged = np.where(have, prob, merged)
            index[have] = code
        return window, merged, index


def predict_regions(
    model: MultiRegionModel,
    raster: Any,
    region: str | None = None,
    regions_polygons: Any = None,
    region_field: str = "region",
    *,
    sink: Callable[[Any, np.ndarray], None] | None = None,
    **options: Any,
) -> np.ndarray | None:
    """Map landslide probabilities with one region's decoder, or per area.

    Args:
        model: The multi-region model (:func:`load_multiregion`).
        raster: Raster path or open rasterio dataset (an array only without polygons).
        region: Region for the whole raster, or for pixels outside the polygons.
        regions_polygons: Polygon layer with a region attribute.
        region_field: Attribute holding region names.
        sink: Receives ``(window, probability)`` strips; when ``None`` the whole
            array is returned (small rasters only).
        **options: ``bands``, ``output_mask`` and ``stats`` of
            :func:`iter_region_predictions`, and fields of
            :class:`~slidewise.engine.imagery.tiling.TilingOptions` (tile, overlap,
            batch_size, tta, device, progress...).

    Returns:
        Probabilities (rows, cols) float32 with NaN where not predicted, or
        ``None`` when ``sink`` took the strips.

    Raises:
        InputError: as :func:`iter_region_predictions`.
    """
    keywords = {k: options.pop(k) for k in ("bands", "output_mask", "stats") if k in options}
    tiling = TilingOptions(**options) if options else None
    choice = RegionChoice(region, regions_polygons, region_field)
    strips: list[np.ndarray] = []
    for window, prob, _ in iter_region_predictions(model, raster, choice, tiling, **keywords):
        if sink is not None:
            sink(window, prob)
        else:
            strips.append(prob)
    return None if sink is not None else np.concatenate(strips, axis=0)
