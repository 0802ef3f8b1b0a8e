"""slidewise:terrainfactors: slope, aspect, curvatures, hillshade and TWI from a DEM."""

from __future__ import annotations

from slidewise.contract.spec import AlgorithmSpec, Param
from slidewise.contract.specs.groups import BLOCK_SIZE, COG

GEOGRAPHIC_CHOICES = ("refuse", "degrees_to_metres")

SPEC = AlgorithmSpec(
    "terrainfactors",
    (
        Param(
            "INPUT",
            "DEM",
            "raster",
            "Digital elevation model (band 1 is used), in a projected CRS.",
            required=True,
        ),
        Param(
            "Z_FACTOR",
            "Z factor",
            "float",
            "Multiplier that converts elevation units to the CRS's horizontal units.",
            default=1.0,
            minimum=1e-9,
            maximum=1e9,
            advanced=True,
        ),
        Param(
            "AZIMUTH",
            "Hillshade light azimuth",
            "float",
            "Direction of the light for the hillshade band, clockwise from north.",
            default=315.0,
            minimum=0.0,
            maximum=360.0,
            unit="degrees",
            advanced=True,
        ),
        Param(
            "ALTITUDE",
            "Hillshade light altitude",
            "float",
            "Height of the light above the horizon for the hillshade band.",
            default=45.0,
            minimum=0.0,
            maximum=90.0,
            unit="degrees",
            advanced=True,
        ),
        Param(
            "GEOGRAPHIC",
            "DEM in a geographic CRS",
            "choice",
            "What to do with a DEM in degrees: refuse (reproject it first, recommended) or "
            "convert degrees to metres row by row from the latitude.",
            default="refuse",
            choices=GEOGRAPHIC_CHOICES,
            choice_labels=("Refuse it (reproject the DEM first)", "Convert degrees to metres"),
            advanced=True,
        ),
        BLOCK_SIZE,
        Param(
            "OUTPUT",
            "Terrain factors",
            "output_raster",
            "Multi-band GeoTIFF: slope, aspect, aspect_sin, aspect_cos, plan_curvature, "
            "profile_curvature, hillshade, twi.",
            required=True,
        ),
        COG,
    ),
)
