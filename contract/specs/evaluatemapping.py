"""slidewise:evaluatemapping: pixel and object figures of a landslide map."""

from __future__ import annotations

from slidewise.contract.spec import AlgorithmSpec, Param

REFERENCE_KINDS = ("mask", "points")

SPEC = AlgorithmSpec(
    "evaluatemapping",
    (
        Param(
            "INPUT",
            "Landslide map",
            "raster",
            "Probability raster from Map landslides, or a 0/1 mask; nodata pixels are skipped.",
            required=True,
        ),
        Param(
            "REFERENCE",
            "Reference labels",
            "file",
            "Reference label raster (any grid: aligned with nearest neighbour), or landslide "
            "polygons (vector file).",
            required=True,
        ),
        Param(
            "REFERENCE_KIND",
            "Reference kind",
            "choice",
            "Complete landslide outlines (a mask or polygons: pixel scores), or small "
            "labelled blobs around inventory points (hit and false-alarm rates).",
            default="mask",
            choices=REFERENCE_KINDS,
            choice_labels=("Complete outlines (mask or polygons)", "Points (blobs around points)"),
        ),
        Param(
            "THRESHOLD",
            "Threshold",
            "float",
            "Map values at or above it count as landslide; empty: for a probability raster "
            "from Map landslides, the threshold its mask and polygons were cut at (read from "
            "the run manifest beside it), else 0.5.",
            minimum=0.0,
            maximum=1.0,
        ),
        Param(
            "LANDSLIDE_VALUES",
            "Landslide values",
            "text",
            "Reference raster values meaning landslide, comma-separated (e.g. 2).",
            default="1",
        ),
        Param(
            "IGNORE_VALUES",
            "Ignored values",
            "text",
            "Reference raster values not evaluated (e.g. 0 for unlabelled).",
        ),
        Param(
            "OUTPUT",
            "Figures (JSON)",
            "output_file",
            "All figures as JSON.",
            required=True,
            file_filter="JSON (*.json)",
        ),
        Param(
            "OUTPUT_HTML",
            "Report (HTML)",
            "output_file",
            "The same figures as an HTML report.",
            file_filter="HTML (*.html)",
            create_by_default=False,
        ),
    ),
)
