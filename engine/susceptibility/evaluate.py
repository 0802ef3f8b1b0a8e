"""The ``evaluatesusceptibility`` job: validate a landslide susceptibility map.

Inputs are a probability-of-landslide raster (0-1) and a validation inventory
(points or polygons, vector file or CSV table). The job reports

* point metrics with scikit-learn: ROC-AUC, accuracy, precision, recall, F1 and
  Cohen's kappa at a probability threshold;
* the prediction-rate curve (validation landslides) and, with a training
  inventory, the success-rate curve: cumulative share of landslides against
  cumulative share of area ranked by decreasing susceptibility, with the area
  under each curve;
* per-class area share, landslide share and frequency ratio of the classed map
  (classes 1..n from :mod:`slidewise.engine.susceptibility.classify`, or a classed raster);

as a self-contained HTML report with a JSON of all numbers next to it.

Memory is bounded for any raster size: the prediction is read window by window
into a fine histogram (area ranking) and class counts; values at inventory
locations are read with small windows around them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult, check_known, choice, require
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.geo.raster import (
    RasterInfo,
    iter_windows,
    open_raster,
    read_masked,
    same_grid,
)

KNOWN_PARAMS = {
    "INPUT",
    "INVENTORY",
    "LABEL_FIELD",
    "X_FIELD",
    "Y_FIELD",
    "TRAINING",
    "CLASSED",
    "CLASSIFICATION",
    "N_CLASSES",
    "THRESHOLD",
    "SEED",
    "NEGATIVE_RATIO",
    "BUFFER",
    "OUTPUT",
}
CLASSIFICATIONS = ("quantile", "natural_breaks", "equal_interval")
LABEL_ALIASES = ("label", "lslpts", "landslide", "class", "target")
HIST_BINS = 1000
BREAKS_SAMPLE = 250_000
RANGE_TOLERANCE = 1e-6
TRUE_WORDS = {"1", "1.0", "true", "t", "yes", "y"}
FALSE_WORDS = {"0", "0.0", "false", "f", "no", "n"}


# --------------------------------------------------------------------------- parameters


@dataclass
class EvalParams:
    """Parameters of the ``evaluatesusceptibility`` job (see :func:`run_evaluate`)."""

    input: str
    inventory: str
    output: str
    label: str = "label"
    label_given: bool = False
    x: str = "x"
    y: str = "y"
    training: str | None = None
    classed: str | None = None
    classification: str = "quantile"
    n_classes: int = 5
    threshold: float = 0.5
    seed: int = 0
    negative_ratio: float = 1.0
    buffer: float | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any], default_seed: int = 0) -> EvalParams:
        """Validate the job parameters."""
        check_known(params, KNOWN_PARAMS)
        require(params, "INPUT", "INVENTORY", "OUTPUT")

        def number(name: str, default: float, kind: type = float) -> Any:
            raw = params.get(name)
            if raw in (None, ""):
                return kind(default)
            try:
                value = kind(float(raw)) if kind is int else kind(raw)
            except (TypeError, ValueError):
                raise InputError(f"{name} must be a number, not '{raw}'.") from None
            if kind is int and float(raw) != int(float(raw)):
                raise InputError(f"{name} must be a whole number, not '{raw}'.")
            return value

        label_raw = str(params.get("LABEL_FIELD") or "").strip()
        out = cls(
            input=str(params["INPUT"]),
            inventory=str(params["INVENTORY"]),
            output=str(params["OUTPUT"]),
            label=label_raw or "label",
            label_given=bool(label_raw) and label_raw.lower() != "label",
            x=str(params.get("X_FIELD") or "x").strip(),
            y=str(params.get("Y_FIELD") or "y").strip(),
            training=str(params["TRAINING"]) if params.get("TRAINING") else None,
            classed=str(params["CLASSED"]) if params.get("CLASSED") else None,
            classification=choice(params, "CLASSIFICATION", CLASSIFICATIONS, "quantile"),
            n_classes=number("N_CLASSES", 5, int),
            threshold=number("THRESHOLD", 0.5),
            seed=number("SEED", default_seed, int),
            negative_ratio=number("NEGATIVE_RATIO", 1.0),
            buffer=None if params.get("BUFFER") in (None, "") else number("BUFFER", 0.0),
        )
        if not 0.0 < out.threshold < 1.0:
            raise InputError(f"THRESHOLD must be between 0 and 1 (exclusive), not {out.threshold}.")
        if not 2 <= out.n_classes <= 255:
            raise InputError(f"N_CLASSES must be 2 to 255, not {out.n_classes}.")
        if not out.negative_ratio > 0:
            raise InputError(f"NEGATIVE_RATIO must be above 0, not {out.negative_ratio}.")
        if out.buffer is not None and out.buffer < 0:
            raise InputError(f"BUFFER must be 0 or more map units, not {out.buffer}.")
        if Path(out.output).suffix.lower() not in (".html", ".htm"):
            raise InputError(
                f"OUTPUT '{out.output}' must be an .html file (the JSON is written next to it)."
            )
        return out


# --------------------------------------------------------------------------- raster passes


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


def apply_affine(transform: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply an affine transform to coordinate arrays: ``(x', y') = transform (x, y)``."""
    t = transform
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


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


