"""Map thumbnails for reports: classes over a hillshade, hits and misses, boxes over an image.

Rasters are read decimated (:func:`read_overview`, at most ``max_side`` pixels on the
long side, nearest neighbour so classes stay classes); figures are drawn with
matplotlib's Agg backend through :func:`slidewise.engine.core.report.new_figure` and
returned as PNG bytes with the numbers they show (for the report's JSON).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from slidewise.engine.core.report import figure_png, new_figure

#: Colours of susceptibility classes 1..5 (resources/styles/susceptibility_classes.qml).
CLASS_COLOURS_5 = ("#1a9641", "#a6d96a", "#ffffbf", "#fdae61", "#d7191c")
#: Okabe-Ito colours (safe for colour-blind readers): hits, misses, false alarms.
OUTCOME_COLOURS = {"hit": "#009E73", "miss": "#D55E00", "false alarm": "#0072B2"}
THUMBNAIL_SIDE = 900


@dataclass
class Overview:
    """A decimated band of a raster.

    Attributes:
        values: Values, masked where nodata or NaN.
        pixel_size: Ground size (x, y) of one overview pixel, in CRS units.
        extent: ``(left, right, bottom, top)`` in CRS units.
        crs: CRS as text (may be empty).
        transform: Affine transform of the overview grid.
    """

    values: np.ma.MaskedArray
    pixel_size: tuple[float, float]
    extent: tuple[float, float, float, float]
    crs: str
    transform: Any = None


def read_overview(
    path: str | os.PathLike[str], band: int = 1, max_side: int = THUMBNAIL_SIDE
) -> Overview:
    """Band ``band`` of ``path`` read at most ``max_side`` pixels on its long side."""
    import rasterio

    with rasterio.open(path) as src:
        step = max(1.0, max(src.width, src.height) / max_side)
        shape = (max(1, round(src.height / step)), max(1, round(src.width / step)))
        data = src.read(band, out_shape=shape, masked=True).astype(np.float64)
        data = np.ma.masked_invalid(data)
        bounds = src.bounds
        size = ((bounds.right - bounds.left) / shape[1], (bounds.top - bounds.bottom) / shape[0])
        crs = src.crs.to_string() if src.crs else ""
        transform = src.transform @ src.transform.scale(src.width / shape[1], src.height / shape[0])
    extent = (bounds.left, bounds.right, bounds.bottom, bounds.top)
    return Overview(data, size, extent, crs, transform)


def read_on_grid(path: str | os.PathLike[str], band: int, like: Overview) -> Overview:
    """Band ``band`` of ``path`` warped (bilinear) onto the grid of ``like`` (any CRS)."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    out = np.full(like.values.shape, np.nan, dtype=np.float64)
    with rasterio.open(path) as src:
        reproject(
            rasterio.band(src, band),
            out,
            src_nodata=src.nodata,
            dst_transform=like.transform,
            dst_crs=like.crs or src.crs,
            dst_nodata=np.nan,
            resampling=Resampling.bilinear,
        )
    return Overview(
        np.ma.masked_invalid(out), like.pixel_size, like.extent, like.crs, like.transform
    )


def hillshade(elevation: Overview, azimuth: float = 315.0, altitude: float = 45.0) -> np.ndarray:
    """Hillshade 0..1 of an elevation overview (matplotlib's LightSource), NaN on nodata."""
    from matplotlib.colors import LightSource

    z = elevation.values
    filled = z.filled(float(np.ma.median(z)) if z.count() else 0.0)
    shade = LightSource(azdeg=azimuth, altdeg=altitude).hillshade(
        filled, dx=abs(elevation.pixel_size[0]), dy=abs(elevation.pixel_size[1])
    )
    return np.where(np.ma.getmaskarray(z), np.nan, shade)


