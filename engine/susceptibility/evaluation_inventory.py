"""Validation inventories of an evaluation, located on the probability raster.

An inventory is points or polygons (a vector file) or points from a CSV/XLSX
table with X/Y columns. With a label column, 1 = landslide and 0 = not
landslide; without one every feature is a landslide and non-landslide samples
are drawn at random (:func:`draw_negatives`). Polygons contribute every pixel
whose centre is inside (all touched pixels for polygons smaller than a pixel).
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
from slidewise.engine.geo.raster import RasterInfo
from slidewise.engine.geo.samples import apply_affine
from slidewise.engine.susceptibility.evaluation_rasters import read_pixels

LABEL_ALIASES = ("label", "lslpts", "landslide", "class", "target")
TRUE_WORDS = {"1", "1.0", "true", "t", "yes", "y"}
FALSE_WORDS = {"0", "0.0", "false", "f", "no", "n"}
#: shapely type ids of points and polygons (and their multi- forms).
POINT_TYPES = (0, 4)
USABLE_TYPES = (0, 3, 4, 6)
OTHER_TYPE_NAMES = {1: "LineString", 2: "LinearRing", 5: "MultiLineString", 7: "GeometryCollection"}

Features = tuple[np.ndarray, dict[str, np.ndarray], list[str]]


@dataclass(frozen=True)
class InventoryColumns:
    """Which columns of an inventory hold the label and the table coordinates.

    Attributes:
        label: Label column (case-insensitive).
        label_given: The user named ``label``: it must exist (otherwise the
            aliases of :data:`LABEL_ALIASES` are tried, and no match means
            "every feature is a landslide").
        x: x column of a CSV/XLSX table.
        y: y column of a CSV/XLSX table.
    """

    label: str = "label"
    label_given: bool = False
    x: str = "x"
    y: str = "y"


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


def find_label(fields: dict[str, np.ndarray], columns: InventoryColumns, source: str) -> str | None:
    """The label column of ``fields``; ``None`` when there is none (every feature a landslide).

    Raises:
        InputError: the label column the user named does not exist.
    """
    lower = {k.lower(): k for k in fields}
    if columns.label.lower() in lower:
        return lower[columns.label.lower()]
    if columns.label_given:
        raise InputError(
            f"The inventory '{source}' has no label column '{columns.label}': its columns are "
            f"{', '.join(fields) or '(none)'}. Give the right LABEL_FIELD, or leave "
            "LABEL_FIELD empty to treat every feature as a landslide."
        )
    for alias in LABEL_ALIASES:
        if alias in lower:
            return lower[alias]
    return None


def _table_points(
    path: Path, columns: InventoryColumns, what: str, log: Callable[[str], None]
) -> Features:
    """Points of a CSV/XLSX table, their other columns and a note."""
    import shapely

    from slidewise.engine.geo.tables import find_column, read_table

    table = read_table(path, warn=log)
    xcol = find_column(table, columns.x, path.name)
    ycol = find_column(table, columns.y, path.name)
    for col in (xcol, ycol):
        if table[col].dtype.kind != "f":
            raise InputError(
                f"The coordinate column '{col}' of '{path.name}' is not numeric: "
                "give the X and Y columns holding map coordinates."
            )
    geoms = shapely.points(table[xcol], table[ycol])
    fields = {k: v for k, v in table.items() if k not in (xcol, ycol)}
    note = (
        f"{what}: {len(geoms)} points from columns {xcol}/{ycol}, taken to be in the "
        "prediction raster's CRS."
    )
    return geoms, fields, [note]


def _vector_features(path: Path, info: RasterInfo, what: str) -> Features:
    """Geometries of a vector file in the raster's CRS, their fields and notes."""
    from slidewise.engine.geo.vectors import read_vector, same_crs

    vec = read_vector(path, what=what)
    geoms, fields, crs = vec.geometries, vec.fields, vec.crs
    notes: list[str] = []
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
    return geoms, fields, notes


