"""Windowed passes over the rasters of an evaluation: histogram, pixel values, class counts.

Memory is bounded for any raster size: the probability raster is read window by
window into a fine histogram (area ranking) and class counts; values at
inventory locations are read with small windows around them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from slidewise.engine.core.errors import InputError
from slidewise.engine.geo.raster import iter_windows, read_masked

HIST_BINS = 1000
BREAKS_SAMPLE = 250_000


@dataclass
class RasterSummary:
    """What one windowed pass over the probability raster collects.

    Attributes:
        counts: Pixel counts per histogram bin.
        edges: Bin edges (``len(counts) + 1``), 0..1.
        n_valid: Valid (finite, not nodata) pixels.
        n_pixels: All pixels.
        vmin: Smallest valid value.
        vmax: Largest valid value.
        sample: Every valid value, or for large rasters a random sample of them
            with the exact minimum and maximum appended (for class breaks).
    """

    counts: np.ndarray
    edges: np.ndarray
    n_valid: int
    n_pixels: int
    vmin: float
    vmax: float
    sample: np.ndarray


def probability_histogram(
    src: rasterio.io.DatasetReader,
    bins: int = HIST_BINS,
    block: int = 1024,
    sample_size: int = BREAKS_SAMPLE,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> RasterSummary:
    """Histogram of band 1 on ``[0, 1]``, accumulated window by window.

    The counts equal ``np.histogram(valid_values, bins, range=(0, 1))`` of the
    whole array; values outside 0..1 are counted in the end bins (check
    ``vmin``/``vmax`` to reject rasters that are not probabilities).
    A Bernoulli sample of about ``sample_size`` valid values is kept for class
    breaks (every value when the raster is smaller).

    Args:
        src: Open probability raster.
        bins: Number of equal bins on 0..1.
        block: Window side in pixels.
        sample_size: Target size of the value sample.
        seed: Seed of the sample.
        progress: Called with the fraction done.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.zeros(bins, dtype=np.int64)
    n_pixels = src.width * src.height
    rate = min(1.0, sample_size / max(1, n_pixels))
    rng = np.random.default_rng(seed)
    n_valid, vmin, vmax = 0, math.inf, -math.inf
    samples: list[np.ndarray] = []
    windows = list(iter_windows(src.width, src.height, block))
    for i, (read, _, _) in enumerate(windows):
        data, valid = read_masked(src, read, indexes=1)
        values = data[0][valid].astype(np.float64)
        if values.size:
            n_valid += values.size
            vmin, vmax = min(vmin, float(values.min())), max(vmax, float(values.max()))
            counts += np.histogram(np.clip(values, 0.0, 1.0), bins=edges)[0]
            samples.append(values if rate >= 1.0 else values[rng.random(values.size) < rate])
        if progress is not None:
            progress((i + 1) / len(windows))
    # A subsample gets the exact extremes, so that the outer class edges are exact.
    extremes = [vmin, vmax] if rate < 1.0 and n_valid else []
    sample = np.concatenate([*samples, extremes]) if n_valid else np.zeros(0)
    return RasterSummary(counts, edges, n_valid, n_pixels, vmin, vmax, sample)


def read_pixels(
    src: rasterio.io.DatasetReader,
    rows: np.ndarray,
    cols: np.ndarray,
    band: int = 1,
    block: int = 512,
) -> np.ndarray:
    """Values at pixel positions, read with one small window per occupied block.

    Args:
        src: Open raster.
        rows: Pixel rows (inside the raster).
        cols: Pixel columns.
        band: Band to read.
        block: Grouping block side: pixels of one block share one window that
            spans only their bounding box.

    Returns:
        float64 values, NaN on nodata.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    out = np.full(rows.shape, np.nan)
    if rows.size == 0:
        return out
    per_row = src.width // block + 1
    key = (rows // block) * per_row + cols // block
    order = np.argsort(key, kind="stable")
    _, starts = np.unique(key[order], return_index=True)
    for idx in np.split(order, starts[1:]):
        r0, r1 = int(rows[idx].min()), int(rows[idx].max())
        c0, c1 = int(cols[idx].min()), int(cols[idx].max())
        data, _ = read_masked(src, Window(c0, r0, c1 - c0 + 1, r1 - r0 + 1), indexes=band)
        out[idx] = data[0][rows[idx] - r0, cols[idx] - c0]
    return out


def classed_counts(
    src: rasterio.io.DatasetReader,
    classed: rasterio.io.DatasetReader | None,
    breaks: np.ndarray | None,
    n_classes: int,
    progress: Callable[[float], None],
) -> np.ndarray:
    """Pixels per class (index 0 = class 1) over pixels valid in the probability raster.

    Args:
        src: Open probability raster.
        classed: Open classed raster on the same grid, or ``None`` to class ``src``
            with ``breaks``.
        breaks: Class edges (when ``classed`` is ``None``).
        n_classes: Number of classes.
        progress: Called with the fraction done.
    """
    from slidewise.engine.susceptibility.classify import apply_breaks

    counts = np.zeros(n_classes + 1, dtype=np.int64)
    windows = list(iter_windows(src.width, src.height, 1024))
    for i, (read, _, _) in enumerate(windows):
        data, valid = read_masked(src, read, indexes=1)
        if classed is None:
            assert breaks is not None
            cls = apply_breaks(data[0], breaks)
        else:
            cdata, cvalid = read_masked(classed, read, indexes=1)
            cls = class_values(cdata[0], n_classes, classed.name)
            valid &= cvalid
        counts += np.bincount(cls[valid].ravel(), minlength=n_classes + 1)[: n_classes + 1]
        progress((i + 1) / len(windows))
    return counts[1:]


def class_values(values: np.ndarray, n_classes: int, source: str) -> np.ndarray:
    """Classes 1..n from a classed raster's values (0 and nodata: no class).

    Raises:
        InputError: values that are not whole numbers in ``0..n_classes``.
    """
    finite = np.isfinite(values)
    v = np.where(finite, values, 0)
    if np.any(v != np.round(v)) or np.any(v < 0) or np.any(v > n_classes):
        bad = v[(v != np.round(v)) | (v < 0) | (v > n_classes)]
        raise InputError(
            f"The classed raster '{Path(source).name}' holds values other than classes "
            f"1..{n_classes} (e.g. {bad.flat[0]:g}): give a raster of classes 1..N_CLASSES "
            "or set N_CLASSES to its highest class."
        )
    return v.astype(np.uint8)


def classed_max(src: rasterio.io.DatasetReader) -> int:
    """Highest class value in a classed raster (read by windows)."""
    top = 0.0
    for read, _, _ in iter_windows(src.width, src.height, 1024):
        data, valid = read_masked(src, read, indexes=1)
        if valid.any():
            top = max(top, float(np.nanmax(data[0][valid])))
    return math.ceil(top)
