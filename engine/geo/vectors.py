"""Vector input and output (points and polygons) with pyogrio and shapely.

Inventories arrive as vector files (GeoPackage, Shapefile, GeoJSON...) or as
CSV tables with coordinate columns; outputs are written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.outputs import atomic_output


@dataclass
class VectorData:
    """Geometries with their attributes.

    Attributes:
        geometries: shapely geometries (object array).
        fields: Attribute name -> values (arrays of equal length).
        crs: CRS as WKT or "EPSG:N" (``None`` when unknown).
        geometry_type: OGR geometry type name (``Point``, ``Polygon``, ...).
    """

    geometries: np.ndarray
    fields: dict[str, np.ndarray] = field(default_factory=dict)
    crs: str | None = None
    geometry_type: str = "Unknown"

    def __len__(self) -> int:
        return len(self.geometries)

    @property
    def is_points(self) -> bool:
        """True when every geometry is a point."""
        import shapely

        kinds = shapely.get_type_id(self.geometries)
        return bool(len(kinds) and np.all(kinds == 0))


def read_vector(
    path: str | os.PathLike[str], what: str = "vector layer", layer: str | int | None = None
) -> VectorData:
    """Read a vector file (any OGR format) into shapely geometries.

    Raises:
        InputError: missing file, unreadable file, or no features.
    """
    import pyogrio
    import shapely

    p = Path(path)
    if not str(path) or not p.exists():
        raise InputError(f"The {what} '{p}' does not exist: check the path.")
    try:
        meta, _, geometry, field_data = pyogrio.raw.read(str(p), layer=layer)
    except Exception as exc:
        raise InputError(
            f"The {what} '{p.name}' could not be read as a vector layer ({exc}): "
            "choose a GeoPackage, Shapefile or GeoJSON file."
        ) from None
    if geometry is None:
        raise InputError(f"The {what} '{p.name}' has no geometries: choose a layer with features.")
    geoms = shapely.from_wkb(geometry)
    keep = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    if not np.any(keep):
        raise InputError(f"The {what} '{p.name}' has no features: choose a non-empty layer.")
    fields = {
        str(name): np.asarray(values)[keep]
        for name, values in zip(meta["fields"], field_data, strict=True)
    }
    return VectorData(
        geometries=geoms[keep],
        fields=fields,
        crs=meta.get("crs"),
        geometry_type=str(meta.get("geometry_type", "Unknown")),
    )


def points_from_table(
    path: str | os.PathLike[str], x: str, y: str, crs: str | None = None
) -> VectorData:
    """Read points from a CSV table with coordinate columns ``x`` and ``y``."""
    import shapely

    from slidewise.engine.geo.tables import read_table

    table = read_table(path)
    for col in (x, y):
        if col not in table:
            raise InputError(
                f"The table '{Path(path).name}' has no column '{col}': "
                f"its columns are {', '.join(table)}."
            )
    xs = np.asarray(table[x], dtype=float)
    ys = np.asarray(table[y], dtype=float)
    geoms = shapely.points(xs, ys)
    fields = {k: v for k, v in table.items() if k not in (x, y)}
    return VectorData(geometries=geoms, fields=fields, crs=crs, geometry_type="Point")


def same_crs(a: str | None, b: Any) -> bool:
    """True when two CRS definitions (WKT, EPSG code, rasterio CRS) are equal."""
    from rasterio.crs import CRS

    if a is None or b is None:
        return True
    try:
        return bool(CRS.from_user_input(a) == CRS.from_user_input(b))
    except Exception:
        return False


def write_vector(
    path: str | os.PathLike[str],
    geometries: Sequence[Any] | np.ndarray,
    fields: dict[str, np.ndarray],
    crs: Any,
    geometry_type: str = "Polygon",
    layer: str | None = None,
) -> Path:
    """Write geometries and attributes atomically (driver from the extension).

    Args:
        path: ``.gpkg`` (recommended), ``.shp``, ``.geojson``...
        geometries: shapely geometries.
        fields: Attribute name -> values.
        crs: CRS (anything rasterio's CRS accepts; written as WKT).
        geometry_type: OGR geometry type (``Polygon``, ``MultiPolygon``, ``Point``).
        layer: Layer name (defaults to the file stem).
    """
    import pyogrio
    import shapely
    from rasterio.crs import CRS

    final = Path(path)
    drivers = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON"}
    driver = drivers.get(final.suffix.lower())
    if driver is None:
        raise InputError(f"Unsupported vector output '{final.name}': use .gpkg, .shp or .geojson.")
    wkb = np.array(shapely.to_wkb(np.asarray(geometries, dtype=object)), dtype=object)
    names = list(fields)
    values = [np.asarray(fields[n]) for n in names]
    crs_wkt = CRS.from_user_input(crs).to_wkt() if crs is not None else None
    with atomic_output(final) as tmp:
        pyogrio.raw.write(
            str(tmp),
            geometry=wkb,
            field_data=values,
            fields=names,
            geometry_type=geometry_type,
            crs=crs_wkt,
            driver=driver,
            layer=layer or final.stem,
            promote_to_multi=False,
        )
    return final


def reproject_geometries(
    geometries: np.ndarray | Sequence[Any], src_crs: Any, dst_crs: Any, what: str = "layer"
) -> np.ndarray:
    """Transform shapely geometries between CRS, with a clear error when PROJ refuses.

    Args:
        geometries: shapely geometries.
        src_crs: Their CRS (anything rasterio's CRS accepts).
        dst_crs: The target CRS.
        what: How messages name the layer (for example "inventory").

    Returns:
        The transformed geometries (object array); unchanged when the CRS are equal.

    Raises:
        InputError: a CRS cannot be read, or the coordinates cannot be transformed
            (typically a layer whose CRS is set wrongly).
    """
    import shapely
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom

    geoms = np.asarray(geometries, dtype=object)
    try:
        src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    except Exception as exc:
        raise InputError(f"The {what}'s CRS could not be read ({exc}): set a valid CRS.") from None
    if src == dst or len(geoms) == 0:
        return geoms
    try:
        mapped = transform_geom(src, dst, [shapely.geometry.mapping(g) for g in geoms])
    except Exception as exc:
        raise InputError(
            f"The {what} could not be transformed from its CRS ({src.to_string()}) to "
            f"{dst.to_string()}: {exc}. Its coordinates are probably outside the area of its "
            "CRS: check that the layer's CRS is set correctly."
        ) from None
    return np.asarray([shapely.geometry.shape(m) for m in mapped], dtype=object)


def polygons_in_crs(vector: VectorData, crs: Any, what: str, fix: str) -> np.ndarray:
    """The polygons of a layer in ``crs`` (reprojected when the layer's CRS differs).

    A layer or raster without a CRS is taken to share the other's (as
    :func:`same_crs` does).

    Args:
        vector: The layer.
        crs: The target CRS (usually the raster's).
        what: How messages name the layer (for example "AOI layer 'aoi.gpkg'").
        fix: What the user should do when the layer holds other geometries.

    Returns:
        The polygons and multipolygons (object array), in ``crs``.

    Raises:
        InputError: a geometry is not a polygon, or the layer cannot be reprojected.
    """
    import shapely

    geoms = np.asarray(vector.geometries, dtype=object)
    kinds = set(shapely.get_type_id(geoms).tolist())
    if not kinds <= {3, 6}:  # Polygon, MultiPolygon
        raise InputError(f"The {what} must hold polygons (it holds {vector.geometry_type}): {fix}.")
    if same_crs(vector.crs, crs):
        return geoms
    return reproject_geometries(geoms, vector.crs, crs, what=what)
