"""slidewise:maplandslides: probability, mask and polygons from a mapping model."""

from __future__ import annotations

from slidewise.contract.spec import AlgorithmSpec, Param
from slidewise.contract.specs.groups import COG, SCALE_OUT
from slidewise.contract.specs.inference import BACKEND
from slidewise.contract.specs.polygons import POLYGON_PARAMS
from slidewise.contract.specs.training import OVERLAP, TILE_BATCH, TILE_SIZE

#: The outputs; the job needs at least one.
OUTPUT_NAMES = ("OUTPUT_PROBABILITY", "OUTPUT_MASK", "OUTPUT_POLYGONS", "OUTPUT_UNCERTAINTY")
#: How the threshold is chosen when THRESHOLD is empty (engine/imagery/scene_threshold.py).
THRESHOLD_RULES = ("expected_f1", "stored")

#: THRESHOLD_RULE, shared with detectlandslides (source segmentation).
THRESHOLD_RULE = Param(
    "THRESHOLD_RULE",
    "Threshold rule",
    "choice",
    "How the threshold is chosen when THRESHOLD is empty. Best expected F1 on this "
    "raster: for a calibrated model (the default recipe, the shipped model), the "
    "threshold with the best expected F1 of this raster's own probabilities, so it "
    "follows a region where landslides are more common or the model less sure than in "
    "training (the probability output is the same; the mask and polygons change). "
    "Stored threshold: the threshold tuned on the model's validation images. Models "
    "without calibration and multi-region models always use their stored thresholds.",
    default="expected_f1",
    choices=THRESHOLD_RULES,
    choice_labels=("Best expected F1 on this raster", "Stored threshold of the model"),
    advanced=True,
)

SPEC = AlgorithmSpec(
    "maplandslides",
    (
        Param(
            "INPUT",
            "Image",
            "raster",
            "Raster to map, with the bands the model was trained on.",
            required=True,
        ),
        Param(
            "MODEL",
            "Model file",
            "file",
            "A model from Train mapping model; empty: the landslide model shipped with "
            "Slidewise (RGB imagery, trained on Bijie and Sichuan; its leave-one-region-out "
            "figures are on its model card).",
            file_filter="Slidewise model (*.safetensors)",
        ),
        Param(
            "AOI",
            "Area of interest",
            "polygons",
            "Optional polygons (or, for scripts, a mask raster: non-zero is inside); outside "
            "them every output is nodata.",
        ),
        Param(
            "THRESHOLD",
            "Threshold",
            "float",
            "Probability at or above which a pixel is a landslide (mask and polygons); empty: "
            "chosen by the threshold rule (advanced; by default the best expected F1 on this "
            "raster for calibrated models), else the threshold stored in the model (tuned on "
            "validation in training; per region for multi-region models), else 0.5.",
            minimum=0.0,
            maximum=1.0,
        ),
        THRESHOLD_RULE,
        Param(
            "REGION",
            "Region",
            "text",
            "Multi-region models (Add region to mapping model): the region whose decoder maps "
            "the raster, or the pixels outside the region polygons. Empty: the only region, or "
            "the region polygons alone.",
            advanced=True,
        ),
        Param(
            "REGION_POLYGONS",
            "Region polygons",
            "polygons",
            "Multi-region models: polygons with a region attribute; each pixel inside is mapped "
            "by its polygon's region decoder (overlaps: the model's first region wins).",
            advanced=True,
        ),
        Param(
            "REGION_FIELD",
            "Region field",
            "field",
            "Attribute of the region polygons holding region names.",
            default="region",
            parent="REGION_POLYGONS",
            advanced=True,
        ),
        *POLYGON_PARAMS,
        Param(
            "BANDS",
            "Bands",
            "text",
            "Raster bands that feed the model, in the model's order (1-based numbers or band "
            "names, e.g. 4,3,2,8); empty: the raster's bands, checked against the model's.",
            advanced=True,
        ),
        TILE_SIZE,
        OVERLAP,
        TILE_BATCH,
        Param(
            "TTA",
            "Test-time augmentation",
            "bool",
            "Average over the 8 flips and rotations (8 times slower, usually smoother). "
            "Always on when the uncertainty output is written.",
            default=False,
            advanced=True,
        ),
        BACKEND,
        Param(
            "OUTPUT_PROBABILITY",
            "Landslide probability",
            "output_raster",
            "Float32 GeoTIFF, 0-1, NaN = nodata.",
        ),
        Param(
            "OUTPUT_MASK",
            "Landslide mask",
            "output_raster",
            "Uint8 GeoTIFF: 1 = landslide, 0 = not landslide, 255 = nodata.",
        ),
        Param(
            "OUTPUT_POLYGONS",
            "Landslide polygons",
            "output_vector",
            "Polygons (.gpkg, .shp or .geojson) after the post-processing above, with id, "
            "area_m2 (m²), perimeter_m (m), compactness (Polsby-Popper 4·pi·area/perimeter², 1 "
            "for a disc), pixels (landslide pixels), mean_probability, max_probability and, with "
            "a DEM, mean_slope (degrees).",
        ),
        Param(
            "OUTPUT_UNCERTAINTY",
            "Landslide probability uncertainty",
            "output_raster",
            "Optional Float32 GeoTIFF, 0-0.5, NaN = nodata: the standard deviation of the "
            "calibrated probability over the 8 flips and rotations of test-time augmentation "
            "(0 where they all agree; high where the model's answer depends on the image's "
            "orientation, typically along landslide edges and on ambiguous ground), blended "
            "across tiles like the probability. Turns TTA on (8 times slower); skipped when "
            "left empty.",
            create_by_default=False,
        ),
        *SCALE_OUT,
        COG,
    ),
)
