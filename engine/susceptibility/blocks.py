"""Scene segmentation into blocks (the tasks of meta-learning).

The study area is cut into terrain-homogeneous, compact blocks with SLIC
superpixels (``skimage.segmentation.slic``) on terrain bands. Compared with
the original meta_LSM code (raw units, no connectivity, nodata included):

* each band is standardised (mean 0, standard deviation 1 over valid pixels)
  and multiplied by its weight, so weights mean what they say whatever the units;
* aspect becomes two bands, sin and cos (north at 359 deg is next to 1 deg);
  negative aspect (flat) gives 0, 0;
* nodata pixels are masked (block ID 0) and never pulled into a block;
* connectivity is enforced: every block ID is one 4-connected region
  (checked afterwards; stray pieces become blocks of their own).

Rasters larger than ``max_pixels`` are segmented on a decimated read (nearest
neighbour) and the labels are scaled back up window by window.

Block tables for tabular data (no raster) come from k-means clustering of the
sample coordinates (:func:`kmeans_blocks`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.engine.core.errors import InputError
from slidewise.engine.geo.align import AlignedStack
from slidewise.engine.geo.stackparams import SamplingParams

# Original meta_LSM weights: DEM 0.3, aspect 0.1, curvature 0.2, slope 0.4.
TERRAIN_ROLES: dict[str, tuple[str, float]] = {
    "dem": (r"dem|elev|altitude|height|dtm", 0.3),
    "aspect": (r"aspect", 0.1),
    "curvature": (r"curv|cplan|cprof", 0.2),
    "slope": (r"slope", 0.4),
}
MAX_SLIC_PIXELS = 4_000_000


@dataclass
class BlockParams:
    """SLIC parameters (job parameters N_BLOCKS, COMPACTNESS, BANDS, WEIGHTS, ITERATIONS).

    Attributes:
        n_blocks: Approximate number of blocks (SLIC ``n_segments``).
        compactness: Balance of terrain similarity and compactness (on
            standardised, weighted bands; higher = squarer blocks).
        bands: Band names to segment on; empty = the terrain bands found by name
            (DEM/elevation, aspect, curvature, slope), else every continuous band.
        weights: One weight per band (default: 0.3 DEM, 0.1 aspect, 0.2 curvature,
            0.4 slope; 1 for other bands).
        iterations: SLIC k-means iterations.
        max_pixels: Larger rasters are segmented at reduced resolution.
        seed: Unused by SLIC (deterministic); kept for provenance.
    """

    n_blocks: int = 256
    compactness: float = 0.5
    bands: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    iterations: int = 10
    max_pixels: int = MAX_SLIC_PIXELS


def terrain_bands(
    names: Sequence[str], kinds: Sequence[str] | None = None
) -> tuple[list[str], list[float]]:
    """Default segmentation bands and weights found by band name.

    The first band matching each role (DEM, aspect, curvature, slope) is used with
    the meta_LSM weight; when none matches, every continuous band with weight 1.
    """
    chosen: list[str] = []
    weights: list[float] = []
    for pattern, weight in TERRAIN_ROLES.values():
        for name in names:
            if name not in chosen and re.search(pattern, name, flags=re.IGNORECASE):
                chosen.append(name)
                weights.append(weight)
                break
    if not chosen:
        kinds = kinds or ["continuous"] * len(names)
        chosen = [n for n, k in zip(names, kinds, strict=False) if k == "continuous"]
        weights = [1.0] * len(chosen)
    return chosen, weights


def resolve_bands(
    params: BlockParams, names: Sequence[str], kinds: Sequence[str] | None = None
) -> tuple[list[str], list[float]]:
    """Bands and weights to segment on, validated.

    Raises:
        InputError: unknown band, weights not matching bands, or non-positive weights.
    """
    if not params.bands:
        bands, weights = terrain_bands(names, kinds)
        if params.weights:
            if len(params.weights) != len(bands):
                raise InputError(
                    f"WEIGHTS has {len(params.weights)} values but the segmentation uses "
                    f"{len(bands)} bands ({', '.join(bands)}): give one weight per band."
                )
            weights = list(params.weights)
    else:
        bands = list(params.bands)
        unknown = [b for b in bands if b not in names]
        if unknown:
            raise InputError(
                f"BANDS names {', '.join(unknown)}, which is not a factor band: "
                f"the bands are {', '.join(names)}."
            )
        weights = list(params.weights) if params.weights else [1.0] * len(bands)
        if len(weights) != len(bands):
            raise InputError(
                f"WEIGHTS has {len(weights)} values for {len(bands)} BANDS: "
                "give one weight per band."
            )
    if not bands:
        raise InputError("There is no continuous band to segment on: set BANDS.")
    if any(not np.isfinite(w) or w <= 0 for w in weights):
        raise InputError("Every segmentation weight must be a positive number.")
    return bands, [float(w) for w in weights]


def slic_features(
    data: np.ndarray, valid: np.ndarray, bands: Sequence[str], weights: Sequence[float]
) -> np.ndarray:
    """Standardised, weighted SLIC feature image (rows, cols, channels); aspect as sin/cos."""
    chans: list[np.ndarray] = []
    for band, w, arr in zip(bands, weights, data, strict=False):
        a = np.where(valid, arr, np.nan).astype(np.float64)
        if re.search(TERRAIN_ROLES["aspect"][0], band, flags=re.IGNORECASE):
            rad = np.deg2rad(a)
            flat = ~(a >= 0)
            for comp in (np.sin(rad), np.cos(rad)):
                comp = np.where(flat, 0.0, comp)
                chans.append(w * comp)
            continue
        mu = np.nanmean(a)
        sd = np.nanstd(a)
        chans.append(w * (a - mu) / (sd if sd > 0 else 1.0))
    out = np.stack(chans, axis=-1)
    out[~valid] = 0.0
    return out.astype(np.float64)


def segment_array(features: np.ndarray, valid: np.ndarray, params: BlockParams) -> np.ndarray:
    """SLIC on a feature image with nodata masked and connectivity enforced.

    Returns:
        int32 block IDs 1..N (consecutive), 0 on nodata; every ID one 4-connected region.
    """
    from skimage.segmentation import slic

    if not valid.any():
        raise InputError(
            "The factor stack has no valid pixel (all nodata) where blocks are needed: "
            "check the rasters' nodata values."
        )
    n_valid = int(valid.sum())
    labels = slic(
        features,
        n_segments=max(1, min(int(params.n_blocks), n_valid)),
        compactness=float(params.compactness),
        max_num_iter=int(params.iterations),
        mask=valid,
        channel_axis=-1,
        convert2lab=False,
        enforce_connectivity=True,
        start_label=1,
    )
    labels = np.where(valid, labels, 0)
    return split_disconnected(labels)


def split_disconnected(labels: np.ndarray) -> np.ndarray:
    """Relabel so that every block ID is one 4-connected region, IDs 1..N in scan order."""
    from scipy import ndimage

    out = np.zeros(labels.shape, dtype=np.int32)
    next_id = 0
    for lab, sl in enumerate(ndimage.find_objects(labels.astype(np.int64)), start=1):
        if sl is None:
            continue
        sub = labels[sl] == lab
        parts, k = ndimage.label(sub)
        view = out[sl]
        view[sub] = parts[sub] + next_id
        next_id += k
    return out


def segment_stack(
    stack: AlignedStack,
    params: BlockParams,
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, int, list[str], list[float]]:
    """Segment an open factor stack into blocks.

    Returns:
        ``(labels, factor, bands, weights)``: labels at the segmentation
        resolution (int32, 0 = nodata), the decimation factor (1 = full
        resolution), and the bands and weights used.
    """
    from rasterio.windows import Window

    bands, weights = resolve_bands(params, stack.names, stack.kinds)
    idx = [stack.names.index(b) for b in bands]
    factor = 1
    while (stack.width // factor) * (stack.height // factor) > params.max_pixels:
        factor += 1
    if factor == 1:
        data, valid = stack.read(Window(0, 0, stack.width, stack.height))
        data = data[idx]
    else:
        data, valid = decimated_read(stack, idx, factor)
    if progress:
        progress(0.3)
    if not valid.any():
        raise InputError(
            "The factor stack has no valid pixel (all nodata) where blocks are needed: "
            "check the rasters' nodata values."
        )
    labels = segment_array(slic_features(data, valid, bands, weights), valid, params)
    if progress:
        progress(1.0)
    return labels, factor, bands, weights


def decimated_read(
    stack: AlignedStack, idx: list[int], factor: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every ``factor``-th pixel of the chosen bands, read strip by strip."""
    from rasterio.windows import Window

    rows = np.arange(0, stack.height, factor)
    cols = np.arange(0, stack.width, factor)
    data = np.full((len(idx), rows.size, cols.size), np.nan, dtype=np.float32)
    valid = np.zeros((rows.size, cols.size), dtype=bool)
    strip = max(factor, (1024 // factor) * factor)
    for r0 in range(0, stack.height, strip):
        h = min(strip, stack.height - r0)
        block, ok = stack.read(Window(0, r0, stack.width, h))
        sel = np.flatnonzero((rows >= r0) & (rows < r0 + h))
        data[:, sel] = block[idx][:, rows[sel] - r0][:, :, cols]
        valid[sel] = ok[rows[sel] - r0][:, cols]
    return data, valid


def upsample_window(
    labels: np.ndarray, factor: int, row0: int, col0: int, height: int, width: int
) -> np.ndarray:
    """Block IDs of a full-resolution window from labels decimated by ``factor``."""
    if factor == 1:
        return labels[row0 : row0 + height, col0 : col0 + width]
    r = np.minimum((np.arange(row0, row0 + height)) // factor, labels.shape[0] - 1)
    c = np.minimum((np.arange(col0, col0 + width)) // factor, labels.shape[1] - 1)
    return labels[np.ix_(r, c)]


def block_statistics(
    block_raster: np.ndarray,
    data: np.ndarray,
    band_names: Sequence[str],
    pixel_area: float,
    sample_blocks: np.ndarray | None = None,
    sample_labels: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-block area, sample counts and mean factor values.

    Args:
        block_raster: Block IDs (rows, cols), 0 = nodata.
        data: Factor values (bands, rows, cols), NaN on nodata.
        band_names: Factor names.
        pixel_area: Area of one pixel in map units squared.
        sample_blocks: Block ID of each sample.
        sample_labels: Label of each sample.

    Returns:
        Column name -> array over block IDs 1..N: ``block``, ``pixels``, ``area``,
        ``landslides``, ``samples``, ``mean_<band>``.
    """
    n = int(block_raster.max())
    ids = block_raster.ravel()
    pixels = np.bincount(ids, minlength=n + 1)[1:]
    out: dict[str, np.ndarray] = {
        "block": np.arange(1, n + 1, dtype=np.int64),
        "pixels": pixels.astype(np.int64),
        "area": pixels * float(pixel_area),
    }
    if sample_blocks is not None and sample_labels is not None:
        sb = np.asarray(sample_blocks, dtype=np.int64)
        lab = np.asarray(sample_labels)
        out["landslides"] = np.bincount(sb[lab == 1], minlength=n + 1)[1 : n + 1].astype(np.int64)
        out["samples"] = np.bincount(sb, minlength=n + 1)[1 : n + 1].astype(np.int64)
    for name, band in zip(band_names, data, strict=False):
        vals = band.ravel()
        ok = np.isfinite(vals) & (ids > 0)
        sums = np.bincount(ids[ok], weights=vals[ok], minlength=n + 1)[1:]
        cnt = np.bincount(ids[ok], minlength=n + 1)[1:]
        out[f"mean_{_field(name)}"] = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
    return out


def _field(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", name)


def polygonise(block_raster: np.ndarray, transform: Any) -> tuple[np.ndarray, np.ndarray]:
    """Block polygons with :func:`rasterio.features.shapes` (one MultiPolygon per ID).

    Returns:
        ``(ids, geometries)`` sorted by ID.
    """
    import shapely
    from rasterio import features as rfeatures

    parts: dict[int, list[Any]] = {}
    for geom, value in rfeatures.shapes(
        block_raster.astype(np.int32), mask=block_raster > 0, transform=transform
    ):
        parts.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    ids = np.array(sorted(parts), dtype=np.int64)
    geoms = np.empty(ids.size, dtype=object)
    for i, bid in enumerate(ids):
        polys = parts[int(bid)]
        geoms[i] = (
            shapely.MultiPolygon(polys) if len(polys) > 1 else shapely.MultiPolygon([polys[0]])
        )
    return ids, geoms


def kmeans_blocks(
    xs: np.ndarray, ys: np.ndarray, n_blocks: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Blocks from k-means clustering of coordinates (tables without a raster).

    Returns:
        ``(block ID per sample 1..N, centres (N, 2))``.

    Raises:
        InputError: fewer samples than blocks, or non-finite coordinates.
    """
    from sklearn.cluster import KMeans

    coords = np.column_stack([np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)])
    if not np.all(np.isfinite(coords)):
        raise InputError("Some sample coordinates are missing or not numbers: remove those rows.")
    if n_blocks < 1 or n_blocks > len(coords):
        raise InputError(
            f"Cannot make {n_blocks} blocks from {len(coords)} samples: "
            f"use 1 to {len(coords)} blocks."
        )
    km = KMeans(n_clusters=int(n_blocks), random_state=seed, n_init=4).fit(coords)
    return km.labels_.astype(np.int64) + 1, km.cluster_centers_.astype(np.float64)


def nearest_centre(xs: np.ndarray, ys: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Block ID (1..N) of the nearest k-means centre, for new coordinates."""
    from scipy.spatial import cKDTree

    _, idx = cKDTree(centres).query(np.column_stack([xs, ys]))
    return np.asarray(idx, dtype=np.int64) + 1


def sample_blocks(
    block_raster: np.ndarray, rows: np.ndarray, cols: np.ndarray, factor: int = 1
) -> np.ndarray:
    """Block ID of each sample pixel."""
    r = np.minimum(np.asarray(rows) // factor, block_raster.shape[0] - 1)
    c = np.minimum(np.asarray(cols) // factor, block_raster.shape[1] - 1)
    return block_raster[r, c].astype(np.int64)


# --- job parameters and block rasters -------------------------------------------------


@dataclass(frozen=True)
class BlockJobParams(SamplingParams):
    """Job parameters with the block group (segmentblocks, trainsusceptibility).

    Attributes:
        n_blocks: N_BLOCKS, approximate number of blocks (0: the job's default).
        compactness: COMPACTNESS of SLIC.
        bands: BANDS to segment on (empty: terrain bands by name).
        weights: WEIGHTS, one per band (empty: the meta_LSM weights).
        iterations: ITERATIONS of SLIC.
    """

    n_blocks: int = 0
    compactness: float = 0.5
    bands: Sequence[str] = ()
    weights: Sequence[float] = ()
    iterations: int = 10

    def block_params(self, n_default: int) -> BlockParams:
        """SLIC parameters; N_BLOCKS 0 means ``n_default``."""
        return BlockParams(
            n_blocks=self.n_blocks or n_default,
            compactness=self.compactness,
            bands=list(self.bands),
            weights=list(self.weights),
            iterations=self.iterations,
        )


def auto_blocks(n_samples: int) -> int:
    """Default block count: about 25 samples per block, 4 to 256 blocks."""
    return int(min(256, max(4, n_samples // 25)))


def write_block_raster(path: str, labels: np.ndarray, factor: int, stack: AlignedStack) -> None:
    """Write block labels (segmented at ``1 / factor`` resolution) on the stack's grid."""
    from slidewise.engine.geo.raster import create_raster, iter_windows, output_profile

    profile = output_profile(stack.grid.profile(), 1, dtype="int32", nodata=0)
    with create_raster(path, profile, band_names=["block"]) as dst:
        for _, write, _ in iter_windows(stack.width, stack.height, 1024):
            win = upsample_window(
                labels,
                factor,
                int(write.row_off),
                int(write.col_off),
                int(write.height),
                int(write.width),
            )
            dst.write(win[None].astype(np.int32), window=write)


def check_block_grid(path: str, stack: AlignedStack, advice: str) -> None:
    """Refuse a block raster on another grid than the stack.

    Args:
        path: The block raster.
        stack: The factor stack it must match.
        advice: What the user should do instead (ends the message).

    Raises:
        InputError: the grids differ (the message says how).
    """
    from slidewise.engine.geo.align import GridSpec, grid_differences
    from slidewise.engine.geo.raster import open_raster

    info = open_raster(path, what="block raster")
    diff = grid_differences(GridSpec.from_info(info), stack.grid, path)
    if diff is not None:
        raise InputError(
            f"The block raster '{Path(path).name}' is not on the grid of the factor stack "
            f"({diff.describe()}): {advice}."
        )


def read_block_raster(path: str, stack: AlignedStack) -> np.ndarray:
    """Read a block raster, refusing one on another grid than the stack."""
    import rasterio

    check_block_grid(path, stack, "segment the same stack with segmentblocks")
    with rasterio.open(path) as src:
        data = src.read(1)
    if not np.issubdtype(data.dtype, np.integer):
        data = np.nan_to_num(data, nan=0).astype(np.int64)
    return data.astype(np.int64)


def grid_doc(stack: AlignedStack) -> dict[str, Any]:
    """The stack's grid as JSON (CRS WKT, transform, size), recorded in model files."""
    return {
        "crs": stack.crs.to_wkt() if stack.crs is not None else None,
        "transform": list(stack.transform)[:6],
        "width": stack.width,
        "height": stack.height,
    }
