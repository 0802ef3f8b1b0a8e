"""Training samples: factor values at landslides and at non-landslide places.

* The factor stack is one multi-band raster or a list of rasters
  (:func:`open_factor_stack`); rasters on another grid are refused (naming the
  one that differs) unless aligning is asked for (:mod:`slidewise.engine.geo.align`).
* Landslides are points or polygons (a vector file) or points from a CSV/XLSX
  table with coordinate columns (:func:`read_inventory`). Inventories in another
  CRS are reprojected to the stack's CRS; features outside the stack or on
  nodata are dropped with a warning that counts them.
* Polygons give every pixel whose centre lies inside, or a fixed number of
  them drawn at random (a polygon smaller than a pixel gives its centroid pixel).
* Non-landslide samples come from the user (a vector or table) or are drawn at
  random among valid pixels farther than a buffer from every landslide
  (:func:`draw_negatives`).
* :class:`FeatureEncoder` turns raw factor values into model inputs: categorical
  factors one-hot encoded (a class unseen in training gives an all-zero one-hot
  and a warning that counts the pixels per class), continuous factors
  standardised with the mean and standard deviation of the training samples.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import Warn
from slidewise.engine.geo.align import AlignedStack, FactorSource
from slidewise.engine.geo.raster import open_raster

TABLE_SUFFIXES = (".csv", ".txt", ".xlsx", ".xlsm")


def _quiet(message: str) -> None:
    pass


# --- factor stack ------------------------------------------------------------------


def factor_sources(
    input_path: str | None = None,
    factors: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
) -> list[FactorSource]:
    """Factor sources from a multi-band raster (``INPUT``) or single rasters (``FACTORS``).

    Band names are the band descriptions (else the file stem, ``<stem>_b<N>`` for
    extra bands); ``categorical`` names factors read with nearest-neighbour
    resampling and one-hot encoded.

    Raises:
        InputError: neither or both inputs given, or a categorical name that is no band.
    """
    paths: list[str] = []
    if input_path and factors:
        raise InputError("Give either INPUT (one multi-band raster) or FACTORS (a list), not both.")
    if input_path:
        paths = [str(input_path)]
    elif factors:
        paths = [str(f) for f in factors]
    else:
        raise InputError(
            "No factor rasters were given: set INPUT to a multi-band raster or FACTORS "
            "to a list of rasters."
        )
    sources: list[FactorSource] = []
    seen: set[str] = set()
    for path in paths:
        info = open_raster(path, what="factor raster")
        stem = Path(path).stem
        for band in range(1, info.count + 1):
            desc = info.descriptions[band - 1]
            if len(paths) == 1:
                name = desc or f"band_{band}"
            else:
                name = desc or (stem if band == 1 else f"{stem}_b{band}")
            if name in seen:
                name = f"{stem}_{name}"
            if name in seen:
                raise InputError(
                    f"Two factor bands are both called '{name}': give the rasters "
                    "distinct names or band descriptions."
                )
            seen.add(name)
            sources.append(FactorSource(path, band=band, name=name))
    unknown = [c for c in categorical if c not in seen]
    if unknown:
        raise InputError(
            f"CATEGORICAL names {', '.join(unknown)}, which is not a factor band: "
            f"the bands are {', '.join(s.name or '' for s in sources)}."
        )
    cats = set(categorical)
    return [
        FactorSource(s.path, band=s.band, name=s.name, kind="categorical") if s.name in cats else s
        for s in sources
    ]


def open_factor_stack(
    input_path: str | None = None,
    factors: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    align: bool = False,
) -> AlignedStack:
    """The factor stack as an (unopened) :class:`AlignedStack`; use it with ``with``.

    Args:
        input_path: One multi-band raster.
        factors: Or a list of rasters (the first gives the grid).
        categorical: Names of categorical factors.
        align: Align rasters on other grids to the first one (else refuse them).
    """
    return AlignedStack(factor_sources(input_path, factors, categorical), align=align)


def apply_affine(t: Any, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply an affine transform to coordinate arrays (``(col, row) -> (x, y)`` or inverse)."""
    return t.a * a + t.b * b + t.c, t.d * a + t.e * b + t.f