def read_features(
    path: str,
    columns: InventoryColumns,
    info: RasterInfo,
    what: str,
    log: Callable[[str], None],
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read an inventory as shapely geometries in the raster CRS plus labels.

    Returns:
        ``(geometries, labels 1/0/-1 or None without a label column, notes)``.

    Raises:
        InputError: a missing file, bad coordinate or label columns.
    """
    from slidewise.engine.geo.tables import TABLE_SUFFIXES

    p = Path(path)
    if not p.exists():
        raise InputError(f"The {what} '{p}' does not exist: check the path.")
    if p.suffix.lower() in TABLE_SUFFIXES:
        geoms, fields, notes = _table_points(p, columns, what, log)
    else:
        geoms, fields, notes = _vector_features(p, info, what)
    label_col = find_label(fields, columns, p.name)
    labels = None
    if label_col is not None:
        labels = parse_labels(fields[label_col], label_col, p.name)
        notes.append(f"{what}: labels from column '{label_col}' (1 = landslide, 0 = not).")
    else:
        notes.append(
            f"{what}: no label column ({columns.label}, {', '.join(LABEL_ALIASES[1:])}): "
            "every feature is taken as a landslide."
        )
    return geoms, labels, notes


def _geometry_types(geoms: np.ndarray, what: str) -> np.ndarray:
    """shapely type id of each geometry.

    Raises:
        InputError: lines or collections.
    """
    import shapely

    type_ids = shapely.get_type_id(geoms)
    bad = ~np.isin(type_ids, USABLE_TYPES)
    if np.any(bad):
        kinds = sorted({shapely.get_type_id(g) for g in geoms[bad]})
        raise InputError(
            f"The {what} holds {', '.join(OTHER_TYPE_NAMES.get(k, str(k)) for k in kinds)} "
            "features: use points or polygons."
        )
    return type_ids


def _point_pixels(
    geoms: np.ndarray, is_point: np.ndarray, info: RasterInfo
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(feature_index, rows, cols)`` of the points inside the raster."""
    import shapely

    pts, index = shapely.get_parts(geoms[is_point], return_index=True)
    xy = shapely.get_coordinates(pts)
    fcol, frow = apply_affine(~info.transform, xy[:, 0], xy[:, 1])
    r, c = np.floor(frow).astype(np.int64), np.floor(fcol).astype(np.int64)
    inside = (r >= 0) & (r < info.height) & (c >= 0) & (c < info.width)
    return np.flatnonzero(is_point)[index][inside], r[inside], c[inside]


def _polygon_pixels(geom: Any, info: RasterInfo) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rows, cols)`` of the pixels whose centre is inside ``geom``; ``None`` outside."""
    from rasterio.features import geometry_mask
    from rasterio.windows import from_bounds

    win = from_bounds(*geom.bounds, transform=info.transform)
    c0 = max(0, math.floor(win.col_off))
    r0 = max(0, math.floor(win.row_off))
    c1 = min(info.width, math.ceil(win.col_off + win.width))
    r1 = min(info.height, math.ceil(win.row_off + win.height))
    if c1 <= c0 or r1 <= r0:
        return None
    win = Window(c0, r0, c1 - c0, r1 - r0)
    t = info.transform
    wt = Affine(t.a, t.b, t.c + t.a * c0 + t.b * r0, t.d, t.e, t.f + t.d * c0 + t.e * r0)
    shape = (int(win.height), int(win.width))
    inside = geometry_mask([geom], shape, wt, invert=True)
    if not inside.any():
        inside = geometry_mask([geom], shape, wt, invert=True, all_touched=True)
    r, c = np.nonzero(inside)
    return r + int(win.row_off), c + int(win.col_off)


def feature_pixels(
    geoms: np.ndarray, info: RasterInfo, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Pixels of each feature: ``(feature_index, rows, cols, kind)``.

    Points give their pixel (points outside give nothing); polygons give the
    pixels whose centre is inside (all touched pixels for polygons smaller than
    a pixel).

    Raises:
        InputError: lines or collections.
    """
    is_point = np.isin(_geometry_types(geoms, what), POINT_TYPES)
    feats, rows, cols = [], [], []
    if np.any(is_point):
        f, r, c = _point_pixels(geoms, is_point, info)
        feats.append(f)
        rows.append(r)
        cols.append(c)
    for i in np.flatnonzero(~is_point):
        found = _polygon_pixels(geoms[i], info)
        if found is None:
            continue  # outside the raster
        feats.append(np.full(found[0].size, i, dtype=np.int64))
        rows.append(found[0])
        cols.append(found[1])
    kind = "points" if is_point.all() else ("polygons" if not is_point.any() else "mixed")
    if not feats:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, kind
    return np.concatenate(feats), np.concatenate(rows), np.concatenate(cols), kind


