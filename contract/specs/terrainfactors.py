"""slidewise:terrainfactors: slope, aspect, curvatures, hillshade and TWI from a DEM."""

from __future__ import annotations

from slidewise.contract.spec import AlgorithmSpec, Param, replace_param
from slidewise.contract.specs.groups import BLOCK_SIZE, COG, SCALE_OUT

GEOGRAPHIC_CHOICES = ("refuse", "degrees_to_metres")

#: WORKERS and SCHEDULER, saying what the workers compute and what stays in the job.
TERRAIN_SCALE_OUT = replace_param(
    SCALE_OUT,
    "WORKERS",
    help="Worker processes of a local Dask cluster that compute the blocks in parallel (one "
    "thread each): slope, aspect, curvatures, hillshade and the TWI of each block. The TWI's "
    "flow routing needs the whole DEM: one worker computes it while the others compute the "
    "blocks (in the job's process instead with one worker, or when no worker has the memory, "
    "about 32 bytes per DEM pixel). The job's process writes the blocks in order, so the "
    "output equals a one-process run. 1: no cluster.",
)

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
        *TERRAIN_SCALE_OUT,
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