def pixel_of(stack: AlignedStack, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the pixels holding map coordinates (may be outside the grid)."""
    cols, rows = apply_affine(
        ~stack.transform, np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    )
    return np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)


def pixel_centres(
    stack: AlignedStack, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates of pixel centres."""
    xs, ys = apply_affine(stack.transform, np.asarray(cols) + 0.5, np.asarray(rows) + 0.5)
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def sample_pixels(
    stack: AlignedStack, rows: np.ndarray, cols: np.ndarray, block: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Factor values at pixels, reading only the windows that hold them.

    Args:
        stack: An open stack.
        rows: Pixel rows (must be inside the grid).
        cols: Pixel columns.
        block: Window side used for reading.

    Returns:
        ``(values (n, bands) float32 with NaN on nodata, valid (n,) bool)``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    values = np.full((rows.size, stack.count), np.nan, dtype=np.float32)
    valid = np.zeros(rows.size, dtype=bool)
    if rows.size == 0:
        return values, valid
    key = (rows // block) * (stack.width // block + 1) + cols // block
    for k in np.unique(key):
        sel = np.flatnonzero(key == k)
        r0, c0 = int(rows[sel[0]] // block * block), int(cols[sel[0]] // block * block)
        from rasterio.windows import Window

        win = Window(c0, r0, min(block, stack.width - c0), min(block, stack.height - r0))
        data, ok = stack.read(win)
        rr, cc = rows[sel] - r0, cols[sel] - c0
        values[sel] = data[:, rr, cc].T
        valid[sel] = ok[rr, cc]
    return values, valid


# --- inventories -------------------------------------------------------------------


@dataclass
class Inventory:
    """Landslide (or non-landslide) features in the stack's CRS.

    Attributes:
        geometries: shapely points or polygons.
        labels: Label per feature (1 landslide, 0 not) or ``None`` (all landslides).
        source: File name, for messages.
    """

    geometries: np.ndarray
    labels: np.ndarray | None = None
    source: str = ""

    @property
    def is_points(self) -> bool:
        """True when every geometry is a point."""
        import shapely

        return bool(np.all(shapely.get_type_id(self.geometries) == 0))


def read_inventory(
    path: str | os.PathLike[str],
    stack_crs: Any,
    x_field: str = "x",
    y_field: str = "y",
    label_field: str = "",
    table_crs: str = "",
    what: str = "inventory",
    warn: Warn = _quiet,
) -> Inventory:
    """Read points or polygons and bring them into the stack's CRS.

    Args:
        path: Vector file (points or polygons) or CSV/XLSX table with coordinates.
        stack_crs: CRS of the factor stack.
        x_field: Table column of the x coordinate (case-insensitive).
        y_field: Table column of the y coordinate.
        label_field: Optional field/column holding 1 (landslide) / 0 (not).
        table_crs: CRS of table coordinates (default: the stack's CRS).
        what: How messages name this input.
        warn: Receives warnings.

    Raises:
        InputError: unreadable input, bad label values, or no CRS to reproject from.
    """
    import shapely

    from slidewise.engine.geo.tables import find_column, read_table
    from slidewise.engine.geo.vectors import read_vector, same_crs

    p = Path(path)
    labels = None
    if p.suffix.lower() in TABLE_SUFFIXES:
        table = read_table(p, warn=warn)
        xc, yc = find_column(table, x_field, p.name), find_column(table, y_field, p.name)
        try:
            xs, ys = table[xc].astype(float), table[yc].astype(float)
        except ValueError:
            raise InputError(
                f"The coordinate columns '{xc}'/'{yc}' of '{p.name}' are not numbers."
            ) from None
        geoms = shapely.points(xs, ys)
        crs: Any = table_crs or None
        fields = table
    else:
        vec = read_vector(p, what=what)
        geoms, crs, fields = vec.geometries, vec.crs, vec.fields
        kinds = set(shapely.get_type_id(geoms).tolist())
        if not kinds <= {0, 3, 4, 6}:
            raise InputError(
                f"The {what} '{p.name}' holds lines or other geometries: use points or polygons."
            )
        if 4 in kinds:  # multipoints -> points
            geoms = shapely.get_parts(geoms)
    if label_field:
        col = find_column(fields, label_field, p.name)
        try:
            lab = np.asarray(fields[col], dtype=float)
        except ValueError:
            raise InputError(f"The label field '{col}' of '{p.name}' is not numeric.") from None
        if not np.all(np.isin(lab, (0, 1))):
            raise InputError(
                f"The label field '{col}' of '{p.name}' must hold 1 (landslide) or 0 "
                f"(not landslide); it holds {sorted(set(np.unique(lab).tolist()) - {0, 1})[:5]}."
            )
        labels = lab.astype(np.int64)
    if crs is None:
        if stack_crs is not None and p.suffix.lower() not in TABLE_SUFFIXES:
            warn(f"The {what} '{p.name}' has no CRS: assuming the CRS of the factor stack.")
    elif stack_crs is not None and not same_crs(crs, stack_crs):
        geoms = _reproject(geoms, crs, stack_crs)
    return Inventory(geometries=np.asarray(geoms, dtype=object), labels=labels, source=p.name)


def _reproject(geoms: np.ndarray, src_crs: Any, dst_crs: Any) -> np.ndarray:
    from slidewise.engine.geo.vectors import reproject_geometries

    return reproject_geometries(geoms, src_crs, dst_crs, what="inventory")


@dataclass
class SampleSet:
    """Samples with their factor values.

    Attributes:
        values: Raw factor values (n, bands) float32.
        labels: 1 landslide, 0 not (n,).
        rows: Pixel rows.
        cols: Pixel columns.
        xs: Map x of the pixel centres.
        ys: Map y of the pixel centres.
        origin: ``inventory``, ``negatives`` or ``random`` per sample.
        bands: Factor names.
        counts: What was kept and dropped (for figures and logs).
    """

    values: np.ndarray
    labels: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    origin: np.ndarray
    bands: list[str]
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.size)

    def subset(self, keep: np.ndarray) -> SampleSet:
        """The samples selected by a mask or index array."""
        return SampleSet(
            self.values[keep],
            self.labels[keep],
            self.rows[keep],
            self.cols[keep],
            self.xs[keep],
            self.ys[keep],
            self.origin[keep],
            self.bands,
            dict(self.counts),
        )


def inventory_pixels(
    stack: AlignedStack,
    inventory: Inventory,
    per_polygon: int = 0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of inventory features (points: the pixel; polygons: pixels inside).

    Returns:
        ``(rows, cols, feature index)``; features outside the grid give nothing.
    """
    import shapely
    from rasterio import features as rfeatures
    from rasterio.windows import Window, from_bounds
    from rasterio.windows import transform as window_transform

    geoms = inventory.geometries
    kinds = shapely.get_type_id(geoms)
    rows_out, cols_out, idx_out = [], [], []
    pts = np.flatnonzero(kinds == 0)
    if pts.size:
        r, c = pixel_of(stack, shapely.get_x(geoms[pts]), shapely.get_y(geoms[pts]))
        rows_out.append(r)
        cols_out.append(c)
        idx_out.append(pts)
    rng = np.random.default_rng(seed)
    for i in np.flatnonzero(kinds != 0):
        g = geoms[i]
        win = from_bounds(*g.bounds, transform=stack.transform)
        r0 = max(0, int(np.floor(win.row_off)))
        c0 = max(0, int(np.floor(win.col_off)))
        r1 = min(stack.height, int(np.ceil(win.row_off + win.height)) + 1)
        c1 = min(stack.width, int(np.ceil(win.col_off + win.width)) + 1)
        rr = cc = np.zeros(0, dtype=np.int64)
        if r1 > r0 and c1 > c0:
            w = Window(c0, r0, c1 - c0, r1 - r0)
            mask = rfeatures.rasterize(
                [(g, 1)],
                out_shape=(r1 - r0, c1 - c0),
                transform=window_transform(w, stack.transform),
                fill=0,
                dtype="uint8",
            ).astype(bool)
            rr, cc = np.nonzero(mask)
            rr, cc = rr + r0, cc + c0
        if rr.size == 0:  # smaller than a pixel: the centroid's pixel
            ctr = g.centroid
            rr, cc = pixel_of(stack, np.array([ctr.x]), np.array([ctr.y]))
        if per_polygon > 0 and rr.size > per_polygon:
            pick = rng.choice(rr.size, per_polygon, replace=False)
            rr, cc = rr[pick], cc[pick]
        rows_out.append(rr)
        cols_out.append(cc)
        idx_out.append(np.full(rr.size, i))
    rows = np.concatenate(rows_out) if rows_out else np.zeros(0, dtype=np.int64)
    cols = np.concatenate(cols_out) if cols_out else np.zeros(0, dtype=np.int64)
    idx = np.concatenate(idx_out) if idx_out else np.zeros(0, dtype=np.int64)
    inside = (rows >= 0) & (rows < stack.height) & (cols >= 0) & (cols < stack.width)
    return rows[inside], cols[inside], idx[inside]


def sample_inventory(
    stack: AlignedStack,
    inventory: Inventory,
    origin: str,
    default_label: int = 1,
    per_polygon: int = 0,
    seed: int = 0,
    warn: Warn = _quiet,
) -> SampleSet:
    """Factor values at the pixels of an inventory (duplicates within a pixel merged).

    Raises:
        InputError: every feature is outside the stack or on nodata.
    """
    n_feat = len(inventory.geometries)
    rows, cols, idx = inventory_pixels(stack, inventory, per_polygon, seed)
    outside = n_feat - np.unique(idx).size
    if idx.size == 0:
        (left, right), (top, bottom) = apply_affine(
            stack.transform, np.array([0.0, stack.width]), np.array([0.0, stack.height])
        )
        raise InputError(
            f"All {n_feat} features of '{inventory.source}' lie outside the factor stack "
            f"(x {min(left, right):.6g} to {max(left, right):.6g}, y {min(top, bottom):.6g} "
            f"to {max(top, bottom):.6g}): check that the inventory covers the same area and "
            "that its CRS is set correctly."
        )
    if outside:
        warn(
            f"{outside} of {n_feat} features of '{inventory.source}' lie outside the factor "
            "stack and were skipped."
        )
    labels = (
        inventory.labels[idx] if inventory.labels is not None else np.full(idx.size, default_label)
    )
    # One sample per pixel and label.
    key = np.stack([rows, cols, labels], axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    first = np.sort(first)
    merged = int(rows.size - first.size)
    if merged:
        warn(
            f"{merged} of {rows.size} samples of '{inventory.source}' fall on a pixel already "
            "sampled with the same label and were merged (one sample per pixel and label): "
            "those features are closer together than the factor stack's pixel size."
        )
    rows, cols, labels = rows[first], cols[first], labels[first]
    values, valid = sample_pixels(stack, rows, cols)
    if not valid.any():
        raise InputError(
            f"Every feature of '{inventory.source}' falls on nodata in the factor stack: "
            "check the factor rasters' nodata and the inventory's location."
        )
    if (~valid).any():
        warn(
            f"{int((~valid).sum())} samples of '{inventory.source}' fall on nodata "
            "and were skipped."
        )
    xs, ys = pixel_centres(stack, rows, cols)
    keep = valid
    return SampleSet(
        values[keep],
        labels[keep].astype(np.int64),
        rows[keep],
        cols[keep],
        xs[keep],
        ys[keep],
        np.full(int(keep.sum()), origin),
        stack.names,
        {
            f"{origin}_outside": int(outside),
            f"{origin}_nodata": int((~valid).sum()),
            f"{origin}_merged": merged,
        },
    )


def draw_negatives(
    stack: AlignedStack,
    landslides: np.ndarray,
    n: int,
    buffer: float,
    seed: int = 0,
    exclude: set[tuple[int, int]] | None = None,
    max_rounds: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Random valid pixels farther than ``buffer`` (map units) from every landslide.

    Candidates are drawn uniformly over the grid and rejected when nodata, within
    the buffer (shapely STRtree ``dwithin`` on the landslide geometries) or
    already used; memory does not grow with the raster size.

    Returns:
        ``(rows, cols)`` of at most ``n`` distinct pixels.
    """
    import shapely

    rng = np.random.default_rng(seed)
    tree = shapely.STRtree(landslides)
    taken: set[tuple[int, int]] = set(exclude or set())
    rows_out: list[int] = []
    cols_out: list[int] = []
    for _ in range(max_rounds):
        need = n - len(rows_out)
        if need <= 0:
            break
        m = max(64, 4 * need)
        r = rng.integers(0, stack.height, m)
        c = rng.integers(0, stack.width, m)
        xs, ys = pixel_centres(stack, r, c)
        near = tree.query(shapely.points(xs, ys), predicate="dwithin", distance=buffer)[0]
        ok = np.ones(m, dtype=bool)
        ok[near] = False
        r, c = r[ok], c[ok]
        _, valid = sample_pixels(stack, r, c)
        for rr, cc in zip(r[valid].tolist(), c[valid].tolist(), strict=False):
            if (rr, cc) not in taken and len(rows_out) < n:
                taken.add((rr, cc))
                rows_out.append(rr)
                cols_out.append(cc)
    return np.asarray(rows_out, dtype=np.int64), np.asarray(cols_out, dtype=np.int64)


@dataclass
class SamplingOptions:
    """How samples are collected (the sampling parameters of the jobs).

    Attributes:
        inventory: INVENTORY path.
        negatives: NEGATIVES path (optional).
        negative_ratio: NEGATIVE_RATIO: random non-landslides per landslide.
        buffer: BUFFER in map units (``None``: 2 pixels).
        per_polygon: PER_POLYGON: pixels per polygon (0 = all inside).
        x_field: X_FIELD of tables.
        y_field: Y_FIELD of tables.
        label_field: LABEL_FIELD (optional).
        inventory_crs: INVENTORY_CRS of tables (default: the stack's CRS).
        seed: SEED.
    """

    inventory: str
    negatives: str = ""
    negative_ratio: float = 1.0
    buffer: float | None = None
    per_polygon: int = 0
    x_field: str = "x"
    y_field: str = "y"
    label_field: str = ""
    inventory_crs: str = ""
    seed: int = 0


def collect_samples(
    stack: AlignedStack, options: SamplingOptions, warn: Warn = _quiet
) -> SampleSet:
    """Landslide and non-landslide samples with factor values (stack must be open).

    Non-landslides are, in order of precedence: the NEGATIVES layer, the 0 labels of
    LABEL_FIELD, or random pixels outside the buffer (NEGATIVE_RATIO per landslide).

    Raises:
        InputError: no landslides, or no non-landslide sample could be found.
    """
    inv = read_inventory(
        options.inventory,
        stack.crs,
        options.x_field,
        options.y_field,
        options.label_field,
        options.inventory_crs,
        warn=warn,
    )
    pos = sample_inventory(stack, inv, "inventory", 1, options.per_polygon, options.seed, warn)
    if not np.any(pos.labels == 1):
        raise InputError(
            f"The inventory '{inv.source}' has no landslide (label 1) inside the factor stack: "
            "a susceptibility model needs landslides."
        )
    parts = [pos]
    if options.negatives:
        parts.append(given_negatives(stack, options, warn))
    elif not np.any(pos.labels == 0) and options.negative_ratio > 0:
        parts.append(random_negatives(stack, inv, pos, options, warn))
    merged = merge_samples(parts, stack.names)
    if not np.any(merged.labels == 0):
        raise InputError(
            "There are no non-landslide samples: give NEGATIVES, a LABEL_FIELD with 0 values, "
            "or a NEGATIVE_RATIO above 0."
        )
    merged.counts.update(
        landslides=int(np.sum(merged.labels == 1)), non_landslides=int(np.sum(merged.labels == 0))
    )
    return merged


def given_negatives(stack: AlignedStack, options: SamplingOptions, warn: Warn) -> SampleSet:
    """Samples of the NEGATIVES layer (label 0)."""
    neg_inv = read_inventory(
        options.negatives,
        stack.crs,
        options.x_field,
        options.y_field,
        "",
        options.inventory_crs,
        what="non-landslide layer",
        warn=warn,
    )
    return sample_inventory(stack, neg_inv, "negatives", 0, options.per_polygon, options.seed, warn)


def random_negatives(
    stack: AlignedStack,
    inv: Inventory,
    pos: SampleSet,
    options: SamplingOptions,
    warn: Warn,
) -> SampleSet:
    """NEGATIVE_RATIO random non-landslides per landslide, outside the buffer.

    Raises:
        InputError: no valid pixel lies outside the buffer.
    """
    n = round(options.negative_ratio * int(np.sum(pos.labels == 1)))
    buffer = (
        options.buffer
        if options.buffer is not None
        else 2.0 * max(abs(stack.transform.a), abs(stack.transform.e))
    )
    slides = inv.geometries if inv.labels is None else inv.geometries[inv.labels == 1]
    exclude = set(zip(pos.rows.tolist(), pos.cols.tolist(), strict=False))
    rows, cols = draw_negatives(stack, slides, n, buffer, options.seed, exclude)
    if rows.size == 0:
        raise InputError(
            f"No valid pixel lies farther than BUFFER={buffer:g} map units from the "
            "landslides: use a smaller BUFFER or give NEGATIVES."
        )
    if rows.size < n:
        warn(
            f"Only {rows.size} of {n} random non-landslide samples could be drawn "
            "outside the buffer."
        )
    values, _ = sample_pixels(stack, rows, cols)
    xs, ys = pixel_centres(stack, rows, cols)
    return SampleSet(
        values,
        np.zeros(rows.size, dtype=np.int64),
        rows,
        cols,
        xs,
        ys,
        np.full(rows.size, "random"),
        stack.names,
        {"random": int(rows.size)},
    )


def merge_samples(parts: Sequence[SampleSet], bands: list[str]) -> SampleSet:
    """One sample set of several (counts merged)."""
    return SampleSet(
        np.concatenate([p.values for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.rows for p in parts]),
        np.concatenate([p.cols for p in parts]),
        np.concatenate([p.xs for p in parts]),
        np.concatenate([p.ys for p in parts]),
        np.concatenate([p.origin for p in parts]),
        bands,
        {k: v for p in parts for k, v in p.counts.items()},
    )


# --- features ----------------------------------------------------------------------


@dataclass
class FeatureEncoder:
    """Raw factor values -> model features (one-hot categories, standardised values).

    Attributes:
        bands: Factor names, in stack order.
        categorical: Categorical factor -> its classes seen in training (sorted).
        mean: Mean per continuous factor (training samples).
        std: Standard deviation per continuous factor (1 where constant).
    """

    bands: list[str]
    categorical: dict[str, list[float]] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, values: np.ndarray, bands: list[str], categorical: Sequence[str] = ()
    ) -> FeatureEncoder:
        """Fit on raw training values (n, bands) without NaN."""
        values = np.asarray(values, dtype=np.float64)
        cats: dict[str, list[float]] = {}
        mean: dict[str, float] = {}
        std: dict[str, float] = {}
        for j, name in enumerate(bands):
            col = values[:, j]
            if name in categorical:
                cats[name] = [float(v) for v in np.unique(col)]
            else:
                mean[name] = float(col.mean())
                s = float(col.std())
                std[name] = s if s > 0 else 1.0
        return cls(list(bands), cats, mean, std)

    @property
    def columns(self) -> list[str]:
        """Feature names (``<factor>=<class>`` for one-hot columns)."""
        out: list[str] = []
        for name in self.bands:
            if name in self.categorical:
                out += [f"{name}={_fmt(v)}" for v in self.categorical[name]]
            else:
                out.append(name)
        return out

    @property
    def groups(self) -> list[list[int]]:
        """Feature columns per factor."""
        out, j = [], 0
        for name in self.bands:
            width = len(self.categorical[name]) if name in self.categorical else 1
            out.append(list(range(j, j + width)))
            j += width
        return out

    def transform(self, values: np.ndarray, warn: Warn | None = None) -> np.ndarray:
        """Encode raw values (n, bands) into features (n, d) float32.

        Unseen classes of a categorical factor give all-zero one-hot columns; when
        ``warn`` is given it receives one message with the count per unseen class.
        """
        values = np.asarray(values, dtype=np.float64)
        cols: list[np.ndarray] = []
        for j, name in enumerate(self.bands):
            col = values[:, j]
            if name in self.categorical:
                classes = np.asarray(self.categorical[name])
                hot = col[:, None] == classes[None, :]
                cols.append(hot.astype(np.float32))
                unseen = ~hot.any(axis=1) & np.isfinite(col)
                if warn is not None and unseen.any():
                    vals, counts = np.unique(col[unseen], return_counts=True)
                    listed = ", ".join(
                        f"{_fmt(v)}: {c}" for v, c in zip(vals, counts, strict=False)
                    )
                    warn(
                        f"Factor '{name}' has classes not seen in training ({listed} pixels); "
                        "they were given no class (all-zero one-hot)."
                    )
            else:
                cols.append(((col - self.mean[name]) / self.std[name]).astype(np.float32)[:, None])
        return np.concatenate(cols, axis=1) if cols else np.zeros((values.shape[0], 0), np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (stored as the model's normalisation)."""
        return {
            "bands": self.bands,
            "categorical": self.categorical,
            "mean": self.mean,
            "std": self.std,
            "columns": self.columns,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FeatureEncoder:
        """Inverse of :meth:`to_dict`."""
        return cls(
            list(doc["bands"]),
            {k: [float(v) for v in vs] for k, vs in doc.get("categorical", {}).items()},
            {k: float(v) for k, v in doc.get("mean", {}).items()},
            {k: float(v) for k, v in doc.get("std", {}).items()},
        )


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"
