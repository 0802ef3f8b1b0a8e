"""Maps from a multi-region model: one region's decoder, or one per area of a polygon layer."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slidewise.engine.core.errors import InputError
from slidewise.engine.imagery.regions import NO_REGION, MultiRegionModel, ProgressFn


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


def iter_region_predictions(
    model: MultiRegionModel,
    raster: Any,
    region: str | None = None,
    regions_polygons: Any = None,
    region_field: str = "region",
    *,
    bands: Sequence[int] | None = None,
    output_mask: Callable[[Any], np.ndarray] | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    tta: bool = False,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
    stats: dict[str, Any] | None = None,
) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
    """Landslide probabilities strip by strip, each pixel with its region's decoder.

    Without ``regions_polygons`` every pixel is predicted with ``region``'s
    decoder (``None`` is allowed for a one-region model). With it, pixels
    inside polygons whose ``region_field`` value is a region name use that
    region's decoder (overlaps: the first region in the model's order wins);
    pixels outside every polygon use ``region`` when given, else they are
    nodata (NaN). Each region runs :func:`slidewise.engine.imagery.tiling.iter_predictions`
    over the tiles that hold its pixels, with its own normalisation; the
    strips are merged as they come, so memory stays bounded by one tile row
    per region used.

    The plan (regions, polygons) is checked when this function is called, so
    bad input is refused before any output is opened.

    Args:
        model: The multi-region model (:func:`load_multiregion`).
        raster: Raster path or open rasterio dataset (an array only without polygons).
        region: Region for the whole raster, or for pixels outside the polygons.
        regions_polygons: Polygon layer path (or :class:`~slidewise.engine.geo.vectors.VectorData`)
            with a region attribute; reprojected to the raster's CRS.
        region_field: Attribute holding region names (case-insensitive field name).
        bands: 1-based raster bands feeding the model, in the model's band order
            (all bands when ``None``).
        output_mask: Extra ``f(window) -> bool`` (e.g. an AOI): pixels outside are NaN.
        tile: Tile side (default: the largest region training tile, at least 576).
        overlap: Tile overlap (default :data:`slidewise.engine.imagery.tiling.DEFAULT_OVERLAP`).
        batch_size: Tiles per forward pass.
        tta: Dihedral test-time augmentation.
        device: Torch device.
        progress: Called with the fraction done.
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
    import rasterio

    from slidewise.engine.imagery.tiling import (
        DEFAULT_OVERLAP,
        DEFAULT_TILE,
        GDAL_CACHE_MB,
        PredictionStats,
        iter_predictions,
    )

    if region is not None:
        model.require(region)
    if region is None and regions_polygons is None:
        if len(model.regions) != 1:
            raise InputError(
                f"Choose the region whose decoder maps this raster: the model has regions "
                f"{', '.join(model.regions)} (or give a region polygon layer)."
            )
        region = model.regions[0]
    plan: list[tuple[str, Callable[[Any], np.ndarray] | None]] = []
    to_close = None
    src = raster
    if regions_polygons is not None:
        from slidewise.engine.geo.raster import open_raster

        if isinstance(raster, np.ndarray):
            raise InputError("Region polygons need a georeferenced raster, not an array.")
        info = open_raster(raster if isinstance(raster, (str, os.PathLike)) else raster.name)
        areas = _RegionAreas(regions_polygons, region_field, info, model.regions)

        def area_mask(r: str | None) -> Callable[[Any], np.ndarray]:
            def f(window: Any) -> np.ndarray:
                inside = areas.mask(r, window)
                return inside if output_mask is None else inside & np.asarray(output_mask(window))

            return f

        plan = [(r, area_mask(r)) for r in areas.order]
        if region is not None:
            plan.append((region, area_mask(None)))
        if isinstance(raster, (str, os.PathLike)):
            to_close = src = rasterio.open(raster)
    else:
        assert region is not None
        plan = [(region, output_mask)]
    if not plan:
        raise InputError(
            "No polygon of the region layer names one of the model's regions "
            f"({', '.join(model.regions)}) and no REGION was given for the rest: fix the "
            "layer's region values or choose a REGION."
        )

    trained = max(int(model.record(r).get("tile_size") or 0) for r, _ in plan)
    tile = int(tile or max(trained, DEFAULT_TILE))
    overlap = DEFAULT_OVERLAP if overlap is None else int(overlap)
    fractions = [0.0] * len(plan)
    codes = [model.regions.index(r) for r, _ in plan]

    def stage(k: int) -> ProgressFn:
        def report(fraction: float) -> None:
            fractions[k] = fraction
            if progress is not None:
                progress(sum(fractions) / len(fractions))

        return report

    run_stats = {r: PredictionStats() for r, _ in plan}

    def generate() -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
        try:
            # One GDAL environment for all regions: the region streams run interleaved.
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
                streams: list[Iterator[tuple[Any, np.ndarray]]] = [
                    iter_predictions(
                        model.view(r),
                        src,
                        bands=bands,
                        normalisation=model.record(r).get("normalisation") or {},
                        tile=tile,
                        overlap=overlap,
                        batch_size=batch_size,
                        tta=tta,
                        device=device,
                        progress=stage(k),
                        output_mask=mask,
                        multiple=model.output_stride,
                        stats=run_stats[r],
                        gdal_cache_mb=None,
                    )
                    for k, (r, mask) in enumerate(plan)
                ]
                # Every stream yields the same strips (same raster, tile and overlap).
                for parts in zip(*streams, strict=True):
                    window, merged = parts[0]
                    index = np.where(np.isfinite(merged), codes[0], NO_REGION).astype(np.uint8)
                    for code, (_, prob) in zip(codes[1:], parts[1:], strict=True):
                        have = np.isfinite(prob)
                        merged = np.where(have, prob, merged)
                        index[have] = code
                    yield window, merged, index
        finally:
            if to_close is not None:
                to_close.close()
        if stats is not None:
            stats.update(run_stats)
            stats["regions"] = [r for r, _ in plan]

    return generate()


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
        **options: Keyword options of :func:`iter_region_predictions` (bands,
            output_mask, tile, overlap, batch_size, tta, device, progress, stats).

    Returns:
        Probabilities (rows, cols) float32 with NaN where not predicted, or
        ``None`` when ``sink`` took the strips.

    Raises:
        InputError: as :func:`iter_region_predictions`.
    """
    strips: list[np.ndarray] = []
    for window, prob, _ in iter_region_predictions(
        model, raster, region, regions_polygons, region_field, **options
    ):
        if sink is not None:
            sink(window, prob)
        else:
            strips.append(prob)
    return None if sink is not None else np.concatenate(strips, axis=0)
