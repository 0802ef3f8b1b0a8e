"""The ``maplandslides`` job: apply a mapping model to a whole raster.

The model runs tile by tile (:mod:`slidewise.engine.imagery.tiling`): seam-free,
borders included, memory bounded by one row band of tiles. The probability
strips stream into up to three outputs at once: a probability GeoTIFF, a 0/1
mask GeoTIFF and landslide polygons (:mod:`slidewise.engine.geo.polygons`, which
joins objects cut by strip borders). Every output is written atomically.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from slidewise.contract.specs.maplandslides import OUTPUT_NAMES
from slidewise.contract.specs.maplandslides import SPEC as MAP_SPEC
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.modelfile import ModelMetadata, read_metadata
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.core.params import JobParams
from slidewise.engine.geo.raster import (
    RasterInfo,
    create_raster,
    open_raster,
    output_profile,
    require_valid_pixels,
)
from slidewise.engine.imagery.bands import match_bands
from slidewise.engine.imagery.tiling import (
    PredictionStats,
    TilingOptions,
    default_batch_size,
    default_tile_size,
    model_multiple,
    prediction_tile,
)
from slidewise.engine.mapping.shipped import resolve_model

MASK_NODATA = 255
"""Nodata value of the mask output (0 = not landslide, 1 = landslide)."""
WRITE_ROWS = 256
"""Rows per write: outputs are written in whole rows of their 256 x 256 blocks."""
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".asc", ".nc", ".png", ".jpg")
VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".kml", ".gml", ".sqlite", ".csv")
POLYGON_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json")
"""Suffixes of the polygon output the job writes."""


@dataclass(frozen=True)
class MappingSettings(JobParams):
    """How a raster is mapped, shared by ``maplandslides`` and ``mapscenes``.

    Attributes:
        model: Mapping model (``.safetensors``) from ``trainmapping`` or ``addregion``;
            empty: the shipped model (:mod:`slidewise.engine.mapping.shipped`).
        threshold: Probability at or above which a pixel is a landslide (mask and
            polygons); ``None``: the threshold stored in the model (tuned on its
            validation split; per region for multi-region models), else 0.5.
        threshold_rule: THRESHOLD_RULE, how the threshold is chosen when ``threshold``
            is ``None``: ``expected_f1`` (calibrated single-decoder models: the best
            expected F1 of the raster's own probabilities,
            :mod:`slidewise.engine.imagery.scene_threshold`) or ``stored``.
        region: Multi-region models: the region whose decoder maps the raster (for
            ``maplandslides``: or the pixels outside ``region_polygons``).
        min_area, max_hole_area, opening_radius, closing_radius, simplify_tolerance,
            dem: Post-processing of the polygons (the mask keeps every pixel); see
            :mod:`slidewise.engine.geo.postprocess` (``None``: from the pixel size).
        bands: Raster bands that feed the model, in the model's order: 1-based
            numbers or band descriptions separated by commas (e.g. ``4,3,2,8``).
            Empty: the raster's bands as they are, checked against the model's.
        tile_size: Largest tile side in pixels (rounded up to the model's alignment;
            tiles are spread evenly, so they may come out a little smaller);
            ``None``: the job's default for the model and device
            (:func:`slidewise.engine.imagery.tiling.default_tile_size`).
        overlap: Overlap of neighbouring tiles in pixels (rounded up like the tile);
            tiles are blended over it.
        batch_size: Tiles per forward pass; ``None``: 1 on CPU, 8 on GPU.
        tta: Test-time augmentation: average over the 8 flips and rotations (8x slower).
        backend: Runtime of the forward passes: ``auto``, ``torch``, ``onnxruntime`` or
            ``openvino`` (:mod:`slidewise.engine.imagery.backends`).
        workers: WORKERS, local Dask worker processes predicting the tile rows (1: none;
            :mod:`slidewise.engine.mapping.map_cluster`).
        scheduler: SCHEDULER, address of an existing Dask scheduler.
    """

    model: str = ""
    threshold: float | None = None
    threshold_rule: str = "expected_f1"
    region: str | None = None
    min_area: float | None = None
    max_hole_area: float | None = None
    opening_radius: int = 1
    closing_radius: int = 1
    simplify_tolerance: float | None = None
    dem: str | None = None
    bands: str | None = None
    tile_size: int | None = None
    overlap: int = 64
    batch_size: int | None = None
    tta: bool = False
    backend: str = "auto"
    workers: int = 1
    scheduler: str | None = None


@dataclass(frozen=True)
class MapParams(MappingSettings):
    """Parameters of the ``maplandslides`` job (declared in ``contract/specs/maplandslides.py``).

    The mapping settings are :class:`MappingSettings`'.

    Attributes:
        input: Image to map, with the model's bands (any size; read window by window).
        aoi: Area of interest: a polygon layer, or a mask raster (non-zero = inside;
            aligned with nearest neighbour). Outside it every output is nodata.
        region_polygons: Multi-region models: polygons with a region attribute;
            each pixel inside is mapped by its polygon's region decoder (overlaps:
            the first region in the model's order wins). Pixels outside every
            polygon use ``region``, or are nodata when ``region`` is empty.
        region_field: The attribute of ``region_polygons`` holding region names.
        output_probability: Float32 GeoTIFF of the landslide probability (0..1; NaN = nodata).
        output_mask: Uint8 GeoTIFF: 1 = landslide, 0 = not landslide, 255 = nodata.
        output_polygons: Landslide polygons (.gpkg, .shp, .geojson) with the fields
            :data:`slidewise.contract.specs.polygons.POLYGON_FIELDS`.
        output_uncertainty: Float32 GeoTIFF of the standard deviation of the 8 TTA
            members' probabilities (0..0.5; NaN = nodata); turns TTA on.
            At least one of the four outputs is required.
    """

    SPEC = MAP_SPEC

    input: str = ""
    aoi: str | None = None
    region_polygons: str | None = None
    region_field: str = "region"
    output_probability: str | None = None
    output_mask: str | None = None
    output_polygons: str | None = None
    output_uncertainty: str | None = None

    def outputs(self) -> dict[str, str]:
        """Output name -> path, ``""`` for an output not chosen."""
        return {name: str(getattr(self, name.lower()) or "") for name in OUTPUT_NAMES}


@dataclass
class LoadedModel:
    """A mapping model ready to run, and what the job needs to know about it.

    Attributes:
        meta: The model file's metadata.
        net: The single-decoder model (``None`` for a multi-region model).
        multi: The multi-region model (``None`` for a single-decoder model).
        bands: Band names the model expects, in order.
        trained_indexes: 1-based raster bands the model was trained on, if stored.
        thresholds: Stored thresholds: region -> threshold (key ``""`` for a
            single-decoder model; empty when none is stored).
        default_tile: Tile side when TILE_SIZE is unset.
        multiple: Tile alignment (the model's output stride).
        described: The model in words, for the log.
    """

    meta: ModelMetadata
    net: Any = None
    multi: Any = None
    bands: list[str] = field(default_factory=list)
    trained_indexes: Any = None
    thresholds: dict[str, float] = field(default_factory=dict)
    default_tile: int = 576
    multiple: int = 32
    described: str = ""


@dataclass(frozen=True)
class MapPlan:
    """How the raster is mapped.

    Attributes:
        bands: 1-based raster bands feeding the model.
        threshold: The threshold reported (the chosen region's for multi-region models).
        lookup: Threshold per region index (multi-region), or the threshold everywhere.
        tiling: Tiles, batches, device and progress.
        rule: How the threshold was chosen: ``fixed`` (THRESHOLD), ``stored`` or
            ``expected_f1`` (chosen on the raster once it is predicted).
    """

    bands: list[int]
    threshold: float
    lookup: np.ndarray
    tiling: TilingOptions
    rule: str = "stored"


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

    The parameters are those of :class:`MapParams`. With a multi-region model and
    no THRESHOLD, each pixel is thresholded at the stored threshold of the region
    that predicted it.
    """
    from slidewise.engine.core.runtime import apply, select_device

    options = MapParams.from_params(params)
    options = dc_replace(options, model=resolve_model(options.model, ctx.log))
    options = uncertainty_needs_tta(options, ctx)
    info = checked_inputs(options)
    apply(ctx.options)
    device = select_device(ctx.options.device)
    loaded = load_model(options, device)
    plan = plan_mapping(options, info, loaded, device, ctx)
    require_valid_pixels(info.path, plan.bands, "input raster", "map")
    loaded, plan, backend = use_backend(options, loaded, plan, ctx, info.width * info.height)
    started = time.perf_counter()
    figures, stats = map_raster(options, info, loaded, plan, ctx)
    seconds = time.perf_counter() - started
    figures = run_figures(info, plan, stats, seconds) | figures | {"backend": backend}
    report_mapping(figures, seconds, ctx)
    extra = [p for p in (options.aoi, options.region_polygons, options.dem) if p]
    return JobResult(
        outputs={k: v for k, v in options.outputs().items() if v},
        figures=figures,
        inputs=[info.path, options.model, *extra],
        device=device.type,
    )


def uncertainty_needs_tta(options: MapParams, ctx: JobContext) -> MapParams:
    """The options with TTA on when OUTPUT_UNCERTAINTY is asked for (said in the log)."""
    if not options.output_uncertainty or options.tta:
        return options
    ctx.log(
        "OUTPUT_UNCERTAINTY is the spread of the 8 flips and rotations of test-time "
        "augmentation: TTA is turned on (8 forward passes per tile)."
    )
    return dc_replace(options, tta=True)


def checked_inputs(options: MapParams) -> RasterInfo:
    """Open the input raster and check the outputs can be written.

    Raises:
        InputError: no output chosen, two outputs on one path, an output that cannot
            be written, or an unknown polygon format (an output on an input is refused
            by ``MapParams.from_params``).
    """
    outputs = options.outputs()
    if not any(outputs.values()):
        raise InputError(
            "No output was chosen: set OUTPUT_PROBABILITY, OUTPUT_MASK, OUTPUT_POLYGONS or "
            "OUTPUT_UNCERTAINTY."
        )
    info = open_raster(options.input, what="input raster")
    chosen = [v for v in outputs.values() if v]
    resolved = [str(Path(v).resolve()) for v in chosen]
    if len(set(resolved)) != len(resolved):
        raise InputError("Two outputs have the same path: give each output its own file.")
    for path in chosen:
        check_writable(path)
    polygons = outputs["OUTPUT_POLYGONS"]
    if polygons and Path(polygons).suffix.lower() not in POLYGON_SUFFIXES:
        raise InputError(
            f"Unsupported polygon output '{Path(polygons).name}': use .gpkg, .shp or .geojson."
        )
    return info


def load_model(options: MapParams, device: torch.device) -> LoadedModel:
    """Load a single-decoder or a multi-region mapping model.

    Raises:
        InputError: REGION or REGION_POLYGONS with a single-decoder model, or a
            multi-region model without a way to choose its decoders.
        ModelFileError: the file is not a mapping model.
    """
    if read_metadata(options.model).task == "multiregion":
        if options.output_uncertainty:
            raise InputError(
                "OUTPUT_UNCERTAINTY is written for single-decoder models only, and "
                f"'{Path(options.model).name}' has region decoders: leave OUTPUT_UNCERTAINTY "
                "empty, or map each region with a single-decoder model."
            )
        return _load_multiregion(options, device)
    if options.region or options.region_polygons:
        raise InputError(
            f"REGION and REGION_POLYGONS choose decoders of a multi-region model, but "
            f"'{Path(options.model).name}' has a single decoder: leave them empty, or use a "
            "model from the addregion algorithm."
        )
    from slidewise.engine.imagery.segmodels import load_mapping_model

    net, meta = load_mapping_model(options.model, device=device)
    in_channels = int((meta.config or {}).get("in_channels", len(meta.bands)) or 0)
    stored = (meta.extra or {}).get("threshold")
    valid = isinstance(stored, int | float) and 0 <= stored <= 1
    return LoadedModel(
        meta=meta,
        net=net,
        bands=list(meta.bands) or [f"band_{i + 1}" for i in range(in_channels)],
        trained_indexes=meta.extra.get("band_indices"),
        thresholds={"": float(stored)} if valid and stored is not None else {},
        default_tile=default_tile_size(meta, device),
        multiple=model_multiple(meta),
        described=str(meta.architecture),
    )


def _load_multiregion(options: MapParams, device: torch.device) -> LoadedModel:
    from slidewise.engine.imagery.regions import load_multiregion

    multi, meta = load_multiregion(options.model, device=device)
    if options.region:
        multi.require(options.region)
    elif not options.region_polygons and len(multi.regions) != 1:
        raise InputError(
            f"The model has regions {', '.join(multi.regions)}: choose the REGION whose "
            "decoder maps this raster, or give REGION_POLYGONS with a region attribute."
        )
    records = {r: multi.record(r) for r in multi.regions}
    reference = records[options.region or multi.regions[0]]
    trained_tile = max(int(rec.get("tile_size") or 0) for rec in records.values())
    return LoadedModel(
        meta=meta,
        multi=multi,
        bands=list(reference.get("bands") or meta.bands),
        trained_indexes=reference.get("band_indices"),
        thresholds={r: float(rec.get("threshold", 0.5)) for r, rec in records.items()},
        default_tile=default_tile_size(dc_replace(meta, tile_size=trained_tile), device),
        multiple=int(multi.output_stride),
        described=f"{meta.architecture} with region decoders {', '.join(multi.regions)}",
    )


def plan_mapping(
    options: MapParams,
    info: RasterInfo,
    loaded: LoadedModel,
    device: torch.device,
    ctx: JobContext,
) -> MapPlan:
    """Bands, thresholds and tiles of the run; logs them.

    Raises:
        InputError: bands that do not match the model, or an overlap that is not
            smaller than the tile once both are rounded up to the model's alignment.
    """
    choice = match_bands(info, loaded.bands, options.bands, loaded.trained_indexes)
    if choice.warning:
        ctx.warn(choice.warning)
    rule = threshold_rule(options, loaded, ctx)
    threshold, lookup = _thresholds(options, loaded, ctx, quiet=rule == "expected_f1")
    tiling = _tiling(options, loaded, device, ctx)
    ctx.log(
        f"Mapping {info.width} x {info.height} px with {loaded.described} on {device}: "
        f"bands {choice.indexes}, tile {tiling.tile}, overlap {tiling.overlap}, batch "
        f"{tiling.batch_size}, TTA {'on' if tiling.tta else 'off'}."
    )
    return MapPlan(choice.indexes, threshold, lookup, tiling, rule)


def threshold_rule(options: MappingSettings, loaded: LoadedModel, ctx: JobContext) -> str:
    """The rule in effect: ``fixed`` (THRESHOLD given), ``stored`` or ``expected_f1``."""
    if options.threshold is not None:
        return "fixed"
    if options.threshold_rule != "expected_f1":
        return "stored"
    from slidewise.engine.imagery.scene_threshold import calibrated

    if loaded.multi is None and calibrated(loaded.meta.extra):
        return "expected_f1"
    why = "has region decoders" if loaded.multi is not None else "has no calibration"
    ctx.log(
        f"THRESHOLD_RULE expected_f1 needs a calibrated single-decoder model and this one "
        f"{why}: its stored threshold is used."
    )
    return "stored"


def use_backend(
    options: MapParams, loaded: LoadedModel, plan: MapPlan, ctx: JobContext, pixels: int
) -> tuple[LoadedModel, MapPlan, str]:
    """The model (or each region decoder) on the BACKEND chosen; tiles and outputs unchanged."""
    from slidewise.engine.imagery.backends import (
        BackendRequest,
        RegionBackends,
        choose_backend,
        model_key,
    )

    def request(region: str | None) -> BackendRequest:
        net = loaded.net if region is None else loaded.multi.view(region)
        key = model_key(options.model, region)
        device = torch.device(plan.tiling.device or "cpu")
        threads = ctx.options.threads
        tile = plan.tiling.tile
        return BackendRequest(net, len(plan.bands), key, threads, device, tile, pixels, ctx.log)

    if loaded.multi is None:
        net, name = choose_backend(options.backend, request(None))
        loaded = dc_replace(loaded, net=net)
    else:
        first = options.region or loaded.multi.regions[0]
        module, name = choose_backend(options.backend, request(first))
        if name != "torch":
            regions = RegionBackends(loaded.multi, name, request)
            regions.views[first] = module
            loaded = dc_replace(loaded, multi=regions)
    if name != "torch":  # the runtimes take plain NCHW arrays
        plan = dc_replace(plan, tiling=dc_replace(plan.tiling, channels_last=False))
    ctx.log(f"Inference backend: {name}.")
    return loaded, plan, name


def _thresholds(
    options: MapParams, loaded: LoadedModel, ctx: JobContext, quiet: bool = False
) -> tuple[float, np.ndarray]:
    """The threshold reported and the threshold per region index (256 entries).

    ``quiet``: do not log a single-decoder model's stored threshold (the rule
    ``expected_f1`` logs the threshold it chooses instead).
    """
    threshold = 0.5 if options.threshold is None else options.threshold
    lookup = np.full(256, threshold, dtype=np.float64)
    stored = loaded.thresholds
    if options.threshold is not None or not stored:
        return threshold, lookup
    if loaded.multi is None:
        threshold = stored[""]
        lookup[:] = threshold
        if not quiet:
            ctx.log(f"THRESHOLD {threshold:g}: the model's stored threshold (tuned in training).")
        return threshold, lookup
    regions = loaded.multi.regions
    for k, r in enumerate(regions):
        lookup[k] = stored[r]
    ctx.log(
        "THRESHOLD: each region's stored threshold ("
        + ", ".join(f"{r} {t:g}" for r, t in stored.items())
        + ")."
    )
    return stored[options.region or regions[0]], lookup


def _tiling(
    options: MapParams, loaded: LoadedModel, device: torch.device, ctx: JobContext
) -> TilingOptions:
    multiple = loaded.multiple
    tile = options.tile_size if options.tile_size is not None else loaded.default_tile
    tile = -(-tile // multiple) * multiple
    fixed = prediction_tile(loaded.meta) if loaded.multi is None else None
    if fixed is not None and tile != fixed:
        ctx.warn(
            f"The model standardises each tile by its own statistics and its threshold was "
            f"chosen with {fixed}-px tiles; TILE_SIZE {tile} changes its probabilities: leave "
            "TILE_SIZE empty to map as it was validated."
        )
    overlap = -(-options.overlap // multiple) * multiple
    if overlap >= tile:
        raise InputError(
            f"OVERLAP ({overlap} after rounding up to a multiple of {multiple}) must be "
            f"smaller than TILE_SIZE ({tile}): use a smaller overlap or a larger tile."
        )
    return TilingOptions(
        tile=tile,
        overlap=overlap,
        batch_size=options.batch_size or default_batch_size(device),
        tta=options.tta,
        device=device,
        multiple=multiple,
        progress=ctx.stage(0, 95),
        spread=bool(options.output_uncertainty),
    )


def map_raster(
    options: MapParams, info: RasterInfo, loaded: LoadedModel, plan: MapPlan, ctx: JobContext
) -> tuple[dict[str, Any], PredictionStats]:
    """Predict the raster strip by strip into the outputs; the figures and tile statistics."""
    if info.crs is None:
        ctx.warn(
            "The input raster has no coordinate reference system: areas (area_m2, MIN_AREA) "
            "are in squared units of its pixel grid, not square metres."
        )
    from slidewise.engine.mapping.map_cluster import cluster_figures, on_cluster

    with ExitStack() as stack:
        plan = stack.enter_context(on_cluster(options, loaded, plan, ctx))
        output_mask = aoi_mask(options.aoi, info, stack) if options.aoi else None
        reader = stack.enter_context(_open_reader(info.path))
        if loaded.multi is None:
            stats = PredictionStats()
            strips = _single_strips(loaded, reader, plan, output_mask, stats)
            chosen: dict[str, Any] = {}
            if plan.rule == "expected_f1":
                strips, plan, chosen = _scene_threshold(strips, info, plan, options, stack, ctx)
            sinks = _open_outputs(options, info, plan.threshold, stack)
            for window, data in rechunk(strips):
                if data.ndim == 3:  # the probability and the TTA members' spread
                    sinks.add(window, data[..., 0], spread=data[..., 1])
                else:
                    sinks.add(window, data)
            return sinks.finish(ctx) | chosen | cluster_figures(plan), stats
        region_stats: dict[str, Any] = {}
        strips = _region_strips(options, loaded, reader, plan, output_mask, region_stats)
        sinks = _open_outputs(options, info, plan.threshold, stack)
        for window, both in rechunk(strips):
            sinks.add(window, both[..., 0], both[..., 1])
        figures = sinks.finish(ctx)
    region_figures, stats = _region_figures(loaded, plan, region_stats)
    return figures | region_figures, stats


def _scene_threshold(
    strips: Iterator[tuple[Window, np.ndarray]],
    info: RasterInfo,
    plan: MapPlan,
    options: MapParams,
    stack: ExitStack,
    ctx: JobContext,
) -> tuple[Iterator[tuple[Window, np.ndarray]], MapPlan, dict[str, Any]]:
    """THRESHOLD_RULE ``expected_f1``: the plan with the threshold chosen on the whole raster."""
    from slidewise.engine.imagery.scene_threshold import choose_on_raster

    first = next(v for v in options.outputs().values() if v)
    staged, figures = choose_on_raster(strips, info, first, plan.threshold, WRITE_ROWS, stack, ctx)
    if "threshold" in figures:
        lookup = np.full_like(plan.lookup, figures["threshold"])
        plan = dc_replace(plan, threshold=figures["threshold"], lookup=lookup)
    return staged, plan, figures


def _single_strips(
    loaded: LoadedModel,
    reader: Any,
    plan: MapPlan,
    output_mask: Callable[[Window], np.ndarray] | None,
    stats: PredictionStats,
) -> Iterator[tuple[Window, np.ndarray]]:
    from slidewise.engine.imagery.tiling import iter_predictions

    return iter_predictions(
        loaded.net,
        reader,
        dc_replace(plan.tiling, stats=stats),
        bands=plan.bands,
        normalisation=loaded.meta.normalisation,
        output_mask=output_mask,
    )


def _region_strips(
    options: MapParams,
    loaded: LoadedModel,
    reader: Any,
    plan: MapPlan,
    output_mask: Callable[[Window], np.ndarray] | None,
    stats: dict[str, Any],
) -> Iterator[tuple[Window, np.ndarray]]:
    """Strips of ``(probability, threshold)`` pairs (last axis), each pixel by its region."""
    from slidewise.engine.mapping.regionmaps import RegionChoice, iter_region_predictions

    choice = RegionChoice(options.region, options.region_polygons, options.region_field)
    region_strips = iter_region_predictions(
        loaded.multi,
        reader,
        choice,
        plan.tiling,
        bands=plan.bands,
        output_mask=output_mask,
        stats=stats,
    )
    # Probability and per-pixel threshold travel together through rechunk.
    return (
        (window, np.stack([prob, plan.lookup[index]], axis=-1))
        for window, prob, index in region_strips
    )


def _region_figures(
    loaded: LoadedModel, plan: MapPlan, region_stats: dict[str, Any]
) -> tuple[dict[str, Any], PredictionStats]:
    """Regions used and their thresholds, and the tile statistics of all regions together."""
    used = list(region_stats.get("regions", []))
    stats = region_stats[used[0]]
    stats.tiles_total = sum(region_stats[r].tiles_total for r in used)
    stats.tiles_skipped = sum(region_stats[r].tiles_skipped for r in used)
    regions = loaded.multi.regions
    figures = {
        "regions": ", ".join(used),
        "region_thresholds": {r: float(plan.lookup[regions.index(r)]) for r in used},
    }
    return figures, stats


def run_figures(
    info: RasterInfo, plan: MapPlan, stats: PredictionStats, seconds: float
) -> dict[str, Any]:
    """Figures of the run: size, settings, tiles and speed."""
    tiling = plan.tiling
    return {
        "width": info.width,
        "height": info.height,
        "threshold": plan.threshold,
        "tile_size": tiling.tile,
        "tile_shape": [stats.tile, int(stats.extra.get("tile_cols", stats.tile))],
        "overlap": stats.overlap,
        "batch_size": tiling.batch_size,
        "tta": tiling.tta,
        "bands": plan.bands,
        "tiles": stats.tiles_total,
        "tiles_skipped": stats.tiles_skipped,
        "seconds": round(seconds, 3),
        "pixels_per_second": round(info.width * info.height / max(seconds, 1e-9), 1),
        "device": str(tiling.device),
    }


def report_mapping(figures: dict[str, Any], seconds: float, ctx: JobContext) -> None:
    """Log what was mapped; warn when nothing was."""
    ctx.log(
        f"Mapped in {seconds:.1f} s ({figures['pixels_per_second']:.0f} px/s): "
        f"{figures['landslide_pixels']} landslide pixels"
        + (f", {figures['polygons']} polygons." if "polygons" in figures else ".")
    )
    if figures["valid_pixels"] == 0:
        ctx.warn("No pixel was mapped: the input is nodata everywhere (or outside the AOI).")


def _open_reader(path: str) -> Any:
    import rasterio

    return rasterio.open(path)


class _Sinks:
    """The outputs being written, fed strip by strip."""

    def __init__(self, info: RasterInfo, threshold: float) -> None:
        self.info, self.threshold = info, threshold
        self.prob: Any = None
        self.mask: Any = None
        self.uncertainty: Any = None
        self.polygons: Any = None
        self.polygon_path = ""
        self.landslide = 0
        self.valid = 0
        self.area = 0.0
        self.spread_sum = 0.0

    def add(
        self,
        window: Window,
        prob: np.ndarray,
        threshold: np.ndarray | None = None,
        spread: np.ndarray | None = None,
    ) -> None:
        """Write a strip; ``threshold`` (same shape) overrides the threshold per pixel.

        ``spread`` is the TTA members' standard deviation of the strip (the
        uncertainty output).
        """
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
        if self.uncertainty is not None and spread is not None:
            self.uncertainty.write(spread[None].astype(np.float32, copy=False), window=window)
            self.spread_sum += float(np.sum(spread[valid], dtype=np.float64))
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
        if self.uncertainty is not None:
            figures["uncertainty_mean"] = self.spread_sum / self.valid if self.valid else 0.0
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
            figures["polygon_postprocessing"] = self.polygons.figures()
            ctx.log(self.polygons.settings.describe())
        return figures


def _open_outputs(
    options: MapParams, info: RasterInfo, threshold: float, stack: ExitStack
) -> _Sinks:
    from slidewise.engine.geo.postprocess import polygon_builder

    outputs = options.outputs()
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
    if outputs["OUTPUT_UNCERTAINTY"]:
        profile = output_profile(info, 1, "float32")
        sinks.uncertainty = stack.enter_context(
            create_raster(outputs["OUTPUT_UNCERTAINTY"], profile, ["landslide_probability_std"])
        )
    if outputs["OUTPUT_POLYGONS"]:
        sinks.polygons = polygon_builder(options, info)
        sinks.polygon_path = outputs["OUTPUT_POLYGONS"]
    return sinks
