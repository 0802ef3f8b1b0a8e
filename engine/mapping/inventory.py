"""One landslide inventory for many scenes: polygons merged across overlapping scenes.

The inventory is a GeoPackage with two layers: the landslide polygons (one
feature per landslide, in the inventory's CRS) and the table
:data:`SCENES_TABLE`, one row per scene mapped into it (its key, path, size,
modification time, parameter hash...). Both are rewritten together into a
partial file that replaces the inventory in one rename (:func:`atomic_output`),
so a scene is in the inventory with all its polygons and its row, or not at all:
a kill or a cancel between or during scenes leaves the last committed state.

A new scene's polygons are reprojected to the inventory's CRS. A polygon that
overlaps polygons already in the inventory (overlap of positive area) is merged
with them: the union of the geometries, the scenes, regions, decoders and models
listed once each, the earliest and latest date, the largest mean and maximum
probability, the area, perimeter and compactness of the union and the
area-weighted mean slope. The inventory's polygons therefore never overlap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.outputs import atomic_output

#: The table of the scenes mapped into the inventory.
SCENES_TABLE = "mapped_scenes"
#: Separator of the lists held in one text attribute (scenes, regions...).
LIST_SEPARATOR = ";"
#: Text attributes of an inventory polygon (lists for merged polygons).
TEXT_FIELDS = ("scene", "date_first", "date_last", "region", "decoder", "model", "model_sha256")
#: Number attributes of an inventory polygon.
NUMBER_FIELDS = (
    "scene_count",
    "mean_probability",
    "max_probability",
    "area_m2",
    "perimeter_m",
    "compactness",
    "mean_slope",
)
#: Every attribute of an inventory polygon, in order.
INVENTORY_FIELDS = TEXT_FIELDS + NUMBER_FIELDS
#: Text and integer columns of the scenes table.
RECORD_TEXT = ("key", "scene", "path", "params_hash", "date", "region", "finished")
RECORD_COUNTS = ("size", "mtime_ns", "polygons", "merged")
#: Smallest overlap (square map units) that merges two polygons; touching is not overlapping.
MIN_OVERLAP = 1e-9


@dataclass(frozen=True)
class SceneRecord:
    """One scene in the inventory's table :data:`SCENES_TABLE`.

    Attributes:
        key: The scene's key (path, size, modification time and parameter hash).
        scene: The scene's name (file stem, made unique in the run).
        path: The raster's path.
        size: Its size in bytes.
        mtime_ns: Its modification time (ns since the epoch).
        params_hash: Hash of the mapping parameters and the model file.
        date: Acquisition date (ISO 8601) or ``""``.
        region: Region or ``""``.
        polygons: Landslide polygons the scene gave.
        merged: Of them, those merged with polygons already in the inventory.
        finished: When the scene was committed (UTC, ISO 8601).
    """

    key: str
    scene: str
    path: str
    size: int
    mtime_ns: int
    params_hash: str
    date: str = ""
    region: str = ""
    polygons: int = 0
    merged: int = 0
    finished: str = ""


@dataclass(frozen=True)
class SceneTags:
    """The attributes every polygon of one scene gets in the inventory.

    Attributes:
        scene: Scene name.
        date: Acquisition date (ISO 8601) or ``""``.
        region: Region or ``""``.
        decoder: Decoder that mapped it (region decoder, else the architecture).
        model: Model file name.
        model_sha256: First 12 hex digits of the model file's SHA-256.
    """

    scene: str
    date: str
    region: str
    decoder: str
    model: str
    model_sha256: str


@dataclass
class Inventory:
    """The inventory in memory: polygons, their attributes and the scenes mapped.

    Attributes:
        path: The GeoPackage.
        layer: Name of its polygon layer.
        crs: The inventory's CRS (WKT; ``None`` until the first scene sets it).
        geometries: Polygons and multipolygons (object array).
        attributes: Field name -> values (:data:`INVENTORY_FIELDS`).
        scenes: The scenes mapped into it, in order.
    """

    path: Path
    layer: str
    crs: str | None = None
    geometries: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    scenes: list[SceneRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in INVENTORY_FIELDS:
            if name not in self.attributes:
                dtype = object if name in TEXT_FIELDS else np.float64
                self.attributes[name] = np.empty(0, dtype=dtype)

    def __len__(self) -> int:
        return len(self.geometries)

    @property
    def done(self) -> set[str]:
        """Keys of the scenes already in the inventory."""
        return {r.key for r in self.scenes}

    def add_scene(
        self, geometries: np.ndarray, values: dict[str, np.ndarray], crs: Any, tags: SceneTags
    ) -> int:
        """Add one scene's polygons (in ``crs``), merged with overlapping ones.

        Args:
            geometries: The scene's landslide polygons.
            values: Their attributes (Map landslides' polygon fields).
            crs: Their CRS.
            tags: Scene, date, region, decoder and model of every polygon.

        Returns:
            How many of the new polygons were merged with polygons already there.
        """
        from slidewise.engine.geo.polygons import polygon_measures
        from slidewise.engine.geo.vectors import reproject_geometries, same_crs

        target = self.crs or crs_wkt(crs)
        geoms = polygonal(reproject_geometries(geometries, crs, target, what=f"scene {tags.scene}"))
        old = len(self.geometries)
        every = np.concatenate([self.geometries, geoms])
        new_values = _scene_attributes(values, tags, len(geoms))
        if not same_crs(crs, target) and len(geoms):  # measured again where they now lie
            area, perimeter = polygon_measures(list(geoms), target)
            new_values.update(
                area_m2=area, perimeter_m=perimeter, compactness=_compactness(area, perimeter)
            )
        table = {k: np.concatenate([self.attributes[k], new_values[k]]) for k in INVENTORY_FIELDS}
        groups = [g for g in overlap_groups(self.geometries, geoms) if len(g) > 1]
        merged = [merge_features(every, table, g, target) for g in groups]
        gone = np.asarray(sorted({i for g in groups for i in g}), dtype=int)
        keep = np.setdiff1d(np.arange(len(every)), gone)
        self.geometries = np.concatenate([every[keep], _objects([g for g, _ in merged])])
        self.attributes = {
            k: np.concatenate(
                [table[k][keep], np.asarray([a[k] for _, a in merged], dtype=table[k].dtype)]
            )
            for k in INVENTORY_FIELDS
        }
        self.crs = target  # changed last: a scene refused above leaves the inventory as it was
        return sum(1 for g in groups for i in g if i >= old)

    def record(self, scene: SceneRecord) -> None:
        """Add the row of a scene (after :meth:`add_scene`; written by :meth:`commit`)."""
        self.scenes = [r for r in self.scenes if r.key != scene.key] + [scene]

    def commit(self) -> None:
        """Write the polygons and the scenes table into the GeoPackage in one rename."""
        import pyogrio
        import shapely

        geoms = shapely.to_wkb(np.asarray(self.geometries, dtype=object)) if len(self) else []
        names = list(INVENTORY_FIELDS)
        columns = [_column(self.attributes[n], n) for n in names]
        rows = [asdict(r) for r in self.scenes]
        table_names = [f.name for f in fields(SceneRecord)]
        table = [_column(np.asarray([r[n] for r in rows]), n) for n in table_names]
        with atomic_output(self.path) as tmp:
            pyogrio.raw.write(
                str(tmp),
                geometry=np.asarray(geoms, dtype=object),
                field_data=columns,
                fields=names,
                geometry_type="MultiPolygon",
                crs=self.crs,
                driver="GPKG",
                layer=self.layer,
                promote_to_multi=True,
            )
            pyogrio.raw.write(
                str(tmp),
                geometry=None,
                field_data=table,
                fields=table_names,
                geometry_type=None,
                driver="GPKG",
                layer=SCENES_TABLE,
            )


def polygonal(geometries: np.ndarray) -> np.ndarray:
    """Valid polygons and multipolygons (the polygon parts of what ``make_valid`` returns)."""
    import shapely

    fixed = shapely.make_valid(np.asarray(geometries, dtype=object))
    out = []
    for geom in fixed:
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            parts = [
                p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")
            ]
            geom = shapely.union_all(parts) if parts else shapely.Polygon()
        out.append(geom)
    return _objects(out)


def _objects(items: list[Any]) -> np.ndarray:
    """A 1-D object array of geometries."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _column(values: np.ndarray, name: str) -> np.ndarray:
    """A column ready for OGR: text as objects, counts as integers, numbers as floats."""
    if name in TEXT_FIELDS or name in RECORD_TEXT:
        return np.asarray(["" if v is None else str(v) for v in values], dtype=object)
    if name in RECORD_COUNTS or name == "scene_count":
        return np.asarray(values, dtype=np.int64)
    return np.asarray(values, dtype=np.float64)


def crs_wkt(crs: Any) -> str:
    """A CRS (EPSG code, WKT, PROJ string, rasterio CRS) as WKT.

    Raises:
        InputError: the CRS cannot be read.
    """
    from rasterio.crs import CRS

    try:
        return str(CRS.from_user_input(crs).to_wkt())
    except Exception as exc:
        raise InputError(
            f"The CRS '{crs}' could not be read ({exc}): give an EPSG code such as EPSG:32648."
        ) from None


def open_inventory(path: str, layer: str, crs: str | None) -> Inventory:
    """The inventory at ``path`` (empty when the file does not exist yet).

    Args:
        path: The GeoPackage.
        layer: Its polygon layer.
        crs: INVENTORY_CRS (``None``: the existing inventory's, else the first scene's).

    Raises:
        InputError: not a GeoPackage, a file that is not a Slidewise inventory, or a
            CRS other than the existing inventory's.
    """
    import pyogrio

    p = Path(path)
    if p.suffix.lower() != ".gpkg":
        raise InputError(
            f"The inventory '{p.name}' must be a GeoPackage (.gpkg): choose a .gpkg file."
        )
    wanted = crs_wkt(crs) if crs else None
    if not p.exists():
        return Inventory(p, layer, wanted)
    try:
        layers = {str(name) for name, _ in pyogrio.list_layers(p)}
        if layer not in layers or SCENES_TABLE not in layers:
            raise ValueError(f"it has no layers '{layer}' and '{SCENES_TABLE}'")
        meta, _, wkb, values = pyogrio.raw.read(str(p), layer=layer)
        _, _, _, rows = pyogrio.raw.read(str(p), layer=SCENES_TABLE)
        table_meta = pyogrio.read_info(str(p), layer=SCENES_TABLE)
    except Exception as exc:
        raise InputError(
            f"'{p.name}' is not an inventory written by Map scenes ({exc}): choose a new "
            "file name for INVENTORY, or the INVENTORY_LAYER it was written with."
        ) from None
    return _loaded(p, layer, wanted, (meta, wkb, values), (table_meta, rows))


def _loaded(
    path: Path, layer: str, wanted: str | None, polygons: tuple[Any, ...], table: tuple[Any, ...]
) -> Inventory:
    import shapely
    from rasterio.crs import CRS

    meta, wkb, values = polygons
    existing = crs_wkt(meta["crs"]) if meta.get("crs") else None
    if wanted and existing and CRS.from_wkt(wanted) != CRS.from_wkt(existing):
        raise InputError(
            f"INVENTORY_CRS differs from the CRS of the existing inventory '{path.name}': "
            "leave INVENTORY_CRS empty, or write a new inventory."
        )
    found = dict(zip([str(n) for n in meta["fields"]], values, strict=True))
    missing = [n for n in INVENTORY_FIELDS if n not in found]
    if missing:
        raise InputError(
            f"'{path.name}' is not an inventory written by Map scenes (no field "
            f"{', '.join(missing)}): choose a new file name for INVENTORY."
        )
    geoms = shapely.from_wkb(wkb) if wkb is not None else np.empty(0, dtype=object)
    attributes = {n: _column(np.asarray(found[n]), n) for n in INVENTORY_FIELDS}
    table_meta, rows = table
    columns = dict(zip([str(n) for n in table_meta["fields"]], rows, strict=True))
    names = [f.name for f in fields(SceneRecord)]
    typed = {n: _column(np.asarray(columns[n]), n).tolist() for n in names}
    records = [
        SceneRecord(**{n: typed[n][i] for n in names}) for i in range(int(table_meta["features"]))
    ]
    return Inventory(
        path, layer, existing or wanted, np.asarray(geoms, dtype=object), attributes, records
    )


def overlap_groups(old: np.ndarray, new: np.ndarray) -> list[list[int]]:
    """Groups of polygons joined by overlaps between new and old polygons.

    Indexes count the old polygons first, then the new ones. Old polygons do not
    overlap each other, and neither do the new ones (one scene's polygons are
    disjoint), so only new-old overlaps join; a chain (new - old - new) is one group.
    Every new polygon is in exactly one group (alone when it overlaps nothing).
    """
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_old, n_new = len(old), len(new)
    if n_new == 0:
        return []
    pairs = np.empty((2, 0), dtype=int)
    if n_old:
        pairs = shapely.STRtree(old).query(new, predicate="intersects")
        if pairs.shape[1]:
            area = shapely.area(shapely.intersection(new[pairs[0]], old[pairs[1]]))
            pairs = pairs[:, area > MIN_OVERLAP]
    size = n_old + n_new
    graph = coo_matrix((np.ones(pairs.shape[1]), (pairs[0] + n_old, pairs[1])), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for index in range(size):
        groups.setdefault(int(labels[index]), []).append(index)
    return [g for g in groups.values() if g[-1] >= n_old]


def merge_features(
    geometries: np.ndarray, table: dict[str, np.ndarray], group: list[int], crs: str | None
) -> tuple[Any, dict[str, Any]]:
    """One polygon from overlapping ones: their union and their merged attributes."""
    import shapely

    from slidewise.engine.geo.polygons import polygon_measures

    union = shapely.make_valid(shapely.union_all(geometries[group]))
    area, perimeter = polygon_measures([union], crs)
    parts = {k: table[k][group] for k in INVENTORY_FIELDS}
    dates = sorted(d for k in ("date_first", "date_last") for d in parts[k] if d)
    weights = np.asarray(parts["area_m2"], dtype=float)
    slopes = np.asarray(parts["mean_slope"], dtype=float)
    has_slope = np.isfinite(slopes) & (weights > 0)
    merged: dict[str, Any] = {k: _joined(parts[k]) for k in TEXT_FIELDS}
    scenes = merged["scene"].split(LIST_SEPARATOR) if merged["scene"] else []
    merged.update(
        date_first=dates[0] if dates else "",
        date_last=dates[-1] if dates else "",
        scene_count=len(scenes),
        mean_probability=float(np.nanmax(parts["mean_probability"].astype(float))),
        max_probability=float(np.nanmax(parts["max_probability"].astype(float))),
        area_m2=float(area[0]),
        perimeter_m=float(perimeter[0]),
        compactness=float(_compactness(area[0], perimeter[0])),
        mean_slope=float(np.average(slopes[has_slope], weights=weights[has_slope]))
        if has_slope.any()
        else np.nan,
    )
    return union, merged


def _joined(values: np.ndarray) -> str:
    """Each item of ``;``-separated lists once, in order of first appearance."""
    seen: dict[str, None] = {}
    for value in values:
        for item in str(value).split(LIST_SEPARATOR):
            if item:
                seen.setdefault(item, None)
    return LIST_SEPARATOR.join(seen)


def _compactness(area: Any, perimeter: Any) -> Any:
    """Polsby-Popper compactness 4·pi·area/perimeter² (as Map landslides computes it)."""
    a, p = np.asarray(area, dtype=float), np.asarray(perimeter, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p > 0, 4 * np.pi * a / p**2, 0.0)


def _scene_attributes(
    values: dict[str, np.ndarray], tags: SceneTags, n: int
) -> dict[str, np.ndarray]:
    """The inventory attributes of one scene's ``n`` polygons."""
    text = {
        "scene": tags.scene,
        "date_first": tags.date,
        "date_last": tags.date,
        "region": tags.region,
        "decoder": tags.decoder,
        "model": tags.model,
        "model_sha256": tags.model_sha256,
    }
    out = {k: np.full(n, v, dtype=object) for k, v in text.items()}
    out["scene_count"] = np.ones(n)
    for name in NUMBER_FIELDS[1:]:
        out[name] = np.asarray(values.get(name, np.full(n, np.nan)), dtype=np.float64)
    return out
