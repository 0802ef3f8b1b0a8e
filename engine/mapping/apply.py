"""The ``maplandslides`` job: apply a mapping model to a whole raster.

The model runs tile by tile (:mod:`slidewise.engine.imagery.tiling`): seam-free,
borders included, memory bounded by one row band of tiles. The probability
strips stream into up to three outputs at once: a probability GeoTIFF, a 0/1
mask GeoTIFF and landslide polygons (:mod:`slidewise.engine.geo.polygons`, which
joins objects cut by strip borders). Every output is written atomically.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult, check_known, require
from slidewise.engine.core.modelfile import read_metadata
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.core.params import integer_param, is_set, number_param, to_bool
from slidewise.engine.geo.raster import RasterInfo, create_raster, open_raster, output_profile
from slidewise.engine.imagery.bands import match_bands
from slidewise.engine.imagery.tiling import default_tile_size

PARAMS = {
    "INPUT",
    "MODEL",
    "OUTPUT_PROBABILITY",
    "OUTPUT_MASK",
    "OUTPUT_POLYGONS",
    "THRESHOLD",
    "MIN_AREA",
    "AOI",
    "TILE_SIZE",
    "OVERLAP",
    "BATCH_SIZE",
    "TTA",
    "BANDS",
    "REGION",
    "REGION_POLYGONS",
    "REGION_FIELD",
}
MASK_NODATA = 255
"""Nodata value of the mask output (0 = not landslide, 1 = landslide)."""
WRITE_ROWS = 256
"""Rows per write: outputs are written in whole rows of their 256 x 256 blocks."""
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".asc", ".nc", ".png", ".jpg")
VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".kml", ".gml", ".sqlite", ".csv")
MAX_TILE = 8192
"""Largest TILE_SIZE accepted (a 14-band U-Net tile of this side needs tens of GB)."""
MAX_BATCH = 1024
"""Largest BATCH_SIZE accepted."""


# --------------------------------------------------------------------------- parameters


def _alignment(meta: Any) -> int:
    depth = int((meta.config or {}).get("encoder_depth", 5) or 5)
    return max(32, 2**depth)


# --------------------------------------------------------------------------- AOI


def aoi_mask(path: str, info: RasterInfo, stack: ExitStack) -> Callable[[Window], np.ndarray]:
    """An area-of-interest test ``f(window) -> bool array`` on the grid of ``info``.

    Args:
        path: Polygon vector (any OGR format), or a mask raster (non-zero, valid
            pixels are inside; aligned with nearest neighbour when on another grid).
        info: The input raster.
        stack: Keeps the AOI raster open while the job runs.

    Raises:
        InputError: unreadable file, no polygons, no CRS to reproject with, or no
            overlap with the input raster.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"The AOI '{p}' does not exist: check the path, or leave AOI empty.")
    if is_raster_path(path):
        return raster_window_mask(path, info, stack)
    return polygon_window_mask(path, info, what="AOI")


def is_raster_path(path: str) -> bool:
    """True for a raster file: known raster suffix, or readable by GDAL as a raster.

    Known vector suffixes (GeoPackage, Shapefile, GeoJSON...) are vectors.
    """
    suffix = Path(path).suffix.lower()
    if suffix in RASTER_SUFFIXES:
        return True
    if suffix in VECTOR_SUFFIXES:
        return False
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            return bool(src.count)
    except (RasterioIOError, OSError):
        return False


def raster_window_mask(
    path: str, info: RasterInfo, stack: ExitStack
) -> Callable[[Window], np.ndarray]:
    """``f(window) -> bool``: valid, non-zero pixels of a mask raster on the grid of ``info``."""
    from slidewise.engine.geo.align import AlignedStack, FactorSource, GridSpec

    aligned = AlignedStack(
        [FactorSource(path, band=1, name="mask", kind="categorical")],
        reference=GridSpec.from_info(info),
    )
    stack.enter_context(aligned)

    def inside(window: Window) -> np.ndarray:
        data, valid = aligned.read(window)
        return valid & (data[0] != 0)

    return inside


