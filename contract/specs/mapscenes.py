"""slidewise:mapscenes: map many scenes into one landslide inventory (batch Map landslides)."""

from __future__ import annotations

from slidewise.contract.spec import AlgorithmSpec, Param
from slidewise.contract.specs.maplandslides import SPEC as MAP_SPEC

#: Parameters of Map landslides that every scene is mapped with (declared there, once).
MAPPING_NAMES = (
    "MODEL",
    "THRESHOLD",
    "THRESHOLD_RULE",
    "REGION",
    "MIN_AREA",
    "MAX_HOLE_AREA",
    "OPENING_RADIUS",
    "CLOSING_RADIUS",
    "SIMPLIFY_TOLERANCE",
    "DEM",
    "BANDS",
    "TILE_SIZE",
    "OVERLAP",
    "BATCH_SIZE",
    "TTA",
    "BACKEND",
    "WORKERS",
    "SCHEDULER",
)
#: Mapping parameters that choose where the windows are computed, not what a scene's
#: polygons are: they are not in a scene's key (changing them skips the scenes done).
PLACEMENT_NAMES = ("WORKERS", "SCHEDULER")
#: Where the scenes come from; exactly one is given.
SOURCE_NAMES = ("SCENE_FOLDER", "SCENE_LIST", "FOOTPRINTS")
#: The PostGIS copy, made by the Processing algorithm in QGIS after the job (never the engine).
POSTGIS_NAMES = ("POSTGIS", "POSTGIS_SCHEMA", "POSTGIS_TABLE")
#: Default name of the inventory's layer.
INVENTORY_LAYER = "landslide_inventory"

SPEC = AlgorithmSpec(
    "mapscenes",
    (
        Param(
            "SCENE_FOLDER",
            "Folder of scenes",
            "folder",
            "Every raster in this folder (.tif, .tiff, .vrt, .jp2, .img; not its sub-folders) is "
            "a scene, mapped in name order. Give this, a scene list or footprints.",
        ),
        Param(
            "SCENE_LIST",
            "Scene list",
            "file",
            "A text file with one raster path per line, or a CSV table with a header holding "
            "the path field and, optionally, the region and date fields named below. Relative "
            "paths are relative to the list's folder.",
            file_filter="Scene list (*.txt *.csv)",
        ),
        Param(
            "FOOTPRINTS",
            "Scene footprints",
            "polygons",
            "A layer with one feature per scene whose attributes give the raster path and, "
            "optionally, its region and acquisition date (fields named below).",
        ),
        Param(
            "PATH_FIELD",
            "Path field",
            "field",
            "Field (or CSV column) holding each scene's raster path.",
            default="path",
            parent="FOOTPRINTS",
        ),
        Param(
            "SCENE_REGION_FIELD",
            "Region field",
            "field",
            "Field (or CSV column) holding each scene's region; with a multi-region model a "
            "scene whose region is one of the model's is mapped by that region's decoder "
            "(others by REGION). Missing field: no region.",
            default="region",
            parent="FOOTPRINTS",
        ),
        Param(
            "DATE_FIELD",
            "Date field",
            "field",
            "Field (or CSV column) holding each scene's acquisition date (ISO 8601, "
            "e.g. 2024-07-31). Missing field: no date.",
            default="date",
            parent="FOOTPRINTS",
        ),
        *(MAP_SPEC[name] for name in MAPPING_NAMES),
        Param(
            "INVENTORY_CRS",
            "Inventory CRS",
            "text",
            "Coordinate reference system of the inventory (EPSG:32648, a WKT or PROJ string); "
            "scenes in other CRSs are reprojected to it. Empty: the existing inventory's, else "
            "the first scene's.",
            advanced=True,
        ),
        Param(
            "POSTGIS",
            "PostGIS connection",
            "connection",
            "A PostgreSQL connection saved in QGIS (Browser > PostgreSQL > New Connection; "
            "in qgis_process its name), or a connection string for scripts "
            "(host=... port=... dbname=... user=..., or service=...). After the run, QGIS "
            "copies the inventory's polygon layer into this database, replacing the table "
            "there in one step; the GeoPackage INVENTORY stays the record of what was "
            "mapped. The connection is checked before any scene is mapped. Empty: "
            "GeoPackage only.",
            advanced=True,
            provider="postgres",
        ),
        Param(
            "POSTGIS_SCHEMA",
            "PostGIS schema",
            "schema",
            "Schema of the PostGIS table (it must exist, and the connection's user must be "
            "allowed to create tables in it).",
            default="public",
            advanced=True,
            parent="POSTGIS",
        ),
        Param(
            "POSTGIS_TABLE",
            "PostGIS table",
            "text",
            "Name of the PostGIS table the inventory is copied to. Empty: the inventory "
            "layer name.",
            advanced=True,
        ),
        Param(
            "INVENTORY_LAYER",
            "Inventory layer name",
            "text",
            "Name of the inventory's polygon layer in the GeoPackage (and, unless "
            "POSTGIS_TABLE is given, of the PostGIS table).",
            default=INVENTORY_LAYER,
            advanced=True,
        ),
        Param(
            "OUTPUT_FOLDER",
            "Folder of scene outputs",
            "output_folder",
            "Each scene's probability (<scene>_probability.tif, float32 0-1) and polygons "
            "(<scene>_polygons.gpkg) are written here.",
            required=True,
        ),
        Param(
            "INVENTORY",
            "Landslide inventory",
            "output_vector",
            "GeoPackage of the landslide polygons of every scene, merged where scenes "
            "overlap, with scene, date_first, date_last, region, decoder, model, model_sha256, "
            "mean_probability, max_probability, area_m2, perimeter_m, compactness (and "
            "mean_slope with a DEM); its table 'mapped_scenes' records the scenes done. An "
            "existing inventory is added to: scenes already in it with the same parameters "
            "are skipped.",
            required=True,
            kept_on_stop=True,
        ),
        MAP_SPEC["COG"],
    ),
    in_qgis=frozenset(POSTGIS_NAMES),
)