def resize_nearest(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``values`` resampled to ``shape`` by nearest neighbour (grids of the same extent)."""
    rows = np.minimum((np.arange(shape[0]) + 0.5) * values.shape[0] / shape[0], values.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * values.shape[1] / shape[1], values.shape[1] - 1)
    return values[rows.astype(int)[:, None], cols.astype(int)[None, :]]


def class_colours(n_classes: int) -> list[str]:
    """Colours of classes 1..n: the style's five, else a green-to-red ramp."""
    if n_classes == len(CLASS_COLOURS_5):
        return list(CLASS_COLOURS_5)
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    ramp = colormaps["RdYlGn_r"]
    return [to_hex(ramp(i / max(1, n_classes - 1))) for i in range(n_classes)]


def _map_axes(fig: Any, overview: Overview) -> Any:
    ax = fig.add_subplot()
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal")
    _scale_note(ax, overview)
    return ax


def _scale_note(ax: Any, overview: Overview) -> None:
    """A scale bar of a round length (CRS units, metres when projected) in the lower left."""
    left, right, bottom, top = overview.extent
    width = right - left
    if not (math.isfinite(width) and width > 0):
        return
    target = width / 5
    length = 10 ** math.floor(math.log10(target))
    for factor in (5, 2, 1):
        if factor * length <= target:
            length *= factor
            break
    x0, y0 = left + 0.04 * width, bottom + 0.04 * (top - bottom)
    ax.plot([x0, x0 + length], [y0, y0], color="black", lw=3, solid_capstyle="butt")
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    ax.text(x0, y0 + 0.015 * (top - bottom), label, fontsize=8, va="bottom")


def classes_thumbnail(
    classes: Overview, n_classes: int, names: Sequence[str], shade: np.ndarray | None
) -> tuple[bytes, dict[str, Any]]:
    """Susceptibility classes (1..n, 0 = none) over a hillshade (plain when ``shade`` is None).

    Returns:
        PNG bytes and the figure's numbers: per cent of the drawn area in each class.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    values = np.ma.masked_less(np.ma.masked_invalid(classes.values), 1)
    fig = new_figure(6.5, 4.6 * max(0.4, min(1.6, values.shape[0] / values.shape[1])) + 0.6)
    ax = _map_axes(fig, classes)
    if shade is not None:
        ax.imshow(
            resize_nearest(shade, values.shape), cmap="gray", vmin=0, vmax=1, extent=classes.extent
        )
    colours = class_colours(n_classes)
    alpha = 0.6 if shade is not None else 1.0  # the key shows the colours as the map does
    ax.imshow(
        values,
        cmap=ListedColormap(colours),
        vmin=0.5,
        vmax=n_classes + 0.5,
        alpha=alpha,
        extent=classes.extent,
        interpolation="nearest",
    )
    handles = [
        Patch(color=c, alpha=alpha, label=str(n).capitalize())
        for c, n in zip(colours, names, strict=False)
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title("Susceptibility classes" + (" over hillshade" if shade is not None else ""))
    counts = np.bincount(values.compressed().astype(int), minlength=n_classes + 1)[1:]
    total = max(1, int(counts.sum()))
    shares = {str(n): round(100 * int(c) / total, 2) for n, c in zip(names, counts, strict=False)}
    return figure_png(fig), {"class_area_percent": shares, "hillshade": shade is not None}


def outcome_codes(predicted: np.ndarray, reference: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """0 = nothing or not evaluated, 1 = hit (TP), 2 = miss (FN), 3 = false alarm (FP)."""
    codes = np.zeros(predicted.shape, dtype=np.uint8)
    codes[valid & predicted & reference] = 1
    codes[valid & ~predicted & reference] = 2
    codes[valid & predicted & ~reference] = 3
    return codes


def outcome_thumbnail(
    codes: Overview, background: np.ndarray | None = None
) -> tuple[bytes, dict[str, Any]]:
    """Hits, misses and false alarms (codes of :func:`outcome_codes`) over a background.

    Args:
        codes: Outcome codes on an overview grid.
        background: Grey (2-D, 0..1) or RGB (3-D, 0..1) image of the same extent, or
            ``None`` (light grey).

    Returns:
        PNG bytes and the per cent of the drawn evaluated pixels of each outcome.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    values = np.ma.masked_equal(np.ma.filled(codes.values, 0).astype(int), 0)
    fig = new_figure(6.5, 4.6 * max(0.4, min(1.6, values.shape[0] / values.shape[1])) + 0.6)
    ax = _map_axes(fig, codes)
    if background is not None:
        cmap = "gray" if background.ndim == 2 else None
        ax.imshow(background, cmap=cmap, vmin=0, vmax=1, extent=codes.extent, alpha=0.8)
    else:
        ax.set_facecolor("#eeeeee")
    colours = list(OUTCOME_COLOURS.values())
    ax.imshow(
        values,
        cmap=ListedColormap(colours),
        vmin=0.5,
        vmax=3.5,
        extent=codes.extent,
        interpolation="nearest",
    )
    labels = ["Hit (mapped landslide)", "Miss (landslide not mapped)", "False alarm"]
    handles = [Patch(color=c, label=n) for c, n in zip(colours, labels, strict=False)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title("Hits, misses and false alarms")
    counts = np.bincount(values.compressed(), minlength=4)[1:]
    total = max(1, int(counts.sum()))
    shares = {
        k: round(100 * int(c) / total, 2) for k, c in zip(OUTCOME_COLOURS, counts, strict=False)
    }
    return figure_png(fig), {"outcome_percent_of_marked_pixels": shares}


def boxes_thumbnail(
    image: np.ndarray,
    predicted: np.ndarray,
    scores: np.ndarray,
    reference: np.ndarray,
    title: str = "",
) -> bytes:
    """Predicted boxes (with scores) and reference boxes over an RGB image (0..1).

    Args:
        image: ``(H, W, 3)`` or ``(H, W)`` image scaled to 0..1.
        predicted: ``(N, 4)`` boxes ``x0, y0, x1, y1`` in pixels.
        scores: ``(N,)`` scores of the predicted boxes.
        reference: ``(M, 4)`` reference boxes.
        title: Figure title.
    """
    from matplotlib.patches import Patch, Rectangle

    height, width = image.shape[:2]
    fig = new_figure(6.0, 4.0 * max(0.4, min(1.6, height / width)) + 0.6)
    ax = fig.add_subplot()
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    for x0, y0, x1, y1 in np.asarray(reference).reshape(-1, 4):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="#F0E442", lw=2.5))
    for (x0, y0, x1, y1), s in zip(np.asarray(predicted).reshape(-1, 4), scores, strict=False):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="#D55E00", lw=1.5))
        ax.text(
            x0,
            y0,
            f"{100 * s:.0f} %",
            color="white",
            fontsize=7,
            va="bottom",
            bbox={"facecolor": "#D55E00", "pad": 1, "lw": 0},
        )
    handles = [
        Patch(fill=False, ec="#F0E442", lw=2.5, label="Reference landslide"),
        Patch(fill=False, ec="#D55E00", lw=1.5, label="Detected (score %)"),
    ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return figure_png(fig)


def zones_thumbnail(
    zones: Overview, shade: np.ndarray | None, title: str
) -> tuple[bytes, dict[str, Any]]:
    """Zones (integer ids > 0, such as terrain blocks) in cycling colours, borders in black.

    Returns:
        PNG bytes and the number of zones drawn with the per cent of the area of each.
    """
    from matplotlib import colormaps

    ids = np.ma.filled(np.ma.masked_invalid(zones.values), 0).astype(np.int64)
    fig = new_figure(6.0, 5.0 * max(0.4, min(1.6, ids.shape[0] / ids.shape[1])) + 0.5)
    ax = _map_axes(fig, zones)
    if shade is not None:
        ax.imshow(
            resize_nearest(shade, ids.shape), cmap="gray", vmin=0, vmax=1, extent=zones.extent
        )
    colours = colormaps["tab20"](np.arange(20))
    rgba = colours[ids % 20].copy()
    rgba[..., 3] = np.where(ids > 0, 0.45 if shade is not None else 1.0, 0.0)
    border = np.zeros(ids.shape, dtype=bool)
    border[1:, :] |= ids[1:, :] != ids[:-1, :]
    border[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    rgba[border & (ids > 0)] = (0, 0, 0, 1)
    ax.imshow(rgba, extent=zones.extent, interpolation="nearest")
    ax.set_title(title)
    found, counts = np.unique(ids[ids > 0], return_counts=True)
    total = max(1, int(counts.sum()))
    shares = {
        str(int(k)): round(100 * int(c) / total, 3) for k, c in zip(found, counts, strict=True)
    }
    return figure_png(fig), {"zones": int(found.size), "area_percent": shares}