def _unique_pixels(
    feats: np.ndarray, rows: np.ndarray, cols: np.ndarray, labels: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One sample per pixel and class; a pixel both landslide and not counts as landslide."""
    pid = rows * width + cols
    order = np.lexsort((-labels, pid))
    first = np.ones(order.size, dtype=bool)
    first[1:] = pid[order][1:] != pid[order][:-1]
    sel = order[first]
    return feats[sel], rows[sel], cols[sel], labels[sel]


def _check_usable(inv: Inventory, path: str, what: str, n_located: int, n_valid: int) -> None:
    """Note the dropped features, refuse an unusable inventory and note what is left.

    Raises:
        InputError: no feature on valid pixels, or no landslide among them.
    """
    n = inv.n_features
    if inv.dropped_outside:
        inv.notes.append(
            f"{what}: {inv.dropped_outside} of {n} features lie outside the raster and were "
            "dropped."
        )
    if inv.dropped_nodata:
        inv.notes.append(
            f"{what}: {inv.dropped_nodata} of {n} features lie on nodata and were dropped."
        )
    name = Path(path).name
    if n_valid == 0 and n_located == 0:
        raise InputError(
            f"No feature of the {what} '{name}' lies on the prediction raster: "
            "check that the inventory covers the same area and, for a CSV table, that its "
            "X/Y columns are in the raster's CRS."
        )
    if n_valid == 0:
        raise InputError(
            f"Every feature of the {what} '{name}' that lies on the prediction raster "
            "falls on nodata: use an inventory inside the area the map covers."
        )
    if inv.n_positive == 0:
        raise InputError(
            f"The {what} '{name}' has no landslide (label 1) on valid pixels of the "
            "prediction raster: the evaluation needs landslides; check the LABEL_FIELD column."
        )
    unit = "points" if inv.kind == "points" else "pixels"
    inv.notes.append(
        f"{what}: {inv.n_positive} landslide and {inv.n_negative} non-landslide {unit} "
        f"on valid pixels ({n_valid} of {n} features)."
    )


def load_inventory(
    path: str,
    src: rasterio.io.DatasetReader,
    info: RasterInfo,
    columns: InventoryColumns,
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
    geoms, labels, notes = read_features(path, columns, info, what, log)
    n = len(geoms)
    feat_labels = labels if labels is not None else np.ones(n, dtype=np.int8)
    has_label = feat_labels >= 0
    dropped_label = int(np.sum(~has_label))
    if dropped_label:
        notes.append(f"{what}: {dropped_label} features without a label were dropped.")
    feats, rows, cols, kind = feature_pixels(geoms, info, what)
    keep = has_label[feats]
    feats, rows, cols = feats[keep], rows[keep], cols[keep]
    lab = feat_labels[feats].astype(np.int8)
    if kind != "points" and feats.size:
        feats, rows, cols, lab = _unique_pixels(feats, rows, cols, lab, info.width)
    values = read_pixels(src, rows, cols)
    ok = np.isfinite(values)
    located = np.unique(feats)
    valid_feats = np.unique(feats[ok])
    inv = Inventory(
        rows=rows[ok],
        cols=cols[ok],
        labels=lab[ok],
        values=values[ok],
        kind=kind,
        labelled=labels is not None,
        n_features=n,
        dropped_outside=int(np.sum(has_label)) - located.size,
        dropped_nodata=located.size - valid_feats.size,
        dropped_label=dropped_label,
        notes=notes,
    )
    _check_usable(inv, path, what, located.size, valid_feats.size)
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
