"""slidewise:evaluatesusceptibility: metrics, rate curves and class statistics of a map.

The inventory parameters (``LABEL_FIELD``, ``NEGATIVE_RATIO``, ``BUFFER``, the table
columns ``X_FIELD``/``Y_FIELD``) and the classification (``CLASSIFICATION``,
``N_CLASSES``) have the names the training and prediction algorithms use; their
defaults and ranges here are this job's (3 pixel widths of buffer, random
non-landslides only when the inventory has none).
"""

from __future__ import annotations

from slidewise.contract.spec import AlgorithmSpec, Param, replace_param
from slidewise.contract.specs.factors import CLASSES as FACTOR_CLASSES
from slidewise.contract.specs.factors import RANDOM_NEGATIVES as FACTOR_NEGATIVES
from slidewise.contract.specs.groups import SEED

#: The seed of the random non-landslides and samples; unset: the run's seed.
EVALUATION_SEED = replace_param(
    (SEED,),
    "SEED",
    default=None,
    help="Seed of the random non-landslide samples and of the class-break sample; "
    "empty: the run's seed.",
)

INVENTORY: tuple[Param, ...] = (
    Param(
        "INVENTORY",
        "Validation inventory",
        "points_or_polygons",
        "Landslides not used in training (points or polygons, or a CSV/XLSX table with "
        "X/Y columns), optionally with non-landslides marked 0 in the label field. Other "
        "CRS are reprojected; polygons count every pixel whose centre is inside.",
        required=True,
    ),
    Param(
        "LABEL_FIELD",
        "Label field (1 = landslide, 0 = not)",
        "field",
        "Field holding 1 for landslides and 0 for non-landslides (true/false and yes/no "
        "work too), matched case-insensitively; empty: a field named label, lslpts, "
        "landslide, class or target if there is one, else every feature is a landslide "
        "and non-landslides are drawn at random outside a buffer.",
        parent="INVENTORY",
    ),
    Param(
        "X_FIELD",
        "X column",
        "text",
        "x (easting) column of a CSV/XLSX inventory, case-insensitive; the coordinates "
        "are taken to be in the susceptibility raster's CRS.",
        default="x",
    ),
    Param(
        "Y_FIELD",
        "Y column",
        "text",
        "y (northing) column of a CSV/XLSX inventory, case-insensitive.",
        default="y",
    ),
    Param(
        "TRAINING",
        "Training inventory",
        "points_or_polygons",
        "The landslides the model was trained on (same formats and label field), for the "
        "success-rate curve.",
    ),
)

CLASSES: tuple[Param, ...] = (
    Param(
        "CLASSED",
        "Classed map",
        "raster",
        "A classed map (classes 1..N, 0 or nodata: none) on the grid of the "
        "susceptibility; empty: classes are made from the susceptibility with the "
        "classification below.",
    ),
    *replace_param(
        FACTOR_CLASSES,
        "N_CLASSES",
        help="Number of susceptibility classes (5: very low, low, moderate, high, very high); "
        "a classed map with higher classes raises it.",
        maximum=255,
    ),
)

RANDOM_NEGATIVES: tuple[Param, ...] = replace_param(
    replace_param(
        FACTOR_NEGATIVES,
        "NEGATIVE_RATIO",
        help="When the inventory has no non-landslides: how many to draw at random per landslide.",
        minimum=0.001,
    ),
    "BUFFER",
    help="Random non-landslides lie farther than this from every landslide, in the "
    "susceptibility raster's CRS units; 0 = 3 pixel widths.",
    default=0.0,
    maximum=None,
    unit="map units",
)

SPEC = AlgorithmSpec(
    "evaluatesusceptibility",
    (
        Param(
            "INPUT",
            "Susceptibility",
            "raster",
            "Probability of landslide (0-1, band 1), for example from Predict "
            "susceptibility; nodata or NaN where there is no prediction.",
            required=True,
        ),
        *INVENTORY,
        *CLASSES,
        Param(
            "THRESHOLD",
            "Threshold",
            "float",
            "Probability at or above which a place counts as predicted landslide (accuracy, "
            "precision, recall, F1, kappa).",
            default=0.5,
            minimum=0.0,
            maximum=1.0,
        ),
        *RANDOM_NEGATIVES,
        *EVALUATION_SEED,
        Param(
            "MODEL",
            "Model file (for the report)",
            "file",
            "The model that made the map (from Train susceptibility model): the report "
            "summarises its method and training (blocks, K, cross-validation) and takes the "
            "hillshade from the elevation factor of its stack. Optional.",
            file_filter="Slidewise model (*.safetensors)",
        ),
        Param(
            "DEM",
            "Elevation for the hillshade",
            "raster",
            "Elevation raster (band 1, any CRS and grid) under the report's map of classes; "
            "empty: the elevation factor of MODEL's stack when it has one, else no hillshade.",
        ),
        Param(
            "OUTPUT",
            "Report",
            "output_file",
            "HTML report with plots and tables; a JSON file with the same figures is "
            "written next to it (same name, suffix .json).",
            required=True,
            file_filter="HTML (*.html)",
        ),
    ),
    hidden=frozenset({"X_FIELD", "Y_FIELD"}),
)