# --------------------------------------------------------------------------- inventories


@dataclass
class Inventory:
    """Inventory samples located on the raster grid.

    Attributes:
        rows: Pixel row of each sample (points: one per point; polygons: one per
            pixel inside, unique per class).
        cols: Pixel column of each sample.
        labels: 1 = landslide, 0 = not landslide.
        values: Probability at each sample.
        kind: ``points``, ``polygons`` or ``mixed``.
        labelled: Whether the labels came from a column.
        n_features: Features read.
        dropped_outside: Features outside the raster.
        dropped_nodata: Features only on nodata.
        dropped_label: Features with a missing label.
        notes: Log lines describing what was done.
    """

    rows: np.ndarray
    cols: np.ndarray
    labels: np.ndarray
    values: np.ndarray
    kind: str
    labelled: bool
    n_features: int
    dropped_outside: int = 0
    dropped_nodata: int = 0
    dropped_label: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def n_positive(self) -> int:
        """Landslide samples."""
        return int(np.sum(self.labels == 1))

    @property
    def n_negative(self) -> int:
        """Non-landslide samples."""
        return int(np.sum(self.labels == 0))


def parse_labels(values: np.ndarray, column: str, source: str) -> np.ndarray:
    """Turn a label column into 1 / 0 / -1 (missing).

    Numbers must be 0 or 1; text may be 1/0, true/false, yes/no (any case).

    Raises:
        InputError: other values.
    """
    arr = np.asarray(values)
    out = np.full(arr.shape, -1, dtype=np.int8)
    if arr.dtype.kind in "fiub":
        num = arr.astype(np.float64)
        finite = np.isfinite(num)
        bad = finite & (num != 0) & (num != 1)
        out[finite & (num == 1)] = 1
        out[finite & (num == 0)] = 0
        bad_values = sorted({str(v) for v in num[bad]})
    else:
        text = np.char.lower(np.char.strip(arr.astype(str)))
        is_true = np.isin(text, list(TRUE_WORDS))
        is_false = np.isin(text, list(FALSE_WORDS))
        empty = np.isin(text, ["", "na", "nan", "none", "null"])
        out[is_true] = 1
        out[is_false] = 0
        bad_values = sorted(set(text[~(is_true | is_false | empty)].tolist()))
    if bad_values:
        shown = ", ".join(bad_values[:5])
        raise InputError(
            f"The label column '{column}' of '{source}' holds values other than 1/0 ({shown}): "
            "use 1 = landslide, 0 = not landslide (true/false and yes/no are accepted too)."
        )
    return out


def _find_label(fields: dict[str, np.ndarray], params: EvalParams, source: str) -> str | None:
    lower = {k.lower(): k for k in fields}
    if params.label.lower() in lower:
        return lower[params.label.lower()]
    if params.label_given:
        raise InputError(
            f"The inventory '{source}' has no label column '{params.label}': its columns are "
            f"{', '.join(fields) or '(none)'}. Give the right LABEL_FIELD, or leave "
            "LABEL_FIELD empty to treat every feature as a landslide."
        )
    for alias in LABEL_ALIASES:
        if alias in lower:
            return lower[alias]
    return None