def polygon_window_mask(
    path: str, info: RasterInfo, what: str = "AOI"
) -> Callable[[Window], np.ndarray]:
    """``f(window) -> bool``: pixels inside the polygons of a layer, on the grid of ``info``.

    The polygons are reprojected to the raster's CRS when it differs.

    Pixels whose centre lies inside a polygon are inside (GDAL's rasterisation rule).

    Raises:
        InputError: unreadable layer, not polygons, a CRS missing, or no overlap.
    """
    import shapely
    from rasterio.features import geometry_mask

    from slidewise.engine.geo.vectors import polygons_in_crs, read_vector

    vector = read_vector(path, what=f"{what} layer")
    geoms = polygons_in_crs(
        vector,
        info.crs,
        f"{what} layer '{Path(path).name}'",
        "choose a polygon layer or a mask raster",
    )
    geoms = [shapely.make_valid(g) for g in geoms]
    union = shapely.union_all(geoms)
    left, top = info.transform @ (0, 0)
    right, bottom = info.transform @ (info.width, info.height)
    raster_box = shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    if not union.intersects(raster_box):
        raise InputError(
            f"The {what} '{Path(path).name}' does not overlap the raster: choose a layer "
            "that covers part of the raster."
        )
    tree = shapely.STRtree(geoms)

    def inside(window: Window) -> np.ndarray:
        shape = (int(window.height), int(window.width))
        t = window_transform(window, info.transform)
        x0, y0 = t @ (0, 0)
        x1, y1 = t @ (shape[1], shape[0])
        hits = tree.query(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        if len(hits) == 0:
            return np.zeros(shape, dtype=bool)
        return geometry_mask([geoms[i] for i in hits], shape, t, invert=True)

    return inside


# --------------------------------------------------------------------------- streaming


def rechunk(
    strips: Iterator[tuple[Window, np.ndarray]], rows: int = WRITE_ROWS
) -> Iterator[tuple[Window, np.ndarray]]:
    """Regroup full-width row strips into strips of ``rows`` rows (the last may be shorter).

    Writing whole block rows keeps compressed GeoTIFF blocks from being written twice.
    """
    held: list[np.ndarray] = []
    top = 0
    have = 0
    for _, data in strips:
        held.append(data)
        have += data.shape[0]
        while have >= rows:
            joined = np.concatenate(held, axis=0) if len(held) > 1 else held[0]
            yield Window(0, top, data.shape[1], rows), joined[:rows]
            rest = joined[rows:]
            held = [rest] if len(rest) else []
            top += rows
            have -= rows
    if have:
        joined = np.concatenate(held, axis=0)
        yield Window(0, top, joined.shape[1], have), joined


# --------------------------------------------------------------------------- job


def run_map(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Map landslides on a raster with a trained mapping model.

    Parameters:
        INPUT (str, raster path): Image to map, with the model's bands
            (any size; read window by window).
        MODEL (str, .safetensors path): Mapping model written by the
            ``trainmapping`` job.
        OUTPUT_PROBABILITY (str, optional .tif path, default ""): Float32
            GeoTIFF of the landslide probability (0..1; NaN = nodata).
        OUTPUT_MASK (str, optional .tif path, default ""): Uint8 GeoTIFF:
            1 = landslide (probability >= THRESHOLD), 0 = not landslide,
            255 = nodata.
        OUTPUT_POLYGONS (str, optional vector path, default ""): Landslide
            polygons (.gpkg recommended, .shp, .geojson) with fields ``id``,
            ``area_m2``, ``pixels``, ``mean_probability``, ``max_probability``.
            At least one of the three outputs is required.
        THRESHOLD (float, default: the threshold stored in the model by
            ``trainmapping`` (tuned on its validation split), else 0.5):
            Probability at or above which a pixel is a landslide (mask and
            polygons).
        MIN_AREA (float, default 0): Polygons smaller than this area (square
            metres, the ``area_m2`` field; for a projected CRS in metres this is
            map units²) are dropped. The mask keeps every pixel.
        AOI (str, optional, default ""): Area of interest: a polygon layer, or
            a mask raster (non-zero = inside; aligned with nearest neighbour).
            Outside it every output is nodata.
        TILE_SIZE (int, default: the model's training tile, at least 576 for
            fully convolutional models; 576 when unknown): Largest tile side in
            pixels (rounded up to a multiple of 32; tiles are spread evenly, so
            they may come out a little smaller).
        OVERLAP (int, default 64): Overlap of neighbouring tiles in pixels
            (rounded up to a multiple of 32); tiles are blended over it.
        BATCH_SIZE (int, default: 1 on CPU, 8 on GPU): Tiles per forward pass.
        TTA (bool, default false): Test-time augmentation: average over the 8
            flips and rotations (8x slower).
        BANDS (str, optional, default ""): Raster bands that feed the model, in
            the model's order: 1-based numbers or band descriptions separated by
            commas (e.g. ``4,3,2,8``). Empty: the raster's bands as they are,
            checked against the model's band names.
        REGION (str, optional, default ""): Multi-region models (``addregion``):
            the region whose decoder maps the raster, or the pixels outside
            REGION_POLYGONS. May be empty for a one-region model, or when
            REGION_POLYGONS covers what should be mapped.
        REGION_POLYGONS (str, optional vector path, default ""): Multi-region
            models: polygons with a region attribute; each pixel inside is
            mapped by its polygon's region decoder (overlaps: the first region
            in the model's order wins). Pixels outside every polygon use REGION,
            or are nodata when REGION is empty.
        REGION_FIELD (str, default "region"): The attribute of REGION_POLYGONS
            holding region names.

    With a multi-region model and no THRESHOLD, each pixel is thresholded at
    the stored threshold of the region that predicted it.
    """
    from slidewise.engine.core.runtime import apply, select_device
    from slidewise.engine.imagery.segmodels import load_mapping_model
    from slidewise.engine.imagery.tiling import (
        DEFAULT_OVERLAP,
        PredictionStats,
        default_batch_size,
        iter_predictions,
    )

    check_known(params, PARAMS)
    require(params, "INPUT", "MODEL")
    outputs = {
        key: str(params.get(key) or "").strip()
        for key in ("OUTPUT_PROBABILITY", "OUTPUT_MASK", "OUTPUT_POLYGONS")
    }
    if not any(outputs.values()):
        raise InputError(
            "No output was chosen: set OUTPUT_PROBABILITY, OUTPUT_MASK or OUTPUT_POLYGONS."
        )
    info = open_raster(str(params["INPUT"]), what="input raster")
    chosen = [v for v in outputs.values() if v]
    resolved = [str(Path(v).resolve()) for v in chosen]
    if len(set(resolved)) != len(resolved):
        raise InputError("Two outputs have the same path: give each output its own file.")
    if str(Path(info.path).resolve()) in resolved:
        raise InputError("An output path is the input raster: choose another output file.")
    for path in chosen:
        check_writable(path)
    if outputs["OUTPUT_POLYGONS"] and Path(outputs["OUTPUT_POLYGONS"]).suffix.lower() not in (
        ".gpkg",
        ".shp",
        ".geojson",
        ".json",
    ):
        raise InputError(
            f"Unsupported polygon output '{Path(outputs['OUTPUT_POLYGONS']).name}': "
            "use .gpkg, .shp or .geojson."
        )
    threshold_given = is_set(params, "THRESHOLD")
    threshold = number_param(params, "THRESHOLD", 0.5, 0.0, 1.0)
    min_area = number_param(params, "MIN_AREA", 0.0, 0.0, math.inf)
    overlap = integer_param(params, "OVERLAP", DEFAULT_OVERLAP, 0, MAX_TILE // 2)
    batch_size = (
        integer_param(params, "BATCH_SIZE", 1, 1, MAX_BATCH)
        if is_set(params, "BATCH_SIZE")
        else None
    )
    tta = to_bool(params.get("TTA", False), "TTA")

    apply(ctx.options)
    device = select_device(ctx.options.device)
    model_path = str(params["MODEL"])
    region = str(params.get("REGION") or "").strip()
    region_layer = str(params.get("REGION_POLYGONS") or "").strip()
    region_field = str(params.get("REGION_FIELD") or "").strip() or "region"
    multi: Any = None
    if read_metadata(model_path).task == "multiregion":
        from slidewise.engine.imagery.regions import load_multiregion

        multi, meta = load_multiregion(model_path, device=device)
        if region:
            multi.require(region)
        elif not region_layer and len(multi.regions) != 1:
            raise InputError(
                f"The model has regions {', '.join(multi.regions)}: choose the REGION whose "
                "decoder maps this raster, or give REGION_POLYGONS with a region attribute."
            )
        records = {r: multi.record(r) for r in multi.regions}
        reference = records[region or multi.regions[0]]
        model_bands = list(reference.get("bands") or meta.bands)
        trained_indexes = reference.get("band_indices")
        stored_thresholds = {r: float(rec.get("threshold", 0.5)) for r, rec in records.items()}
        trained_tile = max(int(rec.get("tile_size") or 0) for rec in records.values())
        default_tile = default_tile_size(dc_replace(meta, tile_size=trained_tile))
        multiple = int(multi.output_stride)
        described = f"{meta.architecture} with region decoders {', '.join(multi.regions)}"
    else:
        if region or region_layer:
            raise InputError(
                f"REGION and REGION_POLYGONS choose decoders of a multi-region model, but "
                f"'{Path(model_path).name}' has a single decoder: leave them empty, or use a "
                "model from the addregion algorithm."
            )
        model, meta = load_mapping_model(model_path, device=device)
        in_channels = int((meta.config or {}).get("in_channels", len(meta.bands)) or 0)
        model_bands = list(meta.bands) or [f"band_{i + 1}" for i in range(in_channels)]
        trained_indexes = meta.extra.get("band_indices")
        stored = (meta.extra or {}).get("threshold")
        stored_thresholds = {}
        if isinstance(stored, (int, float)) and 0 <= stored <= 1:
            stored_thresholds[""] = float(stored)
        default_tile = default_tile_size(meta)
        multiple = _alignment(meta)
        described = str(meta.architecture)
    choice = match_bands(info, model_bands, params.get("BANDS"), trained_indexes)
    if choice.warning:
        ctx.warn(choice.warning)
    # Thresholds per region index (multi-region) or one for all.
    lookup = np.full(256, threshold, dtype=np.float64)
    if not threshold_given and stored_thresholds:
        if multi is None:
            threshold = stored_thresholds[""]
            lookup[:] = threshold
            ctx.log(
                f"THRESHOLD {threshold:g}: the threshold stored in the model (tuned in training)."
            )
        else:
            for k, r in enumerate(multi.regions):
                lookup[k] = stored_thresholds[r]
            threshold = stored_thresholds[region or multi.regions[0]]
            ctx.log(
                "THRESHOLD: each region's stored threshold ("
                + ", ".join(f"{r} {t:g}" for r, t in stored_thresholds.items())
                + ")."
            )
    tile = integer_param(params, "TILE_SIZE", default_tile, 32, MAX_TILE)
    tile = -(-tile // multiple) * multiple
    overlap = -(-overlap // multiple) * multiple
    if overlap >= tile:
        raise InputError(
            f"OVERLAP ({overlap} after rounding up to a multiple of {multiple}) must be "
            f"smaller than TILE_SIZE ({tile}): use a smaller overlap or a larger tile."
        )
    batch = batch_size or default_batch_size(device)
    ctx.log(
        f"Mapping {info.width} x {info.height} px with {described} on {device}: "
        f"bands {choice.indexes}, tile {tile}, overlap {overlap}, batch {batch}, "
        f"TTA {'on' if tta else 'off'}."
    )

    if info.crs is None:
        ctx.warn(
            "The input raster has no coordinate reference system: areas (area_m2, MIN_AREA) "
            "are in squared units of its pixel grid, not square metres."
        )
    started = time.perf_counter()
    stats = PredictionStats()
    region_stats: dict[str, Any] = {}
    figures: dict[str, Any] = {}
    with ExitStack() as stack:
        output_mask = None
        if str(params.get("AOI") or "").strip():
            output_mask = aoi_mask(str(params["AOI"]).strip(), info, stack)
        reader = stack.enter_context(_open_reader(info.path))
        options: dict[str, Any] = {
            "bands": choice.indexes,
            "tile": tile,
            "overlap": overlap,
            "batch_size": batch,
            "tta": tta,
            "device": device,
            "progress": ctx.stage(0, 95),
            "output_mask": output_mask,
        }
        if multi is None:
            strips = iter_predictions(
                model,
                reader,
                normalisation=meta.normalisation,
                multiple=multiple,
                stats=stats,
                **options,
            )
            sinks = _open_outputs(outputs, info, min_area, threshold, stack)
            for window, prob in rechunk(strips):
                sinks.add(window, prob)
        else:
            from slidewise.engine.imagery.regions import iter_region_predictions

            region_strips = iter_region_predictions(
                multi,
                reader,
                region or None,
                region_layer or None,
                region_field,
                stats=region_stats,
                **options,
            )
            sinks = _open_outputs(outputs, info, min_area, threshold, stack)
            # Probability and per-pixel threshold travel together through rechunk.
            pairs = (
                (window, np.stack([prob, lookup[index]], axis=-1))
                for window, prob, index in region_strips
            )
            for window, both in rechunk(pairs):
                sinks.add(window, both[..., 0], both[..., 1])
        figures.update(sinks.finish(ctx))
    if multi is not None:
        used = list(region_stats.get("regions", []))
        figures["regions"] = ", ".join(used)
        figures["region_thresholds"] = {r: float(lookup[multi.regions.index(r)]) for r in used}
        stats = region_stats[used[0]]
        stats.tiles_total = sum(region_stats[r].tiles_total for r in used)
        stats.tiles_skipped = sum(region_stats[r].tiles_skipped for r in used)
    seconds = time.perf_counter() - started
    figures.update(
        {
            "width": info.width,
            "height": info.height,
            "threshold": threshold,
            "tile_size": tile,
            "tile_shape": [stats.tile, int(stats.extra.get("tile_cols", stats.tile))],
            "overlap": stats.overlap,
            "batch_size": batch,
            "tta": tta,
            "bands": choice.indexes,
            "tiles": stats.tiles_total,
            "tiles_skipped": stats.tiles_skipped,
            "seconds": round(seconds, 3),
            "pixels_per_second": round(info.width * info.height / max(seconds, 1e-9), 1),
            "device": str(device),
        }
    )
    ctx.log(
        f"Mapped in {seconds:.1f} s ({figures['pixels_per_second']:.0f} px/s): "
        f"{figures['landslide_pixels']} landslide pixels"
        + (f", {figures['polygons']} polygons." if "polygons" in figures else ".")
    )
    if figures["valid_pixels"] == 0:
        ctx.warn("No pixel was mapped: the input is nodata everywhere (or outside the AOI).")
    written = {k: v for k, v in outputs.items() if v}
    return JobResult(
        outputs=written,
        figures=figures,
        inputs=[info.path, model_path]
        + ([str(params["AOI"])] if str(params.get("AOI") or "").strip() else [])
        + ([region_layer] if region_layer else []),
        device=device.type,
    )


def _open_reader(path: str) -> Any:
    import rasterio

    return rasterio.open(path)


class _Sinks:
    """The outputs being written, fed strip by strip."""

    def __init__(self, info: RasterInfo, threshold: float) -> None:
        self.info, self.threshold = info, threshold
        self.prob: Any = None
        self.mask: Any = None
        self.polygons: Any = None
        self.polygon_path = ""
        self.landslide = 0
        self.valid = 0
        self.area = 0.0

    def add(self, window: Window, prob: np.ndarray, threshold: np.ndarray | None = None) -> None:
        """Write a strip; ``threshold`` (same shape) overrides the threshold per pixel."""
        from slidewise.engine.geo.polygons import pixel_areas

        valid = np.isfinite(prob)
        with np.errstate(invalid="ignore"):
            slide = valid & (prob >= (self.threshold if threshold is None else threshold))
        self.valid += int(np.count_nonzero(valid))
        self.landslide += int(np.count_nonzero(slide))
        rows = int(window.row_off), int(window.height)
        areas = pixel_areas(self.info.transform, self.info.crs, *rows)
        self.area += float(np.sum(areas * np.count_nonzero(slide, axis=1)))
        if self.prob is not None:
            self.prob.write(prob[None].astype(np.float32, copy=False), window=window)
        if self.mask is not None:
            out = np.where(valid, slide, MASK_NODATA).astype(np.uint8)
            self.mask.write(out[None], window=window)
        if self.polygons is not None:
            self.polygons.add(int(window.row_off), slide, prob)

    def finish(self, ctx: JobContext) -> dict[str, Any]:
        from slidewise.engine.geo.vectors import write_vector

        figures: dict[str, Any] = {
            "valid_pixels": self.valid,
            "landslide_pixels": self.landslide,
            "landslide_fraction": self.landslide / self.valid if self.valid else 0.0,
            "landslide_area_m2": self.area,
        }
        if self.polygons is not None:
            ctx.progress(96)
            geoms, fields = self.polygons.finish()
            kind = "Polygon"
            if any(g.geom_type != "Polygon" for g in geoms):  # not expected: be safe
                import shapely

                geoms = [
                    shapely.MultiPolygon([g]) if g.geom_type == "Polygon" else g for g in geoms
                ]
                kind = "MultiPolygon"
            write_vector(self.polygon_path, geoms, fields, crs=self.info.crs, geometry_type=kind)
            figures["polygons"] = len(geoms)
            figures["polygons_below_min_area"] = self.polygons.dropped
        return figures


def _open_outputs(
    outputs: dict[str, str],
    info: RasterInfo,
    min_area: float,
    threshold: float,
    stack: ExitStack,
) -> _Sinks:
    from slidewise.engine.geo.polygons import PolygonCollector

    sinks = _Sinks(info, threshold)
    if outputs["OUTPUT_PROBABILITY"]:
        profile = output_profile(info, 1, "float32")
        sinks.prob = stack.enter_context(
            create_raster(outputs["OUTPUT_PROBABILITY"], profile, ["landslide_probability"])
        )
    if outputs["OUTPUT_MASK"]:
        profile = output_profile(info, 1, "uint8", nodata=MASK_NODATA)
        sinks.mask = stack.enter_context(
            create_raster(outputs["OUTPUT_MASK"], profile, ["landslide"])
        )
    if outputs["OUTPUT_POLYGONS"]:
        sinks.polygons = PolygonCollector(info.width, info.transform, info.crs, min_area)
        sinks.polygon_path = outputs["OUTPUT_POLYGONS"]
    return sinks
