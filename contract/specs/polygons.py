"""Post-processing of landslide polygons, shared by Map landslides and Detect landslides.

Each default follows the raster's pixel size: left empty, an area is that of a
few pixels and the simplification tolerance is one pixel, so the same settings
suit a 0.5 m orthophoto and a 10 m Sentinel-2 scene. The job logs the values
it used in m² and map units. ``0`` switches a step off.
"""

from __future__ import annotations

from slidewise.contract.spec import Param

#: Pixels of the default minimum polygon area (MIN_AREA left empty).
DEFAULT_MIN_PIXELS = 16
#: Pixels of the default largest hole filled (MAX_HOLE_AREA left empty).
DEFAULT_HOLE_PIXELS = 32
#: Pixels of the default simplification tolerance (SIMPLIFY_TOLERANCE left empty).
DEFAULT_SIMPLIFY_PIXELS = 1.0
#: Largest opening or closing radius.
MAX_RADIUS = 50

#: Fields of the landslide polygons, in order (``mean_slope`` only with a DEM).
POLYGON_FIELDS = (
    "id",
    "area_m2",
    "perimeter_m",
    "compactness",
    "pixels",
    "mean_probability",
    "max_probability",
    "mean_slope",
)

MIN_AREA = Param(
    "MIN_AREA",
    "Minimum polygon area",
    "float",
    "Landslide polygons smaller than this (area_m2, after hole filling) are dropped (the mask "
    f"keeps every pixel); empty: the ground area of {DEFAULT_MIN_PIXELS} pixels "
    f"({DEFAULT_MIN_PIXELS} m² at 1 m pixels), stated in the log; 0 keeps every polygon.",
    minimum=0.0,
    unit="m²",
)
MAX_HOLE_AREA = Param(
    "MAX_HOLE_AREA",
    "Fill holes smaller than",
    "float",
    "Holes of a landslide polygon smaller than this are filled (and landslides inside them "
    f"join it); empty: the ground area of {DEFAULT_HOLE_PIXELS} pixels; 0 keeps every hole.",
    minimum=0.0,
    unit="m²",
    advanced=True,
)
OPENING_RADIUS = Param(
    "OPENING_RADIUS",
    "Opening radius",
    "int",
    "Morphological opening of the landslide pixels with a disc of this radius before the "
    "polygons are drawn: removes specks and threads narrower than about twice the radius "
    "(the mask output is not changed); 0: no opening.",
    default=1,
    minimum=0,
    maximum=MAX_RADIUS,
    unit="px",
    advanced=True,
)
CLOSING_RADIUS = Param(
    "CLOSING_RADIUS",
    "Closing radius",
    "int",
    "Morphological closing (after the opening) with a disc of this radius: joins parts "
    "separated by gaps narrower than about twice the radius and smooths notches; "
    "0: no closing.",
    default=1,
    minimum=0,
    maximum=MAX_RADIUS,
    unit="px",
    advanced=True,
)
SIMPLIFY_TOLERANCE = Param(
    "SIMPLIFY_TOLERANCE",
    "Simplification tolerance",
    "float",
    "Outlines are simplified (Douglas-Peucker, topology kept: polygons stay valid and never "
    "overlap) so that no point moves further than this; removes the pixel staircase. Empty: "
    "one pixel size; 0: pixel outlines.",
    minimum=0.0,
    unit="map units",
    advanced=True,
)
DEM = Param(
    "DEM",
    "DEM (for mean slope)",
    "raster",
    "Optional elevation raster (metres; any grid and CRS): each polygon gets mean_slope, the "
    "mean slope in degrees of the DEM cells under it (computed on the DEM's own grid).",
    advanced=True,
)

#: Post-processing of the polygons of Map landslides.
POLYGON_PARAMS: tuple[Param, ...] = (
    MIN_AREA,
    MAX_HOLE_AREA,
    OPENING_RADIUS,
    CLOSING_RADIUS,
    SIMPLIFY_TOLERANCE,
    DEM,
)

#: Post-processing of the landslide components boxed by Detect landslides (segmentation).
COMPONENT_PARAMS: tuple[Param, ...] = (
    Param(
        "MIN_AREA",
        "Minimum component area (segmentation)",
        "float",
        "Smallest landslide component (8-connected, after opening and closing) that becomes "
        f"a box; empty: the ground area of {DEFAULT_MIN_PIXELS} pixels, stated in the log; "
        "0 keeps every component.",
        minimum=0.0,
        unit="m²",
        advanced=True,
    ),
    OPENING_RADIUS,
    CLOSING_RADIUS,
)