def _read_features(
    path: str, params: EvalParams, info: RasterInfo, what: str, log: Callable[[str], None]
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read an inventory as shapely geometries in the raster CRS plus labels."""
    import shapely

    from slidewise.engine.geo.tables import TABLE_SUFFIXES, find_column, read_table
    from slidewise.engine.geo.vectors import read_vector, same_crs

    p = Path(path)
    notes: list[str] = []
    if not p.exists():
        raise InputError(f"The {what} '{p}' does not exist: check the path.")
    if p.suffix.lower() in TABLE_SUFFIXES:
        table = read_table(p, warn=log)
        xcol = find_column(table, params.x, p.name)
        ycol = find_column(table, params.y, p.name)
        for col in (xcol, ycol):
            if table[col].dtype.kind != "f":
                raise InputError(
                    f"The coordinate column '{col}' of '{p.name}' is not numeric: "
                    "give the X and Y columns holding map coordinates."
                )
        geoms = shapely.points(table[xcol], table[ycol])
        fields = {k: v for k, v in table.items() if k not in (xcol, ycol)}
        notes.append(
            f"{what}: {len(geoms)} points from columns {xcol}/{ycol}, taken to be in the "
            "prediction raster's CRS."
        )
        crs = None
    else:
        vec = read_vector(p, what=what)
        geoms, fields, crs = vec.geometries, vec.fields, vec.crs
        if crs is None:
            notes.append(f"{what} has no CRS: taken to be in the prediction raster's CRS.")
        elif info.crs is not None and not same_crs(crs, info.crs):
            from rasterio.crs import CRS

            from slidewise.engine.geo.vectors import reproject_geometries

            src_crs = CRS.from_user_input(crs)
            geoms = reproject_geometries(geoms, src_crs, info.crs, what=what)
            name = src_crs.to_string() if src_crs.to_epsg() is None else f"EPSG:{src_crs.to_epsg()}"
            notes.append(
                f"{what} is in {name}, the raster in {info.crs.to_string()}: "
                f"{len(geoms)} features were reprojected to the raster CRS."
            )
    label_col = _find_label(fields, params, p.name)
    labels = None
    if label_col is not None:
        labels = parse_labels(fields[label_col], label_col, p.name)
        notes.append(f"{what}: labels from column '{label_col}' (1 = landslide, 0 = not).")
    else:
        notes.append(
            f"{what}: no label column ({params.label}, {', '.join(LABEL_ALIASES[1:])}): "
            "every feature is taken as a landslide."
        )
    return geoms, labels, notes


def _feature_pixels(
    geoms: np.ndarray, info: RasterInfo, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Pixels of each feature: ``(feature_index, rows, cols, kind)``.

    Points give their pixel (points outside give nothing); polygons give the
    pixels whose centre is inside (all touched pixels for polygons smaller than
    a pixel).
    """
    import shapely
    from rasterio.features import geometry_mask
    from rasterio.windows import from_bounds

    type_ids = shapely.get_type_id(geoms)
    bad = ~np.isin(type_ids, (0, 3, 4, 6))
    if np.any(bad):
        kinds = sorted({shapely.get_type_id(g) for g in geoms[bad]})
        names = {1: "LineString", 2: "LinearRing", 5: "MultiLineString", 7: "GeometryCollection"}
        raise InputError(
            f"The {what} holds {', '.join(names.get(k, str(k)) for k in kinds)} features: "
            "use points or polygons."
        )
    inverse = ~info.transform
    feats, rows, cols = [], [], []
    is_point = np.isin(type_ids, (0, 4))
    if np.any(is_point):
        pts, index = shapely.get_parts(geoms[is_point], return_index=True)
        xy = shapely.get_coordinates(pts)
        fcol, frow = apply_affine(inverse, xy[:, 0], xy[:, 1])
        r, c = np.floor(frow).astype(np.int64), np.floor(fcol).astype(np.int64)
        inside = (r >= 0) & (r < info.height) & (c >= 0) & (c < info.width)
        feats.append(np.flatnonzero(is_point)[index][inside])
        rows.append(r[inside])
        cols.append(c[inside])
    for i in np.flatnonzero(~is_point):
        geom = geoms[i]
        win = from_bounds(*geom.bounds, transform=info.transform)
        c0 = max(0, math.floor(win.col_off))
        r0 = max(0, math.floor(win.row_off))
        c1 = min(info.width, math.ceil(win.col_off + win.width))
        r1 = min(info.height, math.ceil(win.row_off + win.height))
        if c1 <= c0 or r1 <= r0:
            continue  # outside the raster
        win = Window(c0, r0, c1 - c0, r1 - r0)
        t = info.transform
        wt = Affine(t.a, t.b, t.c + t.a * c0 + t.b * r0, t.d, t.e, t.f + t.d * c0 + t.e * r0)
        shape = (int(win.height), int(win.width))
        inside = geometry_mask([geom], shape, wt, invert=True)
        if not inside.any():
            inside = geometry_mask([geom], shape, wt, invert=True, all_touched=True)
        r, c = np.nonzero(inside)
        feats.append(np.full(r.size, i, dtype=np.int64))
        rows.append(r + int(win.row_off))
        cols.append(c + int(win.col_off))
    kind = "points" if is_point.all() else ("polygons" if not is_point.any() else "mixed")
    if not feats:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, kind
    return np.concatenate(feats), np.concatenate(rows), np.concatenate(cols), kind


def load_inventory(
    path: str,
    src: rasterio.io.DatasetReader,
    info: RasterInfo,
    params: EvalParams,
    what: str = "inventory",
    log: Callable[[str], None] = print,
) -> Inventory:
    """Read an inventory and locate it on the probability raster.

    Features outside the raster or only on nodata are dropped and counted;
    polygon pixels are made unique per class (a pixel in both a landslide and a
    non-landslide polygon counts as landslide).

    Raises:
        InputError: unreadable inventory, bad labels, or no usable feature left.
    """
    geoms, labels, notes = _read_features(path, params, info, what, log)
    n = len(geoms)
    feat_labels = labels if labels is not None else np.ones(n, dtype=np.int8)
    has_label = feat_labels >= 0
    dropped_label = int(np.sum(~has_label))
    if dropped_label:
        notes.append(f"{what}: {dropped_label} features without a label were dropped.")
    feats, rows, cols, kind = _feature_pixels(geoms, info, what)
    keep = has_label[feats]
    feats, rows, cols = feats[keep], rows[keep], cols[keep]
    lab = feat_labels[feats].astype(np.int8)
    if kind != "points" and feats.size:
        # Unique pixels per class; landslide wins over non-landslide.
        pid = rows * info.width + cols
        order = np.lexsort((-lab, pid))
        first = np.ones(order.size, dtype=bool)
        first[1:] = pid[order][1:] != pid[order][:-1]
        sel = order[first]
        feats, rows, cols, lab = feats[sel], rows[sel], cols[sel], lab[sel]
    values = read_pixels(src, rows, cols)
    ok = np.isfinite(values)
    located = np.unique(feats)
    valid_feats = np.unique(feats[ok])
    outside = int(np.sum(has_label)) - located.size
    nodata = located.size - valid_feats.size
    inv = Inventory(
        rows=rows[ok],
        cols=cols[ok],
        labels=lab[ok],
        values=values[ok],
        kind=kind,
        labelled=labels is not None,
        n_features=n,
        dropped_outside=outside,
        dropped_nodata=nodata,
        dropped_label=dropped_label,
        notes=notes,
    )
    if outside:
        notes.append(f"{what}: {outside} of {n} features lie outside the raster and were dropped.")
    if nodata:
        notes.append(f"{what}: {nodata} of {n} features lie on nodata and were dropped.")
    if valid_feats.size == 0:
        if located.size == 0:
            raise InputError(
                f"No feature of the {what} '{Path(path).name}' lies on the prediction raster: "
                "check that the inventory covers the same area and, for a CSV table, that its "
                "X/Y columns are in the raster's CRS."
            )
        raise InputError(
            f"Every feature of the {what} '{Path(path).name}' that lies on the prediction raster "
            "falls on nodata: use an inventory inside the area the map covers."
        )
    if inv.n_positive == 0:
        raise InputError(
            f"The {what} '{Path(path).name}' has no landslide (label 1) on valid pixels of the "
            "prediction raster: the evaluation needs landslides; check the LABEL_FIELD column."
        )
    unit = "points" if kind == "points" else "pixels"
    notes.append(
        f"{what}: {inv.n_positive} landslide and {inv.n_negative} non-landslide {unit} "
        f"on valid pixels ({valid_feats.size} of {n} features)."
    )
    return inv


def draw_negatives(
    src: rasterio.io.DatasetReader,
    info: RasterInfo,
    positives: Inventory,
    n: int,
    buffer: float,
    valid_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` distinct random valid pixels farther than ``buffer`` from any landslide.

    Rejection sampling of uniformly random pixels; only the drawn pixels are read.

    Returns:
        ``(rows, cols, values)``; fewer than ``n`` when the area is too small.
    """
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    pos = positives.labels == 1
    prow, pcol = positives.rows[pos], positives.cols[pos]
    px, py = apply_affine(info.transform, pcol + 0.5, prow + 0.5)
    tree = cKDTree(np.column_stack([px, py]))
    taken = set((prow * info.width + pcol).tolist())
    total = info.width * info.height
    chosen: list[np.ndarray] = []
    n_chosen = 0
    for _ in range(30):
        need = n - n_chosen
        if need <= 0:
            break
        m = int(min(total, max(64, math.ceil(2.0 * need / max(valid_fraction, 1e-6)))))
        m = min(m, 2_000_000)
        # Draw with replacement and keep first occurrences: O(m) memory, random order.
        cand = rng.integers(0, total, size=m, dtype=np.int64)
        cand = cand[np.sort(np.unique(cand, return_index=True)[1])]
        cand = cand[~np.isin(cand, np.fromiter(taken, dtype=np.int64, count=len(taken)))]
        rows, cols = cand // info.width, cand % info.width
        values = read_pixels(src, rows, cols)
        ok = np.isfinite(values)
        if buffer > 0 and ok.any():
            cx, cy = apply_affine(info.transform, cols[ok] + 0.5, rows[ok] + 0.5)
            dist, _ = tree.query(np.column_stack([cx, cy]), k=1)
            ok[np.flatnonzero(ok)[dist <= buffer]] = False
        cand = cand[ok][:need]
        chosen.append(cand)
        taken.update(cand.tolist())
        n_chosen += cand.size
        if m >= total:
            break
    picked = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    rows, cols = picked // info.width, picked % info.width
    return rows, cols, read_pixels(src, rows, cols)


# --------------------------------------------------------------------------- statistics


@dataclass
class RateCurve:
    """Cumulative landslide share against cumulative area share (both 0..100 %).

    Attributes:
        area_pct: Cumulative area, ranked by decreasing probability.
        landslide_pct: Cumulative landslides in that area.
        thresholds: Probability at each point (the area holds values >= it).
        auc: Area under the curve (0..1; 0.5 = no better than random).
        n_landslides: Landslide points or pixels used.
    """

    area_pct: np.ndarray
    landslide_pct: np.ndarray
    thresholds: np.ndarray
    auc: float
    n_landslides: int

    def landslides_in_top(self, area_pct: float) -> float:
        """Landslide share (%) in the most susceptible ``area_pct`` % of the area."""
        return float(np.interp(area_pct, self.area_pct, self.landslide_pct))


def rate_curve(
    area_counts: np.ndarray, edges: np.ndarray, landslide_values: np.ndarray
) -> RateCurve:
    """Success- or prediction-rate curve from the raster histogram.

    Pixels within one histogram bin are tied; the curve joins bin ends with
    straight lines (their random order), so a random map gives an AUC of 0.5.

    Args:
        area_counts: Pixel counts per bin of the whole raster.
        edges: Bin edges.
        landslide_values: Probability at each landslide point or pixel.
    """
    ls_counts = np.histogram(np.clip(landslide_values, edges[0], edges[-1]), bins=edges)[0]
    area = np.concatenate([[0], np.cumsum(area_counts[::-1])]).astype(np.float64)
    slides = np.concatenate([[0], np.cumsum(ls_counts[::-1])]).astype(np.float64)
    area /= max(area[-1], 1.0)
    slides /= max(slides[-1], 1.0)
    auc = float(np.sum(np.diff(area) * (slides[1:] + slides[:-1]) / 2))
    return RateCurve(area * 100, slides * 100, edges[::-1].copy(), auc, int(ls_counts.sum()))


def threshold_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """ROC-AUC and threshold metrics with scikit-learn.

    Args:
        y_true: 1 = landslide, 0 = not.
        scores: Probability of landslide.
        threshold: Scores >= threshold are predicted landslide.
    """
    from sklearn import metrics

    y_pred = (scores >= threshold).astype(np.int8)
    two_classes = len(np.unique(y_true)) == 2
    tn, fp, fn, tp = metrics.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {
        "roc_auc": float(metrics.roc_auc_score(y_true, scores)) if two_classes else float("nan"),
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "precision": float(metrics.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(metrics.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(metrics.f1_score(y_true, y_pred, zero_division=0)),
        "kappa": float(metrics.cohen_kappa_score(y_true, y_pred)),
        "threshold": float(threshold),
        "true_positive": int(tp),
        "false_positive": int(fp),
        "true_negative": int(tn),
        "false_negative": int(fn),
        "n_positive": int(np.sum(y_true == 1)),
        "n_negative": int(np.sum(y_true == 0)),
    }


def class_statistics(
    area_counts: np.ndarray, landslide_counts: np.ndarray, names: list[str]
) -> list[dict[str, Any]]:
    """Area share, landslide share and frequency ratio per class.

    Args:
        area_counts: Pixels per class (index 0 = class 1).
        landslide_counts: Landslide points or pixels per class.
        names: Class names.
    """
    area_total = max(int(area_counts.sum()), 1)
    ls_total = max(int(landslide_counts.sum()), 1)
    out = []
    for i, name in enumerate(names):
        a = int(area_counts[i]) / area_total
        s = int(landslide_counts[i]) / ls_total
        out.append(
            {
                "class": i + 1,
                "name": name,
                "pixels": int(area_counts[i]),
                "landslides": int(landslide_counts[i]),
                "area_share": a,
                "landslide_share": s,
                "frequency_ratio": s / a if a > 0 else float("nan"),
            }
        )
    return out


def _classed_counts(
    src: rasterio.io.DatasetReader,
    classed: rasterio.io.DatasetReader | None,
    breaks: np.ndarray | None,
    n_classes: int,
    progress: Callable[[float], None],
) -> np.ndarray:
    """Pixels per class (index 0 = class 1) over pixels valid in the probability raster."""
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
            cls = _class_values(cdata[0], n_classes, classed.name)
            valid &= cvalid
        counts += np.bincount(cls[valid].ravel(), minlength=n_classes + 1)[: n_classes + 1]
        progress((i + 1) / len(windows))
    return counts[1:]


def _class_values(values: np.ndarray, n_classes: int, source: str) -> np.ndarray:
    """Classes 1..n from a classed raster's values (0 and nodata: no class)."""
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


def _classed_max(src: rasterio.io.DatasetReader) -> int:
    """Highest class value in a classed raster (read by windows)."""
    top = 0.0
    for read, _, _ in iter_windows(src.width, src.height, 1024):
        data, valid = read_masked(src, read, indexes=1)
        if valid.any():
            top = max(top, float(np.nanmax(data[0][valid])))
    return math.ceil(top)


# --------------------------------------------------------------------------- report


def _plots(
    roc: tuple[np.ndarray, np.ndarray] | None,
    metrics: dict[str, Any],
    curves: dict[str, RateCurve],
    classes: list[dict[str, Any]],
) -> dict[str, bytes]:
    from slidewise.engine.core.report import figure_png, new_figure

    pngs: dict[str, bytes] = {}
    if roc is not None:
        fig = new_figure(5, 5)
        ax = fig.add_subplot()
        ax.plot(roc[0], roc[1], color="C0", label=f"ROC (AUC = {metrics['roc_auc']:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="random")
        ax.set(xlabel="False positive rate", ylabel="True positive rate", xlim=(0, 1), ylim=(0, 1))
        ax.set_aspect("equal")
        ax.legend(loc="lower right")
        pngs["roc"] = figure_png(fig)
    fig = new_figure(5.5, 5)
    ax = fig.add_subplot()
    # The success curve is drawn wide and pale so that an identical prediction curve shows.
    styles = {"success": ("C2", 4.0, 0.5), "prediction": ("C0", 1.5, 1.0)}
    for name, curve in curves.items():
        color, width, alpha = styles.get(name, ("C1", 1.5, 1.0))
        ax.plot(
            curve.area_pct,
            curve.landslide_pct,
            color=color,
            lw=width,
            alpha=alpha,
            label=f"{name.capitalize()} rate (AUC = {curve.auc:.3f})",
        )
    ax.plot([0, 100], [0, 100], color="grey", ls="--", lw=1, label="random")
    ax.set(
        xlabel="Cumulative area, by decreasing susceptibility (%)",
        ylabel="Cumulative landslides (%)",
        xlim=(0, 100),
        ylim=(0, 100),
    )
    ax.legend(loc="lower right")
    pngs["rates"] = figure_png(fig)
    fig = new_figure(6.5, 4)
    ax = fig.add_subplot()
    x = np.arange(len(classes))
    ax.bar(x - 0.2, [100 * c["area_share"] for c in classes], 0.4, label="Area share", color="C7")
    ax.bar(
        x + 0.2,
        [100 * c["landslide_share"] for c in classes],
        0.4,
        label="Landslide share",
        color="C3",
    )
    for xi, c in zip(x, classes, strict=True):
        fr = c["frequency_ratio"]
        top = 100 * max(c["area_share"], c["landslide_share"])
        ax.text(
            xi, top + 1, f"FR {fr:.2f}" if math.isfinite(fr) else "FR –", ha="center", fontsize=8
        )
    ax.set_xticks(x, [c["name"] for c in classes])
    ax.set(ylabel="Share (%)", xlabel="Susceptibility class")
    ax.legend()
    pngs["classes"] = figure_png(fig)
    return pngs


def build_report(figures: dict[str, Any], curves: dict[str, RateCurve], roc: Any) -> str:
    """The HTML report of an evaluation (see :func:`run_evaluate`)."""
    from slidewise.engine.core.report import Image, Section, Table, html_report

    m = figures["metrics"]
    pngs = _plots(roc, m, curves, figures["classes"])
    sections = [
        Section(
            "Inputs",
            text=figures["notes"],
            tables=[Table(["Item", "Value"], [[k, v] for k, v in figures["inputs"].items()])],
        ),
        Section(
            "Point metrics",
            text=[
                f"Validation samples: {m['n_positive']} landslide, {m['n_negative']} non-landslide "
                f"({figures['negatives']}). Predicted landslide where probability >= "
                f"{m['threshold']:g}."
            ],
            tables=[
                Table(
                    ["Metric", "Value"],
                    [
                        ["ROC-AUC", m["roc_auc"]],
                        ["Accuracy", m["accuracy"]],
                        ["Precision", m["precision"]],
                        ["Recall", m["recall"]],
                        ["F1", m["f1"]],
                        ["Cohen's kappa", m["kappa"]],
                    ],
                    caption="Metrics (scikit-learn)",
                ),
                Table(
                    ["", "Predicted landslide", "Predicted not landslide"],
                    [
                        ["Landslide", m["true_positive"], m["false_negative"]],
                        ["Not landslide", m["false_positive"], m["true_negative"]],
                    ],
                    caption="Confusion matrix",
                ),
            ],
            images=[Image(pngs["roc"], "ROC curve of the validation samples")]
            if "roc" in pngs
            else [],
        ),
    ]
    rows = []
    for name, curve in curves.items():
        rows.append(
            [
                f"{name.capitalize()} rate",
                curve.n_landslides,
                curve.auc,
                curve.landslides_in_top(10),
                curve.landslides_in_top(20),
            ]
        )
    sections.append(
        Section(
            "Success and prediction rates",
            text=[
                "Cumulative share of landslides against cumulative share of the area ranked by "
                "decreasing susceptibility; an area under the curve of 0.5 is no better than "
                "random."
            ],
            tables=[
                Table(
                    ["Curve", "Landslides", "AUC", "% landslides in top 10 % area", "in top 20 %"],
                    rows,
                )
            ],
            images=[Image(pngs["rates"], "Success- and prediction-rate curves")],
        )
    )
    classes = figures["classes"]
    sections.append(
        Section(
            "Susceptibility classes",
            text=[figures["classing"]],
            tables=[
                Table(
                    [
                        "Class",
                        "Name",
                        "Upper break",
                        "Pixels",
                        "Area share",
                        "Landslides",
                        "Landslide share",
                        "Frequency ratio",
                    ],
                    [
                        [
                            c["class"],
                            c["name"],
                            c.get("upper_break"),
                            c["pixels"],
                            c["area_share"],
                            c["landslides"],
                            c["landslide_share"],
                            c["frequency_ratio"],
                        ]
                        for c in classes
                    ],
                )
            ],
            images=[Image(pngs["classes"], "Area share and landslide share per class")],
        )
    )
    return html_report("Landslide susceptibility evaluation", sections, footer="Slidewise")


# --------------------------------------------------------------------------- job


def _thin(x: np.ndarray, y: np.ndarray, limit: int = 2000) -> tuple[list[float], list[float]]:
    if len(x) <= limit:
        return x.tolist(), y.tolist()
    idx = np.unique(np.linspace(0, len(x) - 1, limit).astype(int))
    return x[idx].tolist(), y[idx].tolist()


def run_evaluate(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Evaluate a landslide susceptibility (probability) map against an inventory.

    Parameters:
        INPUT (str, required): probability-of-landslide raster (band 1, values 0..1,
            nodata or NaN where there is no prediction).
        INVENTORY (str, required): validation inventory: points or polygons (GeoPackage,
            Shapefile, GeoJSON...) or a CSV/XLSX table with X/Y columns. With a label
            column, 1 = landslide and 0 = not landslide; without one, every feature is a
            landslide and non-landslide samples are drawn at random from the valid area
            outside BUFFER. Polygons contribute every pixel whose centre is inside.
        LABEL_FIELD (str, default "label"): label column, matched case-insensitively; with the
            default, the names lslpts, landslide, class and target are tried too, and no
            match means "all landslides". A LABEL_FIELD other than the default must exist.
        X_FIELD (str, default "x"): x (easting) column of a CSV/XLSX inventory, case-insensitive.
        Y_FIELD (str, default "y"): y (northing) column of a CSV/XLSX inventory. Table
            coordinates are taken to be in the raster's CRS; vector inventories in another
            CRS are reprojected.
        TRAINING (str, optional): training inventory (same formats, LABEL_FIELD, X_FIELD,
            Y_FIELD); its landslides give the success-rate curve.
        CLASSED (str, optional): classed susceptibility raster (classes 1..N, 0/nodata =
            none) on the grid of INPUT; used instead of computing class breaks.
        CLASSIFICATION (str, default "quantile"): class breaks when CLASSED is not
            given: "quantile", "natural_breaks" or "equal_interval".
        N_CLASSES (int, default 5): number of classes (5: very low ... very high).
        THRESHOLD (float, default 0.5): probability at or above which a sample is
            predicted a landslide (accuracy, precision, recall, F1, kappa).
        SEED (int, default: the run's seed): seed of random negatives and samples.
        NEGATIVE_RATIO (float, default 1.0): random non-landslide samples per landslide
            when the inventory has no non-landslides.
        BUFFER (float, default 3 pixel widths): minimum distance, in raster CRS units,
            of random non-landslide samples from any landslide.
        OUTPUT (str, required): HTML report path (.html); a JSON of all numbers and
            curves is written next to it with the suffix .json.

    Returns:
        Outputs OUTPUT (HTML) and JSON; figures: metrics, rate-curve AUCs, class table.
    """
    p = EvalParams.from_params(params, default_seed=ctx.options.seed)
    check_writable(p.output)
    json_path = Path(p.output).with_suffix(".json")
    check_writable(json_path)
    info = open_raster(p.input, "probability raster (INPUT)")
    if info.count > 1:
        ctx.warn(f"INPUT has {info.count} bands: band 1 is evaluated as the probability.")
    classed_info = None
    if p.classed:
        classed_info = open_raster(p.classed, "classed raster (CLASSED)")
        if not same_grid(info, classed_info):
            raise InputError(
                f"The classed raster '{Path(p.classed).name}' is not on the grid of INPUT "
                "(CRS, size and pixel size must match): classify INPUT itself or leave "
                "CLASSED empty to compute the classes here."
            )
    figures: dict[str, Any] = {}
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        ctx.log(message)

    with rasterio.open(p.input) as src:
        # Inventories first: bad inventories fail fast, before the raster passes.
        inv = load_inventory(p.inventory, src, info, p, "validation inventory", ctx.warn)
        for line in inv.notes:
            note(line[0].upper() + line[1:])
        training = None
        if p.training:
            training = load_inventory(p.training, src, info, p, "training inventory", ctx.warn)
            for line in training.notes:
                note(line[0].upper() + line[1:])
        ctx.progress(5)

        summary = probability_histogram(src, seed=p.seed, progress=ctx.stage(5, 45))
        if summary.n_valid == 0:
            raise InputError(
                f"The probability raster '{Path(p.input).name}' has no valid pixel: "
                "choose the prediction output."
            )
        if summary.vmin < -RANGE_TOLERANCE or summary.vmax > 1 + RANGE_TOLERANCE:
            raise InputError(
                f"The raster '{Path(p.input).name}' holds values from {summary.vmin:g} to "
                f"{summary.vmax:g}, not probabilities 0..1: use the probability output of "
                "the susceptibility prediction, or rescale it to 0..1."
            )
        note(
            f"Probability raster: {info.width} x {info.height} pixels, {summary.n_valid} valid "
            f"({100 * summary.n_valid / summary.n_pixels:.1f} %), values {summary.vmin:.4f} to "
            f"{summary.vmax:.4f}."
        )

        # Validation samples for the point metrics.
        y_true, scores = inv.labels.astype(np.int8), inv.values
        negatives = "from the inventory"
        if inv.n_negative == 0:
            n_neg = max(1, round(p.negative_ratio * inv.n_positive))
            buffer = p.buffer if p.buffer is not None else 3 * max(info.res)
            rows, _, vals = draw_negatives(
                src, info, inv, n_neg, buffer, summary.n_valid / summary.n_pixels, p.seed
            )
            if rows.size == 0:
                raise InputError(
                    "No non-landslide sample could be drawn: the valid area outside BUFFER "
                    f"({buffer:g} map units) around the landslides is empty. Lower BUFFER or "
                    "give an inventory with non-landslides (label 0)."
                )
            if rows.size < n_neg:
                ctx.warn(
                    f"Only {rows.size} of {n_neg} random non-landslide samples could be drawn."
                )
            negatives = (
                f"{rows.size} non-landslide samples drawn at random (seed {p.seed}) from the "
                f"valid area farther than {buffer:g} map units from any landslide"
            )
            note(negatives[0].upper() + negatives[1:] + ".")
            y_true = np.concatenate([y_true, np.zeros(rows.size, dtype=np.int8)])
            scores = np.concatenate([scores, vals])
        metrics = threshold_metrics(y_true, scores, p.threshold)
        ctx.progress(50)

        # Rate curves.
        curves: dict[str, RateCurve] = {}
        if training is not None:
            curves["success"] = rate_curve(
                summary.counts, summary.edges, training.values[training.labels == 1]
            )
        curves["prediction"] = rate_curve(
            summary.counts, summary.edges, inv.values[inv.labels == 1]
        )

        # Classes.
        from slidewise.engine.susceptibility.classify import apply_breaks, class_breaks, class_names

        pos = inv.labels == 1
        if classed_info is None:
            breaks = class_breaks(summary.sample, p.n_classes, p.classification, seed=p.seed)
            n_classes = p.n_classes
            area_counts = _classed_counts(src, None, breaks, n_classes, ctx.stage(50, 85))
            ls_classes = apply_breaks(inv.values[pos], breaks)
            exact = summary.sample.size == summary.n_valid
            classing = (
                f"{n_classes} classes by {p.classification.replace('_', ' ')} breaks of the "
                + (
                    "valid pixels."
                    if exact
                    else f"a random sample of {summary.sample.size} valid pixels."
                )
            )
        else:
            assert p.classed is not None
            with rasterio.open(p.classed) as csrc:
                top = _classed_max(csrc)
                n_classes = max(p.n_classes, top)
                if n_classes > 255:
                    raise InputError("The classed raster has classes above 255: give classes 1..N.")
                if top > p.n_classes:
                    ctx.warn(f"CLASSED has classes up to {top}: using {top} classes.")
                area_counts = _classed_counts(src, csrc, None, n_classes, ctx.stage(50, 85))
                cvals = read_pixels(csrc, inv.rows[pos], inv.cols[pos])
                ls_classes = _class_values(cvals, n_classes, p.classed)
                if np.any(ls_classes == 0):
                    note(f"{int(np.sum(ls_classes == 0))} landslides fall on unclassed pixels.")
            breaks = None
            classing = f"{n_classes} classes from the classed raster '{Path(p.classed).name}'."
        ls_counts = np.bincount(ls_classes[ls_classes > 0], minlength=n_classes + 1)[1:]
        classes = class_statistics(area_counts, ls_counts, class_names(n_classes))
        if breaks is not None:
            for c, upper in zip(classes, breaks[1:], strict=True):
                c["upper_break"] = float(upper)

    roc = None
    if math.isfinite(metrics["roc_auc"]):
        from sklearn.metrics import roc_curve

        fpr, tpr, _ = roc_curve(y_true, scores)
        roc = (fpr, tpr)

    figures = {
        "inputs": {
            "INPUT": p.input,
            "INVENTORY": p.inventory,
            "TRAINING": p.training,
            "CLASSED": p.classed,
            "inventory type": inv.kind,
            "validation features": inv.n_features,
            "dropped outside raster": inv.dropped_outside,
            "dropped on nodata": inv.dropped_nodata,
            "dropped without label": inv.dropped_label,
            "valid pixels": summary.n_valid,
            "seed": p.seed,
        },
        "notes": notes,
        "negatives": negatives,
        "metrics": metrics,
        "prediction_rate_auc": curves["prediction"].auc,
        "success_rate_auc": curves["success"].auc if "success" in curves else None,
        "classing": classing,
        "class_breaks": breaks.tolist() if breaks is not None else None,
        "classes": classes,
    }
    ctx.progress(88)
    document = build_report(figures, curves, roc)
    full = dict(figures)
    full["curves"] = {
        name: {
            "area_pct": c.area_pct.tolist(),
            "landslide_pct": c.landslide_pct.tolist(),
            "threshold": c.thresholds.tolist(),
            "auc": c.auc,
            "n_landslides": c.n_landslides,
            "landslides_in_top_10pct_area": c.landslides_in_top(10),
            "landslides_in_top_20pct_area": c.landslides_in_top(20),
        }
        for name, c in curves.items()
    }
    if roc is not None:
        x, y = _thin(roc[0], roc[1])
        full["roc_curve"] = {"fpr": x, "tpr": y}
    full["histogram"] = {"edges": summary.edges.tolist(), "counts": summary.counts.tolist()}

    from slidewise.engine.core.report import write_report

    write_report(p.output, document, full, json_path)
    for key in ("roc_auc", "accuracy", "precision", "recall", "f1", "kappa"):
        ctx.log(f"{key}: {metrics[key]:.4f}")
    for name, curve in curves.items():
        ctx.log(f"{name}-rate AUC: {curve.auc:.4f}")
    inputs = [p.input, p.inventory, *(x for x in (p.training, p.classed) if x)]
    result_figures = {
        **{k: metrics[k] for k in ("roc_auc", "accuracy", "precision", "recall", "f1", "kappa")},
        "threshold": p.threshold,
        "n_positive": metrics["n_positive"],
        "n_negative": metrics["n_negative"],
        "prediction_rate_auc": curves["prediction"].auc,
        "success_rate_auc": figures["success_rate_auc"],
        "classes": classes,
    }
    return JobResult(
        outputs={"OUTPUT": str(p.output), "JSON": str(json_path)},
        figures=result_figures,
        inputs=inputs,
    )
